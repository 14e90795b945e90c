// Optimizer front-ends: the fused AdamW update. An optimizer step over many parameters is a hot
// loop of tiny elementwise chains; fusing the five AdamW formulas into one pass reads and writes
// each of param, exp_avg and exp_avg_sq once instead of a dozen times. The formulas are in
// tensor/cpu/optim.cpp.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {

void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const AdamWParams& p) {
    const char* op = "adamw_";
    check_defined(op, param, "param");
    check_defined(op, grad, "grad");
    check_defined(op, exp_avg, "exp_avg");
    check_defined(op, exp_avg_sq, "exp_avg_sq");
    dispatch_float(param.dtype(), op, [](auto) {});
    const std::pair<const char*, const Tensor*> others[] = {
        {"grad", &grad}, {"exp_avg", &exp_avg}, {"exp_avg_sq", &exp_avg_sq}};
    for (const auto& [name, t] : others) {
        check_same_device(op, param, *t);
        check_same_dtype(op, param, *t);
        EMBER_CHECK(t->shape() == param.shape(), op, ": ", name, " has shape ", t->shape(),
                    " but param has shape ", param.shape(), "; they must match");
        EMBER_CHECK(t->is_contiguous(), op, ": ", name, " must be contiguous; call .contiguous()");
    }
    EMBER_CHECK(param.is_contiguous(), op, ": param must be contiguous (optimizer state is kept "
                "in the parameter's layout); call .contiguous() when creating it");
    EMBER_CHECK(p.step >= 1, op, ": step is 1-based (bias correction uses beta^step), got ", p.step);
    EMBER_CHECK(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1, op,
                ": betas must lie in [0, 1), got (", p.beta1, ", ", p.beta2, ")");
    switch (param.device().type) {
        case DeviceType::CPU: cpu::adamw_(param, grad, exp_avg, exp_avg_sq, p); break;
        case DeviceType::CUDA: ON_CUDA(op, cuda::adamw_(param, grad, exp_avg, exp_avg_sq, p)); break;
    }
    param.storage()->bump_version();
    exp_avg.storage()->bump_version();
    exp_avg_sq.storage()->bump_version();
}

}  // namespace raw
}  // namespace ember
