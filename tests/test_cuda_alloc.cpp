// The CUDA caching allocator: a training step repeated after a warm-up makes no new cudaMalloc;
// an impossible request throws an error that names its size and the allocator's statistics, and
// the allocator works on afterwards; empty_cache and reset_peak do what they say.
#include <algorithm>
#include <set>

#include "tensor/cuda/block_cache.h"
#include "tensor/cuda/cuda.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {
const Device GPU = Device::cuda();
}

// The cache's policy (tensor/cuda/block_cache.h) is plain C++: these cases run everywhere, with
// counted fake allocations standing in for cudaMalloc.
TEST_CASE("cuda allocator policy: size classes waste under a quarter (or 512 B) of a request") {
    CHECK(cuda::size_class(0) == 512);
    CHECK(cuda::size_class(512) == 512);
    CHECK(cuda::size_class(513) == 1024);
    CHECK(cuda::size_class(4000) == 4096);
    CHECK(cuda::size_class(4097) == 5120);
    CHECK(cuda::size_class(8080) == 8192);
    CHECK(cuda::size_class(size_t(1) << 20) == (size_t(1) << 20));
    CHECK(cuda::size_class((size_t(1) << 20) + 1) == (size_t(2) << 20));
    CHECK(cuda::size_class(size_t(5) << 20) == (size_t(6) << 20));
    for (size_t bytes = 1; bytes < (size_t(4) << 20); bytes = bytes * 9 / 8 + 1) {
        CAPTURE(bytes);
        const size_t c = cuda::size_class(bytes);
        CHECK(c >= bytes);
        CHECK(c % 512 == 0);
        if (bytes <= (size_t(1) << 20)) CHECK(c - bytes < std::max<size_t>(512, bytes / 4));
    }
}

TEST_CASE("cuda allocator policy: a KV cache growing a token at a time reuses blocks") {
    // One layer's keys for a (1, 12, T, 64) f32 cache: 3 KiB more per token. Each step allocates
    // the grown tensor while the old one is alive, then frees the old one (as cat does).
    cuda::BlockCache cache;
    std::set<char*> live;
    size_t mallocs = 0, next_address = 4096;
    auto allocate = [&](size_t bytes) {
        const size_t cls = cuda::size_class(bytes);
        size_t block = cls;
        char* p = static_cast<char*>(cache.take(cls, &block));
        if (!p) {
            ++mallocs;
            p = reinterpret_cast<char*>(next_address);
            next_address += cls;
        }
        CHECK(block >= bytes);
        CHECK(block <= 2 * cls);
        live.insert(p);
        return std::make_pair(p, block);
    };
    const int tokens = 2000;
    auto old = allocate(3072);
    for (int t = 2; t <= tokens; ++t) {
        auto grown = allocate(size_t(t) * 3072);
        CHECK(grown.first != old.first);
        live.erase(old.first);
        cache.put(old.first, old.second);
        old = grown;
    }
    INFO("cudaMalloc calls for ", tokens, " tokens: ", mallocs);
    CHECK(mallocs < 100);  // a new size class per token would be 2000
    size_t drained = 0;
    cache.drain([&](void*) { ++drained; });
    CHECK(cache.cached_bytes() == 0);
    CHECK(drained == mallocs - 1);  // everything but the live cache came back
}

TEST_CASE("cuda allocator policy: best fit takes the smallest larger block, at most twice the class") {
    cuda::BlockCache cache;
    char a[1], b[1], c[1];
    cache.put(a, 8192);
    cache.put(b, 6144);
    cache.put(c, 20480);
    size_t got = 0;
    CHECK(cache.take(5120, &got) == b);  // 6144 is the smallest block >= 5120
    CHECK(got == 6144);
    CHECK(cache.take(5120, &got) == a);  // 8192 <= 2 * 5120
    CHECK(cache.take(5120, &got) == nullptr);  // 20480 would waste too much
    CHECK(cache.cached_bytes() == 20480);
    CHECK(cache.take(12288, &got) == c);
    CHECK(cache.empty());
}

