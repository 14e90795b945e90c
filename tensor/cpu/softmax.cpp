// CPU softmax and log-softmax over the last dim of contiguous (rows, n) tensors, and their
// backward passes. Rows are independent, so threads split the rows.
//
//   softmax:      y = exp(x - max) / sum(exp(x - max))      dx = y * (g - sum(g * y))
//   log_softmax:  y = (x - max) - log(sum(exp(x - max)))    dx = g - exp(y) * sum(g)
#include "tensor/cpu/kernels.h"
#include "tensor/cpu/row_math.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {

void softmax(const Tensor& x, const Tensor& out, bool log) {
    dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), n = x.size(1);
        const T* xp = x.data<T>();  // (rows, n)
        T* yp = out.data<T>();      // (rows, n)
        parallel_for(rows, row_grain(n), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) softmax_row(xp + r * n, yp + r * n, n, log);
        });
    });
}

template <typename T>
static void softmax_backward_row(const T* y, const T* g, T* dx, int64_t n) {  // each (n)
    double dot = 0;
    for (int64_t j = 0; j < n; ++j) dot += double(g[j]) * double(y[j]);
    const T d = T(dot);
    for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (g[j] - d);
}

template <typename T>
static void log_softmax_backward_row(const T* y, const T* g, T* dx, int64_t n) {  // each (n)
    const T s = T(row_sum(g, n));
    for (int64_t j = 0; j < n; ++j) dx[j] = g[j] - exp_of(y[j]) * s;
}

void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& out, bool log) {
    dispatch_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = y.size(0), n = y.size(1);
        const T* yp = y.data<T>();     // (rows, n)
        const T* gp = grad.data<T>();  // (rows, n)
        T* dp = out.data<T>();         // (rows, n)
        parallel_for(rows, row_grain(n), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                if (log) log_softmax_backward_row(yp + r * n, gp + r * n, dp + r * n, n);
                else softmax_backward_row(yp + r * n, gp + r * n, dp + r * n, n);
            }
        });
    });
}

}  // namespace cpu
}  // namespace ember
