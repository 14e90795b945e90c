// The CUDA caching allocator: a training step repeated after a warm-up makes no new cudaMalloc;
// an impossible request throws an error that names its size and the allocator's statistics, and
// the allocator works on afterwards; empty_cache and reset_peak do what they say.
#include "tensor/cuda/cuda.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {
const Device GPU = Device::cuda();
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
