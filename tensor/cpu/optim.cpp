// CPU AdamW: one pass over the parameter, decoupled weight decay as torch.optim.AdamW.
//
//   p  <- p * (1 - lr * wd)                         decay the weight, not the gradient
//   m  <- beta1 * m + (1 - beta1) * g               first moment
//   v  <- beta2 * v + (1 - beta2) * g^2             second moment
//   p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// The step-dependent scalars are computed once in double; the per-element arithmetic runs in the
// element type, in a fixed order, so a resumed run repeats the same bits.
#include <cmath>

#include "tensor/cpu/kernels.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {

void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const raw::AdamWParams& p) {
    dispatch_float(param.dtype(), "adamw_", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t n = param.numel();
        T* w = param.data<T>();          // (n)
        const T* g = grad.data<T>();     // (n)
        T* m = exp_avg.data<T>();        // (n)
        T* v = exp_avg_sq.data<T>();     // (n)
        const double t = double(p.step);
        const T decay = T(1.0 - p.lr * p.weight_decay);
        const T b1 = T(p.beta1), b2 = T(p.beta2);
        const T one_minus_b1 = T(1.0 - p.beta1), one_minus_b2 = T(1.0 - p.beta2);
        const T step_size = T(p.lr / (1.0 - std::pow(p.beta1, t)));
        const T inv_sqrt_bc2 = T(1.0 / std::sqrt(1.0 - std::pow(p.beta2, t)));
        const T eps = T(p.eps);
        parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const T gi = g[i];
                const T mi = b1 * m[i] + one_minus_b1 * gi;
                const T vi = b2 * v[i] + one_minus_b2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                const T denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
                w[i] = w[i] * decay - step_size * (mi / denom);
            }
        });
    });
}

}  // namespace cpu
}  // namespace ember