TEST_CASE("cuda allocator: exact mode allocates exactly, frees on release, and can be left" *
          doctest::skip(!cuda_is_available())) {
    cuda::set_exact_allocations(true);
    CHECK(cuda::allocator_stats().bytes_cached == 0);
    const cuda::AllocatorStats s0 = cuda::allocator_stats();
    {
        Tensor t = full({1001}, 1.5, DType::F32, GPU);  // 4004 B, not a 4096 B class
        const cuda::AllocatorStats s1 = cuda::allocator_stats();
        CHECK(s1.bytes_in_use == s0.bytes_in_use + 4004);
        CHECK(s1.cuda_malloc_calls == s0.cuda_malloc_calls + 1);
        CHECK(raw::sum(t).item<double>() == 1501.5);
    }
    CHECK(cuda::allocator_stats().bytes_cached == 0);  // freed, not cached
    cuda::set_exact_allocations(false);
    CHECK_FALSE(cuda::exact_allocations());
    { Tensor t = empty({1001}, DType::F32, GPU); }
    CHECK(cuda::allocator_stats().bytes_cached >= 4096);
}

TEST_CASE("cuda allocator: repeated training steps reuse cached blocks, no new cudaMalloc" *
          doctest::skip(!cuda_is_available())) {
    Generator gen(3);
    Tensor x = randn({32, 16}, gen, DType::F32, GPU);
    Tensor targets = randint(0, 8, {32}, gen, DType::I64, GPU);
    Tensor w = raw::mul_scalar(randn({16, 8}, gen, DType::F32, GPU), 0.25);
    Tensor b = zeros({8}, DType::F32, GPU);
    w.set_requires_grad();
    b.set_requires_grad();
    auto step = [&] {
        w.zero_grad();
        b.zero_grad();
        Tensor loss = cross_entropy(matmul(x, w) + b, targets);  // a Linear layer and its loss
        loss.backward();
        NoGradGuard no_grad;
        raw::add_(w, w.grad(), -0.1);  // hand-written SGD
        raw::add_(b, b.grad(), -0.1);
        return loss.item<double>();
    };
    const double first = step();
    step();  // warm-up: every size class the step needs is now cached
    const cuda::AllocatorStats before = cuda::allocator_stats();
    double last = 0;
    for (int i = 0; i < 5; ++i) last = step();
    const cuda::AllocatorStats after = cuda::allocator_stats();
    INFO("before: ", cuda::allocator_stats_string(before));
    INFO("after: ", cuda::allocator_stats_string(after));
    CHECK(after.cuda_malloc_calls == before.cuda_malloc_calls);
    CHECK(after.cache_hits > before.cache_hits);
    CHECK(after.bytes_in_use == before.bytes_in_use);  // nothing leaks from step to step
    CHECK(after.peak_bytes_in_use >= after.bytes_in_use);
    CHECK(last < first);  // and the steps did train
}

TEST_CASE("cuda allocator: an impossible request throws with its size and the statistics" *
          doctest::skip(!cuda_is_available())) {
    const int64_t huge = int64_t(1) << 48;  // 2^48 floats: 1 PiB
    std::string message = error_of([&] { empty({huge}, DType::F32, GPU); });
    INFO("message: ", message);
    CHECK(contains(message, std::to_string(huge * 4)));
    CHECK(contains(message, "bytes_in_use="));
    CHECK(contains(message, "cuda_malloc_calls="));
    // Still usable afterwards.
    Tensor a = full({1025}, 2.0, DType::F32, GPU);
    CHECK(raw::sum(a).item<double>() == 2050.0);
}

TEST_CASE("cuda allocator: free lists, empty_cache and reset_peak" *
          doctest::skip(!cuda_is_available())) {
    cuda::empty_cache();
    { Tensor t = empty({1000}, DType::F32, GPU); }  // 4000 B: the 4096 B class, now cached
    cuda::AllocatorStats s0 = cuda::allocator_stats();
    CHECK(s0.bytes_cached >= 4096);
    {
        Tensor t = empty({1010}, DType::F64, GPU);  // 8080 B: another class, a new block
        Tensor u = empty({1020}, DType::F32, GPU);  // 4080 B: the cached 4096 B block
        cuda::AllocatorStats s1 = cuda::allocator_stats();
        CHECK(s1.cache_hits == s0.cache_hits + 1);
        CHECK(s1.cuda_malloc_calls == s0.cuda_malloc_calls + 1);
        CHECK(s1.bytes_in_use == s0.bytes_in_use + 4096 + 8192);
    }
    cuda::empty_cache();
    CHECK(cuda::allocator_stats().bytes_cached == 0);
    { Tensor big = empty({3 << 20}, DType::F32, GPU); }  // 12 MiB: a large class
    CHECK(cuda::allocator_stats().peak_bytes_in_use >= (size_t(12) << 20));
    cuda::reset_peak();
    cuda::AllocatorStats s2 = cuda::allocator_stats();
    CHECK(s2.peak_bytes_in_use == s2.bytes_in_use);
}
