// CUDA fused AdamW step: one pass over the parameter, its gradient and the two moment buffers,
// with torch.optim.AdamW's semantics (decoupled weight decay, bias-corrected moments):
//
//   p -= lr * wd * p
//   m  = b1 * m + (1 - b1) * g          v = b2 * v + (1 - b2) * g^2
//   p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
//
// The bias corrections are computed once on the host in double; the update runs in the tensors'
// dtype. One kernel instead of a dozen elementwise ops: the step is memory-bound, and this reads
// four and writes three values per parameter, the minimum.
#include <cmath>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/kernels.h"

namespace ember {
namespace cuda {
namespace {

template <typename T>
__global__ void adamw_kernel(T* param, const T* grad, T* m, T* v, int64_t n, T lr, T beta1,
                             T beta2, T eps, T decay, T bias1, T bias2) {
    GRID_STRIDE_LOOP(i, n) {
        const T g = grad[i];
        T p = param[i];
        p -= lr * decay * p;
        const T mi = beta1 * m[i] + (T(1) - beta1) * g;
        const T vi = beta2 * v[i] + (T(1) - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p -= lr * (mi / bias1) / (sqrt(vi / bias2) + eps);
        param[i] = p;
    }
}

}  // namespace

void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const raw::AdamWParams& p) {
    EMBER_CHECK(p.step >= 1, "adamw_: step counts from 1, got ", p.step);
    for (const Tensor* t : {&param, &grad, &exp_avg, &exp_avg_sq})
        EMBER_CHECK(t->is_contiguous() && t->shape() == param.shape() &&
                        t->dtype() == param.dtype() && t->device().is_cuda(),
                    "adamw_: parameter, gradient and moments must be contiguous CUDA tensors of "
                    "one shape and dtype; got ", t->shape(), " ", t->dtype(), " on ", t->device(),
                    " for a parameter of shape ", param.shape());
    const int64_t n = param.numel();
    if (n == 0) return;
    const double bias1 = 1 - std::pow(p.beta1, double(p.step));
    const double bias2 = 1 - std::pow(p.beta2, double(p.step));
    dispatch_float(param.dtype(), "adamw_", [&](auto tag) {
        using T = typename decltype(tag)::type;
        adamw_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(
            param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), n, T(p.lr),
            T(p.beta1), T(p.beta2), T(p.eps), T(p.weight_decay), T(bias1), T(bias2));
        CUDA_LAUNCHED();
    });
}

}  // namespace cuda
}  // namespace ember
