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

namespace {

void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
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
}

}  // namespace

void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const AdamWParams& p) {
    adamw_multi_({{param, grad, exp_avg, exp_avg_sq, p}});
}

void adamw_multi_(const std::vector<AdamWSlot>& slots) {
    for (const AdamWSlot& s : slots) check_adamw(s.param, s.grad, s.exp_avg, s.exp_avg_sq, s.hp);
    // The CPU kernel takes one dtype at a time; CUDA updates tensor by tensor.
    std::vector<AdamWSlot> cpu_f32, cpu_f64;
    for (const AdamWSlot& s : slots) {
        if (s.param.device().is_cuda()) {
            ON_CUDA("adamw_", cuda::adamw_(s.param, s.grad, s.exp_avg, s.exp_avg_sq, s.hp));
        } else {
            (s.param.dtype() == DType::F32 ? cpu_f32 : cpu_f64).push_back(s);
        }
    }
    cpu::adamw_multi_(cpu_f32);
    cpu::adamw_multi_(cpu_f64);
    for (const AdamWSlot& s : slots) {
        s.param.storage()->bump_version();
        s.exp_avg.storage()->bump_version();
        s.exp_avg_sq.storage()->bump_version();
    }
}

}  // namespace raw
}  // namespace ember
