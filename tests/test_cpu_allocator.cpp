// The CPU caching allocator (tensor/cpu/allocator.h): freed blocks are reused by size class, the
// stats say so, and empty_cache() gives the cached memory back.
#include "tests/helpers.h"

#include "tensor/cpu/allocator.h"
#include "tensor/tensor.h"

using namespace ember;

TEST_CASE("cpu allocator: size classes round up by at most 1/8 and are 64-byte multiples") {
    CHECK(cpu::size_class(0) == 64);
    CHECK(cpu::size_class(1) == 64);
    CHECK(cpu::size_class(64) == 64);
    CHECK(cpu::size_class(65) == 128);
    CHECK(cpu::size_class(512) == 512);
    CHECK(cpu::size_class(513) == 576);  // 512 + 512 / 8
    for (size_t bytes : {size_t(1000), size_t(4096), size_t(123457), size_t(4000000), size_t(1) << 30}) {
        size_t c = cpu::size_class(bytes);
        CHECK(c >= bytes);
        CHECK(c % 64 == 0);
        CHECK(double(c) <= double(bytes) * 1.125 + 64);
        CHECK(cpu::size_class(c) == c);  // a class is its own class
    }
}

TEST_CASE("cpu allocator: a freed buffer serves the next request of its class without malloc") {
    cpu::empty_cache();
    cpu::AllocatorStats start = cpu::allocator_stats();
    CHECK(start.bytes_cached == 0);
    const void* first = nullptr;
    {
        Tensor a = zeros({1000, 1000});  // 4 MB: glibc would mmap and munmap it
        first = a.data<float>();
    }
    cpu::AllocatorStats freed = cpu::allocator_stats();
    Tensor b = zeros({999, 1001});  // 3,999,996 bytes: the same class
    cpu::AllocatorStats again = cpu::allocator_stats();
    if (cpu::caching_enabled()) {
        CHECK(freed.bytes_cached == cpu::size_class(4000000));
        CHECK(b.data<float>() == first);
        CHECK(again.cache_hits == freed.cache_hits + 1);
        CHECK(again.system_allocs == freed.system_allocs);
        CHECK(again.bytes_cached == 0);
    } else {  // AddressSanitizer builds and EMBER_CPU_CACHE=0: straight back to malloc
        CHECK(freed.bytes_cached == 0);
        CHECK(again.system_allocs == freed.system_allocs + 1);
    }
    CHECK(again.bytes_in_use >= cpu::size_class(3999996));
}

TEST_CASE("cpu allocator: empty_cache frees cached blocks and leaves live ones alone") {
    Tensor live = full({256}, 3.0);
    { Tensor dead = zeros({5000}); }
    cpu::empty_cache();
    cpu::AllocatorStats s = cpu::allocator_stats();
    CHECK(s.bytes_cached == 0);
    CHECK(s.bytes_in_use >= cpu::size_class(256 * 4));
    CHECK(live.data<float>()[255] == 3.0f);
    Tensor fresh = zeros({5000});
    CHECK(cpu::allocator_stats().system_allocs == s.system_allocs + 1);
}
