// CUDA reductions over the last dim of a contiguous (rows, n) tensor: sum, mean, max, min,
// argmax and logsumexp. The front-end (tensor/ops_reduce.cpp) moves the reduced dims to the end,
// so this one row kernel family serves every reduction. Rows map to warps or blocks as
// tensor/cuda/rows.cuh describes; sums accumulate in double (int64 for integers), as on the CPU.
#include <limits>

#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"

namespace ember {
namespace cuda {
namespace {

// Sum (mean = true: divided by n, 0 / 0 = NaN for an empty row, as on the CPU).
template <typename T, bool WARP>
__global__ void sum_rows_kernel(const T* x, T* out, int64_t rows, int64_t n, bool mean) {
    using A = Acc<T>;
    ROW_SCRATCH(A, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        A s = 0;
        for (int64_t j = g.lane(); j < n; j += g.size()) s += A(xr[j]);
        s = g.reduce(s, SumOp{}, A(0), scratch);
        if (g.lane() == 0) out[row] = mean ? T(double(s) / double(n)) : T(s);
    }
}

// A candidate for max / min / argmax: a value and its index; index -1 is "nothing yet".
template <typename T>
struct Pick {
    T value;
    long long index;
};

template <typename T>
__device__ __forceinline__ Pick<T> shfl_xor(Pick<T> p, int mask) {
    return {__shfl_xor_sync(0xffffffffu, p.value, mask),
            __shfl_xor_sync(0xffffffffu, p.index, mask)};
}

// The better of two picks: a NaN beats everything (the first NaN, as on the CPU), then the larger
// (MAX) or smaller value, then the smaller index. The order of combination never matters.
template <typename T>
struct PickOp {
    bool max;
    __device__ __forceinline__ Pick<T> operator()(Pick<T> a, Pick<T> b) const {
        if (a.index < 0) return b;
        if (b.index < 0) return a;
        const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
        if (a_nan || b_nan) {
            if (a_nan && b_nan) return a.index < b.index ? a : b;
            return a_nan ? a : b;
        }
        if (a.value != b.value) return (max ? a.value > b.value : a.value < b.value) ? a : b;
        return a.index < b.index ? a : b;
    }
};

// Max or min into values (or, with indices non-null, argmax into indices).
template <typename T, bool WARP>
__global__ void pick_rows_kernel(const T* x, T* values, long long* indices, int64_t rows,
                                 int64_t n, bool max) {
    ROW_SCRATCH(Pick<T>, scratch);
    RowGroup<WARP> g;
    const PickOp<T> op{max};
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        Pick<T> best{T(0), -1};
        for (int64_t j = g.lane(); j < n; j += g.size()) best = op(best, Pick<T>{xr[j], j});
        best = g.reduce(best, op, Pick<T>{T(0), -1}, scratch);
        if (g.lane() == 0) {
            if (indices) indices[row] = best.index < 0 ? 0 : best.index;
            else values[row] = best.value;
        }
    }
}

// log(sum(exp(x))) = m + log(sum(exp(x - m))), m the row max; a non-finite max is the answer.
template <typename T, bool WARP>
__global__ void logsumexp_rows_kernel(const T* x, T* out, int64_t rows, int64_t n) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        T m = neg_inf<T>();
        for (int64_t j = g.lane(); j < n; j += g.size()) m = MaxOp{}(m, xr[j]);
        // Reduce the max in double: one scratch type for both reductions.
        double md = g.reduce(double(m), MaxOp{}, neg_inf<double>(), scratch);
        m = T(md);
        double s = 0;
        if (isfinite(md))
            for (int64_t j = g.lane(); j < n; j += g.size()) s += double(exp(xr[j] - m));
        s = g.reduce(s, SumOp{}, 0.0, scratch);
        if (g.lane() == 0) out[row] = isfinite(md) ? T(md + log(s)) : m;
    }
}

}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), n = x.size(1);
    if (rows == 0) return;
    auto typed = [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* xp = x.data<T>();  // (rows, n)
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            constexpr bool W = decltype(warp)::value;
            switch (op) {
                case ReduceOp::Sum:
                case ReduceOp::Mean:
                    sum_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, out.data<T>(), rows, n, op == ReduceOp::Mean);
                    break;
                case ReduceOp::Max:
                case ReduceOp::Min:
                    pick_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, out.data<T>(), nullptr, rows, n, op == ReduceOp::Max);
                    break;
                case ReduceOp::ArgMax:
                    pick_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, nullptr, reinterpret_cast<long long*>(out.data<int64_t>()), rows, n,
                        true);
                    break;
                case ReduceOp::LogSumExp:
                    if constexpr (std::is_floating_point<T>::value)
                        logsumexp_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                            xp, out.data<T>(), rows, n);
                    break;
            }
        });
    };
    if (op == ReduceOp::Mean || op == ReduceOp::LogSumExp)
        dispatch_float(x.dtype(), op == ReduceOp::Mean ? "mean" : "logsumexp", typed);
    else
        dispatch_all(x.dtype(), typed);
}

}  // namespace cuda
}  // namespace ember
