// CUDA softmax and log-softmax over the last dim of contiguous (rows, n) tensors, forward and
// backward, fused: one row per warp or block (tensor/cuda/rows.cuh), three passes over the row
// (max, sum of exps, write), sums in double.
//
//   softmax:      y = exp(x - max) / sum(exp(x - max))      dx = y * (g - sum(g * y))
//   log_softmax:  y = (x - max) - log(sum(exp(x - max)))    dx = g - exp(y) * sum(g)
//
// And attention's softmax with the score scale and the causal mask folded in (kernels.h): the
// (B, H, Tq, Tk) scores need neither a scaled copy nor a masked copy before it.
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"

namespace ember {
namespace cuda {
namespace {

template <typename T, bool WARP>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log_out) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        const auto [m, s] = row_max_sum_exp(g, xr, n, scratch);
        if (log_out) {
            const T lse = T(log(s));
            for (int64_t j = g.lane(); j < n; j += g.size()) yr[j] = (xr[j] - m) - lse;
        } else {
            const T inv = T(1.0 / s);
            for (int64_t j = g.lane(); j < n; j += g.size()) yr[j] = exp(xr[j] - m) * inv;
        }
    }
}

template <typename T, bool WARP>
__global__ void softmax_backward_kernel(const T* y, const T* grad, T* dx, int64_t rows, int64_t n,
                                        bool log_out) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* yr = y + row * n;
        const T* gr = grad + row * n;
        T* dr = dx + row * n;
        double s = 0;  // sum(g * y), or sum(g) for log_softmax
        for (int64_t j = g.lane(); j < n; j += g.size())
            s += log_out ? double(gr[j]) : double(gr[j]) * double(yr[j]);
        const T d = T(g.reduce(s, SumOp{}, 0.0, scratch));
        if (log_out)
            for (int64_t j = g.lane(); j < n; j += g.size()) dr[j] = gr[j] - exp(yr[j]) * d;
        else
            for (int64_t j = g.lane(); j < n; j += g.size()) dr[j] = yr[j] * (gr[j] - d);
    }
}

// The score of key j in a row whose visible keys are 0..last.
template <typename T>
__device__ __forceinline__ T masked_score(const T* xr, int64_t j, int64_t last, T scale) {
    return j <= last ? scale * xr[j] : T(MASKED_SCORE);
}

template <typename T, bool WARP>
__global__ void scaled_softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, T scale,
                                      int64_t tq) {  // x, y (rows, n)
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        const int64_t last = tq > 0 ? row % tq + (n - tq) : n - 1;
        T m = neg_inf<T>();
        for (int64_t j = g.lane(); j < n; j += g.size()) m = MaxOp{}(m, masked_score(xr, j, last, scale));
        m = T(g.reduce(double(m), MaxOp{}, neg_inf<double>(), scratch));
        double s = 0;
        for (int64_t j = g.lane(); j < n; j += g.size())
            s += double(exp(masked_score(xr, j, last, scale) - m));
        const T inv = T(1.0 / g.reduce(s, SumOp{}, 0.0, scratch));
        for (int64_t j = g.lane(); j < n; j += g.size())
            yr[j] = exp(masked_score(xr, j, last, scale) - m) * inv;
    }
}

template <typename T, bool WARP>
__global__ void scaled_softmax_backward_kernel(const T* y, const T* grad, T* dx, int64_t rows,
                                               int64_t n, T scale, int64_t tq) {  // (rows, n)
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* yr = y + row * n;
        const T* gr = grad + row * n;
        T* dr = dx + row * n;
        const int64_t last = tq > 0 ? row % tq + (n - tq) : n - 1;
        double s = 0;
        for (int64_t j = g.lane(); j < n; j += g.size()) s += double(gr[j]) * double(yr[j]);
        const T d = T(g.reduce(s, SumOp{}, 0.0, scratch));
        for (int64_t j = g.lane(); j < n; j += g.size())
            dr[j] = j <= last ? scale * yr[j] * (gr[j] - d) : T(0);
    }
}

}  // namespace

void softmax(const Tensor& x, const Tensor& out, bool log) {
    const int64_t rows = x.size(0), n = x.size(1);
    if (n == 0) return;
    dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
        using T = typename decltype(tag)::type;
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            softmax_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                x.data<T>(), out.data<T>(), rows, n, log);
        });
    });
}

void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& out, bool log) {
    const int64_t rows = y.size(0), n = y.size(1);
    if (n == 0) return;
    dispatch_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            softmax_backward_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                y.data<T>(), grad.data<T>(), out.data<T>(), rows, n, log);
        });
    });
}

}  // namespace cuda
}  // namespace ember

namespace ember {
namespace cuda {

void scaled_softmax(const Tensor& x, const Tensor& y, double scale, int64_t tq) {
    const int64_t rows = x.size(0), n = x.size(1);
    if (n == 0) return;
    dispatch_float(x.dtype(), "scaled_softmax", [&](auto tag) {
        using T = typename decltype(tag)::type;
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            scaled_softmax_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                x.data<T>(), y.data<T>(), rows, n, T(scale), tq);
        });
    });
}

void scaled_softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& dx, double scale,
                             int64_t tq) {
    const int64_t rows = y.size(0), n = y.size(1);
    if (n == 0) return;
    dispatch_float(y.dtype(), "scaled_softmax_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            scaled_softmax_backward_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                y.data<T>(), grad.data<T>(), dx.data<T>(), rows, n, T(scale), tq);
        });
    });
}

}  // namespace cuda
}  // namespace ember
