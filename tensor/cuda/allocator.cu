// The caching allocator: GPU memory is taken from cudaMalloc once and then recycled, because
// cudaMalloc and cudaFree are slow (cudaFree also synchronizes the device). A training step that
// frees and re-makes the same tensors every iteration thus runs without a single cudaMalloc after
// the first step. Size classes and the best-fit rule are in tensor/cuda/block_cache.h.
//
// Stream safety: all of Ember's work runs on one stream, in order, so a block freed by the host
// and handed out again is only touched by kernels queued after those that used it before.
//
// Out of memory: cudaMalloc failing frees the whole cache and retries once; a second failure
// throws an error with the request and the allocator's statistics.
//
// Exact mode (set_exact_allocations, or EMBER_CUDA_EXACT_ALLOC=1 in the environment): every
// request is its own cudaMalloc of exactly the bytes asked for, and a release waits for the stream
// and cudaFrees it. Slow, but compute-sanitizer's memcheck then sees an access one past a tensor's
// end (no rounding slack) and a use after free (no recycled block) for what they are.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "tensor/cuda/block_cache.h"
#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cuda.h"

namespace ember {
namespace cuda {
namespace {

bool exact_from_environment() {
    const char* v = std::getenv("EMBER_CUDA_EXACT_ALLOC");
    return v && *v && std::strcmp(v, "0") != 0;
}

struct LiveBlock {
    size_t size;  // what was taken from cudaMalloc or the cache
    bool exact;   // made in exact mode: cudaFree on release
};

struct Allocator {
    std::mutex mutex;
    BlockCache cache;
    std::unordered_map<void*, LiveBlock> live;
    bool exact = exact_from_environment();
    AllocatorStats stats;

    // cudaFree every cached block. Caller holds the mutex.
    void free_cached() {
        cache.drain([](void* p) { cudaFree(p); });  // errors here leave nothing to recover
        stats.bytes_cached = 0;
    }
};

Allocator& allocator() {
    static Allocator* a = new Allocator;  // never destroyed: tensors may be freed at exit
    return *a;
}

}  // namespace

void* allocator_malloc(size_t bytes) {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    const size_t wanted = a.exact ? (bytes ? bytes : 1) : size_class(bytes);
    size_t block = wanted;
    void* ptr = a.exact ? nullptr : a.cache.take(wanted, &block);
    if (ptr) {
        a.stats.bytes_cached = a.cache.cached_bytes();
        a.stats.cache_hits++;
    } else {
        cudaError_t err = cudaMalloc(&ptr, wanted);
        a.stats.cuda_malloc_calls++;
        if (err == cudaErrorMemoryAllocation && !a.cache.empty()) {
            cudaGetLastError();  // clear it, give back the cache and try once more
            CUDA_CHECK(cudaStreamSynchronize(stream()));
            a.free_cached();
            err = cudaMalloc(&ptr, wanted);
            a.stats.cuda_malloc_calls++;
        }
        if (err != cudaSuccess) {
            cudaGetLastError();
            size_t free_bytes = 0, total_bytes = 0;
            if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
            throw Error(make_message(
                "cuda::allocate: cannot allocate ", bytes, " bytes (", wanted,
                a.exact ? " in exact mode" : " rounded to its size class", ") on the GPU: ",
                cudaGetErrorString(err), ". The device has ", free_bytes, " of ", total_bytes,
                " bytes free; allocator: ", allocator_stats_string(a.stats), ". Use a smaller "
                "batch or model, or free tensors you no longer need."));
        }
    }
    a.live[ptr] = {block, a.exact};
    a.stats.bytes_in_use += block;
    if (a.stats.bytes_in_use > a.stats.peak_bytes_in_use)
        a.stats.peak_bytes_in_use = a.stats.bytes_in_use;
    return ptr;
}

// Called from destructors, so it never throws: a CUDA error here (a kernel that faulted earlier)
// is left for the next checked call to report.
void allocator_free(void* ptr, size_t /*bytes: the block's own size is on record*/) noexcept {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    auto it = a.live.find(ptr);
    if (it == a.live.end()) return;  // not a block of this allocator: nothing of ours to free
    const LiveBlock b = it->second;
    a.live.erase(it);
    a.stats.bytes_in_use -= b.size;
    if (b.exact) {
        // Kernels queued on the stream may still read the block: wait for them first.
        cudaStreamSynchronize(stream());
        cudaFree(ptr);
        return;
    }
    a.cache.put(ptr, b.size);
    a.stats.bytes_cached = a.cache.cached_bytes();
}

void set_exact_allocations(bool exact) {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    if (exact && !a.cache.empty()) {
        CUDA_CHECK(cudaStreamSynchronize(stream()));
        a.free_cached();  // nothing cached may be handed out in exact mode
    }
    a.exact = exact;
}

bool exact_allocations() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    return a.exact;
}

AllocatorStats allocator_stats() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    return a.stats;
}

std::string allocator_stats_string(const AllocatorStats& s) {
    std::ostringstream os;
    os << "bytes_in_use=" << s.bytes_in_use << ", bytes_cached=" << s.bytes_cached
       << ", peak_bytes_in_use=" << s.peak_bytes_in_use << ", cuda_malloc_calls="
       << s.cuda_malloc_calls << ", cache_hits=" << s.cache_hits;
    return os.str();
}

void empty_cache() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    if (!a.cache.empty()) {
        // Kernels queued on the stream may still use a block freed by the host: wait for them.
        CUDA_CHECK(cudaStreamSynchronize(stream()));
    }
    a.free_cached();
}

void reset_peak() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    a.stats.peak_bytes_in_use = a.stats.bytes_in_use;
}

}  // namespace cuda
}  // namespace ember
