// The CPU caching allocator behind every CPU Storage.
//
// Large buffers that glibc's malloc takes from the OS with mmap go back with munmap when freed, so
// a training step that frees its activations and allocates them again pays the kernel for fresh,
// zeroed pages every step (page faults and clear_page). This allocator keeps freed blocks in free
// lists by size class and hands them out again, so a warmed-up step takes no new pages at all.
//
// Size classes: requests round up to 64 bytes, then to one of 8 steps per power of two (at most
// 12.5% slack), so tensors whose sizes differ a little share blocks. Blocks are 64-byte aligned.
// Cached memory goes back to the OS only through cpu::empty_cache(). Built with AddressSanitizer,
// or run with EMBER_CPU_CACHE=0, every free goes straight back to malloc so that use-after-free
// is still caught.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ember {
namespace cpu {

void* allocate(size_t bytes);           // 64-byte aligned, never null (throws when out of memory)
void release(void* ptr, size_t bytes);  // bytes as given to allocate

struct AllocatorStats {
    size_t bytes_in_use = 0;      // live blocks, rounded to their size class
    size_t bytes_cached = 0;      // free blocks held for reuse
    uint64_t system_allocs = 0;   // blocks taken from malloc (misses)
    uint64_t cache_hits = 0;      // requests served from a free list
};
AllocatorStats allocator_stats();
void empty_cache();            // frees every cached block; blocks in use are untouched
bool caching_enabled();
size_t size_class(size_t bytes);  // the rounded size a request of `bytes` gets

}  // namespace cpu
}  // namespace ember
