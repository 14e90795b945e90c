// CPU layer norm and RMS norm over the last dim of a contiguous (rows, C) tensor, forward and
// backward. Statistics accumulate in double.
//
//   layernorm:  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps)  (biased var),
//               y = xhat * w + b
//               dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat))
//   rmsnorm:    xhat = x * rstd,  rstd = 1 / sqrt(mean(x^2) + eps),  y = xhat * w
//               dx = rstd * (g*w - xhat * mean(g*w * xhat))
//   both:       dw = sum over rows of g * xhat,  db = sum over rows of g
//
// Threads split the rows for y and dx, and the columns for dw and db: each column is summed over
// the rows in order by one thread, so the weight gradients do not depend on the thread count.
#include <cmath>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/row_math.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

template <typename T>
const T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <typename T>
T* out_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// dw[c] = sum_r g[r,c] * (x[r,c] - shift[r]) * rstd[r] and db[c] = sum_r g[r,c]; shift (null for
// rmsnorm), dw and db may be null.
template <typename T>
void weight_grads(const T* g, const T* x, const T* shift, const T* rstd, int64_t rows, int64_t C,
                  T* dw, T* db) {  // g, x (rows, C); shift, rstd (rows); dw, db (C)
    if (!dw && !db) return;
    parallel_for(C, row_grain(rows), [&](int64_t c0, int64_t c1) {
        std::vector<double> sw(size_t(c1 - c0), 0.0), sb(size_t(c1 - c0), 0.0);
        for (int64_t r = 0; r < rows; ++r) {
            const T* gr = g + r * C;
            const T* xr = x + r * C;
            const T m = shift ? shift[r] : T(0), rs = rstd[r];
            for (int64_t c = c0; c < c1; ++c) {
                sw[size_t(c - c0)] += double(gr[c] * ((xr[c] - m) * rs));
                sb[size_t(c - c0)] += double(gr[c]);
            }
        }
        for (int64_t c = c0; c < c1; ++c) {
            if (dw) dw[c] = T(sw[size_t(c - c0)]);
            if (db) db[c] = T(sb[size_t(c - c0)]);
        }
    });
}

// dx for one row: rstd * (g*w - center * mean(g*w) - xhat * mean(g*w * xhat)), where center is 1
// for layernorm (mean subtracted) and 0 for rmsnorm.
template <typename T>
void norm_dx_row(const T* g, const T* x, const T* w, T m, T rs, bool center, T* dx, int64_t C) {
    double sum_wg = 0, sum_wg_xhat = 0;
    for (int64_t c = 0; c < C; ++c) {
        T wg = g[c] * (w ? w[c] : T(1));
        sum_wg += double(wg);
        sum_wg_xhat += double(wg * ((x[c] - m) * rs));
    }
    const T a = center ? T(sum_wg / double(C)) : T(0), b = T(sum_wg_xhat / double(C));
    for (int64_t c = 0; c < C; ++c) {
        T wg = g[c] * (w ? w[c] : T(1));
        dx[c] = rs * (wg - a - ((x[c] - m) * rs) * b);
    }
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       const Tensor& y, const Tensor& mean, const Tensor& rstd) {
    dispatch_float(x.dtype(), "layernorm", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), C = x.size(1);
        const T* xp = x.data<T>();               // (rows, C)
        const T* w = data_or_null<T>(weight);    // (C) or null
        const T* b = data_or_null<T>(bias);      // (C) or null
        T* yp = y.data<T>();                     // (rows, C)
        T* mp = mean.data<T>();                  // (rows)
        T* rp = rstd.data<T>();                  // (rows)
        parallel_for(rows, row_grain(C), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                const T* xr = xp + r * C;
                const double mu = double(row_sum(xr, C)) / double(C);
                double var = 0;
                for (int64_t c = 0; c < C; ++c) var += (double(xr[c]) - mu) * (double(xr[c]) - mu);
                const T m = T(mu), rs = T(1.0 / std::sqrt(var / double(C) + eps));
                T* yr = yp + r * C;
                for (int64_t c = 0; c < C; ++c)
                    yr[c] = (xr[c] - m) * rs * (w ? w[c] : T(1)) + (b ? b[c] : T(0));
                mp[r] = m;
                rp[r] = rs;
            }
        });
    });
}

void layernorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                        const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                        const Tensor& dweight, const Tensor& dbias) {
    dispatch_float(x.dtype(), "layernorm_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), C = x.size(1);
        const T* g = grad.data<T>();           // (rows, C)
        const T* xp = x.data<T>();             // (rows, C)
        const T* w = data_or_null<T>(weight);  // (C) or null
        const T* mp = mean.data<T>();          // (rows)
        const T* rp = rstd.data<T>();          // (rows)
        if (T* d = out_or_null<T>(dx)) {       // (rows, C)
            parallel_for(rows, row_grain(C), [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r)
                    norm_dx_row(g + r * C, xp + r * C, w, mp[r], rp[r], true, d + r * C, C);
            });
        }
        weight_grads(g, xp, mp, rp, rows, C, out_or_null<T>(dweight), out_or_null<T>(dbias));
    });
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y,
                     const Tensor& rstd) {
    dispatch_float(x.dtype(), "rmsnorm", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), C = x.size(1);
        const T* xp = x.data<T>();             // (rows, C)
        const T* w = data_or_null<T>(weight);  // (C) or null
        T* yp = y.data<T>();                   // (rows, C)
        T* rp = rstd.data<T>();                // (rows)
        parallel_for(rows, row_grain(C), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                const T* xr = xp + r * C;
                double squares = 0;
                for (int64_t c = 0; c < C; ++c) squares += double(xr[c]) * double(xr[c]);
                const T rs = T(1.0 / std::sqrt(squares / double(C) + eps));
                T* yr = yp + r * C;
                for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs * (w ? w[c] : T(1));
                rp[r] = rs;
            }
        });
    });
}

void rmsnorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, const Tensor& dx, const Tensor& dweight) {
    dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), C = x.size(1);
        const T* g = grad.data<T>();           // (rows, C)
        const T* xp = x.data<T>();             // (rows, C)
        const T* w = data_or_null<T>(weight);  // (C) or null
        const T* rp = rstd.data<T>();          // (rows)
        if (T* d = out_or_null<T>(dx)) {       // (rows, C)
            parallel_for(rows, row_grain(C), [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r)
                    norm_dx_row(g + r * C, xp + r * C, w, T(0), rp[r], false, d + r * C, C);
            });
        }
        weight_grads(g, xp, static_cast<const T*>(nullptr), rp, rows, C, out_or_null<T>(dweight),
                     static_cast<T*>(nullptr));
    });
}

}  // namespace cpu
}  // namespace ember
