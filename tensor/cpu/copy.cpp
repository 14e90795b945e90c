// CPU copy and fill: the kernels behind contiguous(), clone(), to(dtype), copy_() and fill_().
//
// Both walk their tensors with StridedLoop, so any strides work on either side (a transposed
// source, a broadcast source with stride 0, a sliced destination). A copy between two contiguous
// tensors of the same dtype is a plain memcpy per chunk. A transposing copy (the destination runs
// along one dim, the source along another) goes tile by tile, so that every cache line it loads
// is used whole: element by element, one side would touch a new line per element.
#include <algorithm>
#include <cstring>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

constexpr int64_t TILE = 32;

// In the simplified layout of a copy (operand 0 dst, 1 src), the dim k along which src is
// contiguous when dst is contiguous along the innermost dim and src is not: a transpose, or a
// permute that moves src's innermost dim. -1 when the layout is not like that.
int transposed_dim(const StridedLoop<2>& loop) {
    const int inner = loop.rank() - 1;
    const int64_t src_inner = loop.stride(1, inner);
    if (inner < 1 || loop.stride(0, inner) != 1 || src_inner == 1 || src_inner == 0) return -1;
    if (loop.size(inner) < TILE / 4) return -1;
    for (int k = inner - 1; k >= 0; --k)
        if (loop.stride(1, k) == 1) return loop.size(k) >= TILE / 4 ? k : -1;
    return -1;
}

// The transposing copy: for every position of the other ("batch") dims, the (k, inner) plane is
// copied in TILE x TILE tiles. Threads split (batch position, band of TILE along k) pairs.
template <typename S, typename D>
void copy_transposed(const S* s, D* d, const StridedLoop<2>& loop, int k) {
    const int inner = loop.rank() - 1;
    Shape batch_shape, batch_dst, batch_src;
    for (int i = 0; i < inner; ++i) {
        if (i == k) continue;
        batch_shape.push_back(loop.size(i));
        batch_dst.push_back(loop.stride(0, i));
        batch_src.push_back(loop.stride(1, i));
    }
    StridedLoop<2> batch(batch_shape, {batch_dst, batch_src});
    const int64_t nk = loop.size(k), nj = loop.size(inner);
    const int64_t dst_k = loop.stride(0, k), src_j = loop.stride(1, inner);
    const int64_t bands = (nk + TILE - 1) / TILE;
    parallel_for(batch.numel() * bands, row_grain(TILE * nj), [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / bands, k0 = item % bands * TILE, k1 = std::min(nk, k0 + TILE);
            batch.run(b, b + 1, [&](const int64_t* off, const int64_t*, int64_t) {
                D* dp = d + off[0];        // (nk, nj): strides (dst_k, 1)
                const S* sp = s + off[1];  // (nk, nj): strides (1, src_j)
                for (int64_t j0 = 0; j0 < nj; j0 += TILE) {
                    const int64_t j1 = std::min(nj, j0 + TILE);
                    for (int64_t kk = k0; kk < k1; ++kk)
                        for (int64_t j = j0; j < j1; ++j)
                            dp[kk * dst_k + j] = D(sp[kk + j * src_j]);
                }
            });
        }
    });
}

template <typename S, typename D>
void copy_typed(const Tensor& src, const Tensor& dst) {
    const S* s = src.data<S>();  // dst's shape, any strides
    D* d = dst.data<D>();        // any strides
    StridedLoop<2> loop(dst.shape(), {dst.strides(), src.strides()});
    const int k = transposed_dim(loop);
    if (k >= 0) {
        copy_transposed(s, d, loop, k);
        return;
    }
    parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
        loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
            D* dp = d + off[0];
            const S* sp = s + off[1];
            if (st[0] == 1 && st[1] == 1) {
                for (int64_t i = 0; i < n; ++i) dp[i] = D(sp[i]);
            } else if (st[0] == 1 && st[1] == 0) {
                const D v = D(sp[0]);
                for (int64_t i = 0; i < n; ++i) dp[i] = v;
            } else {
                for (int64_t i = 0; i < n; ++i) dp[i * st[0]] = D(sp[i * st[1]]);
            }
        });
    });
}

void copy_same_contiguous(const Tensor& src, const Tensor& dst) {
    const char* s = static_cast<const char*>(src.raw_data());
    char* d = static_cast<char*>(dst.raw_data());
    const int64_t item = int64_t(dtype_size(dst.dtype()));
    parallel_for(dst.numel(), 4 * ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
        std::memcpy(d + begin * item, s + begin * item, size_t((end - begin) * item));
    });
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
    if (dst.numel() == 0) return;
    if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
        copy_same_contiguous(src, dst);
        return;
    }
    dispatch_all(src.dtype(), [&](auto src_tag) {
        dispatch_all(dst.dtype(), [&](auto dst_tag) {
            using S = typename decltype(src_tag)::type;
            using D = typename decltype(dst_tag)::type;
            copy_typed<S, D>(src, dst);
        });
    });
}

void fill(const Tensor& dst, double value) {
    dispatch_all(dst.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T v = T(value);
        T* d = dst.data<T>();  // any strides
        StridedLoop<1> loop(dst.shape(), {dst.strides()});
        parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
            loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
                T* p = d + off[0];
                if (st[0] == 1)
                    for (int64_t i = 0; i < n; ++i) p[i] = v;
                else
                    for (int64_t i = 0; i < n; ++i) p[i * st[0]] = v;
            });
        });
    });
}

}  // namespace cpu
}  // namespace ember
