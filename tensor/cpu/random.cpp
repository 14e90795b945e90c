// CPU random fills and dropout from the counter-based Philox generator in tensor/random.h.
//
// Element i (in row-major order) of a fill is a pure function of (seed, offset, i), so the
// numbers are the same whatever the thread count and on the GPU. One Philox block gives four
// uniforms (elements 4k .. 4k+3); the loops below compute each block once instead of per element,
// a batch of blocks at a time, and give exactly what philox_uniform(seed, offset, i) gives.
#include <algorithm>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

// words (count, 4) = the Philox blocks first .. first + count - 1. A plain loop over independent
// blocks: the compiler vectorizes it, several blocks per instruction.
void philox_blocks(uint64_t seed, uint64_t offset, uint64_t first, int64_t count, uint32_t* words) {
    for (int64_t b = 0; b < count; ++b) {
        const Philox4 r = philox_block(seed, offset, first + uint64_t(b));
        for (int w = 0; w < 4; ++w) words[4 * b + w] = r.v[w];
    }
}

// Calls fn(i, u) for i in [begin, end) in order, with u = philox_uniform(seed, offset, i).
template <typename Fn>
void for_uniforms(uint64_t seed, uint64_t offset, int64_t begin, int64_t end, Fn&& fn) {
    constexpr int64_t BATCH = 64;  // blocks per batch, 4 numbers each
    uint32_t words[4 * BATCH];
    for (int64_t i = begin; i < end;) {
        const int64_t first = i / 4, last = (end - 1) / 4;
        const int64_t count = std::min(BATCH, last - first + 1);
        philox_blocks(seed, offset, uint64_t(first), count, words);
        const int64_t stop = std::min(end, (first + count) * 4);
        for (; i < stop; ++i) fn(i, uniform_from_bits(words[i - first * 4]));
    }
}

}  // namespace

void uniform_fill(const Tensor& out, uint64_t seed, uint64_t offset) {
    dispatch_float(out.dtype(), "rand", [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = out.data<T>();  // (numel), contiguous
        parallel_for(out.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
            for_uniforms(seed, offset, begin, end, [&](int64_t i, float u) { p[i] = T(u); });
        });
    });
}

void normal_fill(const Tensor& out, uint64_t seed, uint64_t offset) {
    dispatch_float(out.dtype(), "randn", [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = out.data<T>();  // (numel), contiguous
        parallel_for(out.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
                p[i] = T(philox_normal(seed, offset, uint64_t(i)));
        });
    });
}

// Element i of x (row-major) is kept iff philox_uniform(seed, offset, i) > p; the kept ones are
// scaled by 1 / (1 - p). out = x * mask / (1 - p), so a NaN in x stays NaN even where dropped,
// as in PyTorch.
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out,
             const Tensor& mask) {
    dispatch_float(x.dtype(), "dropout", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* xp = x.data<T>();  // any strides
        T* op = out.data<T>();      // x's shape, contiguous
        T* mp = mask.data<T>();     // x's shape, contiguous
        const T scale = T(1.0 / (1.0 - p));
        StridedLoop<1> loop(x.shape(), {x.strides()});
        parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
            int64_t i = begin;
            loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
                const T* xr = xp + off[0];
                for_uniforms(seed, offset, i, i + n, [&](int64_t e, float u) {
                    const T m = double(u) > p ? T(1) : T(0);
                    mp[e] = m;
                    op[e] = xr[(e - i) * st[0]] * m * scale;
                });
                i += n;
            });
        });
    });
}

}  // namespace cpu
}  // namespace ember
