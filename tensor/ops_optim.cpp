// Optimizer front-ends: the fused AdamW update. An optimizer step over many parameters is a hot
// loop of tiny elementwise chains; fusing the five AdamW formulas into one pass reads and writes
// each of param, exp_avg and exp_avg_sq once instead of a dozen times. The formulas are in
// tensor/cpu/optim.cpp.
#include <tuple>

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

void adamw_8bit_multi_(const std::vector<AdamW8bitSlot>& slots) {
    const char* op = "adamw_8bit_";
    for (const AdamW8bitSlot& s : slots) {
        check_defined(op, s.param, "param");
        check_defined(op, s.grad, "grad");
        EMBER_CHECK(s.param.device().is_cpu(), op, ": 8-bit optimizer state has a CPU kernel only (no "
                    "CUDA one yet); on the GPU use AdamW or PagedAdamW");
        EMBER_CHECK(s.param.dtype() == DType::F32, op, ": the parameter is ", dtype_name(s.param.dtype()),
                    "; 8-bit state is for f32 parameters (use AdamW for f64)");
        const int64_t n = s.param.numel(), blocks = (n + ADAMW_8BIT_BLOCK - 1) / ADAMW_8BIT_BLOCK;
        const std::tuple<const char*, const Tensor*, DType, int64_t> parts[] = {
            {"grad", &s.grad, DType::F32, n},
            {"exp_avg_codes", &s.exp_avg_codes, DType::I32, (n + 3) / 4},
            {"exp_avg_absmax", &s.exp_avg_absmax, DType::F32, blocks},
            {"exp_avg_sq_codes", &s.exp_avg_sq_codes, DType::I32, (n + 3) / 4},
            {"exp_avg_sq_absmax", &s.exp_avg_sq_absmax, DType::F32, blocks}};
        for (const auto& [name, t, dtype, numel] : parts) {
            check_defined(op, *t, name);
            check_same_device(op, s.param, *t);
            EMBER_CHECK(t->dtype() == dtype && t->numel() == numel && t->is_contiguous(), op, ": ", name,
                        " must be a contiguous ", dtype_name(dtype), " tensor of ", numel, " elements for a ",
                        "parameter of shape ", s.param.shape(), ", got ", dtype_name(t->dtype()), " ",
                        t->shape());
        }
        EMBER_CHECK(s.param.is_contiguous(), op, ": param must be contiguous");
        EMBER_CHECK(s.hp.step >= 1, op, ": step is 1-based (bias correction uses beta^step), got ", s.hp.step);
    }
    cpu::adamw_8bit_multi_(slots);
    for (const AdamW8bitSlot& s : slots)
        for (const Tensor* t : {&s.param, &s.exp_avg_codes, &s.exp_avg_absmax, &s.exp_avg_sq_codes,
                                &s.exp_avg_sq_absmax})
            t->storage()->bump_version();
}

}  // namespace raw
}  // namespace ember
