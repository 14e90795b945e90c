// QLoRA's preparation, forward and merges; the math is in qlora.h.
#include "peft/qlora.h"

namespace ember {
namespace peft {

int quantize_for_qlora(nn::Module& model, const nn::QuantConfig& config) {
    return nn::quantize_linears(model, config, [](const std::string& name) {
        return name == "lm_head" || (name.size() > 8 && name.compare(name.size() - 8, 8, ".lm_head") == 0);
    });
}

static void check_factors(const QuantizedWeight& w, const Tensor& A, const Tensor& B) {
    EMBER_CHECK(A.dim() == 2 && A.size(1) == w.cols && B.dim() == 2 && B.size(0) == w.rows &&
                    B.size(1) == A.size(0),
                "QLoRA: A ", A.shape(), " and B ", B.shape(), " do not fit ", w.describe(),
                "; A must be (r, ", w.cols, ") and B (", w.rows, ", r)");
}

Tensor qlora_forward(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& A,
                     const Tensor& B, double scaling) {
    check_factors(w, A, B);
    return nn::quant_linear(x, w, bias) + matmul(matmul(x, A.t()), B.t()) * scaling;
}

static Tensor lora_delta(const Tensor& A, const Tensor& B, double scaling) {
    Tensor d = raw::mul_scalar(raw::matmul(B.detach(), A.detach()), scaling);
    return d.dtype() == DType::F32 ? d : raw::to_dtype(d, DType::F32);
}

Tensor merge_lora_dequantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B, double scaling) {
    check_factors(w, A, B);
    return raw::add(dequantize(w), lora_delta(A, B, scaling));
}

QuantizedWeight merge_lora_requantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B,
                                       double scaling, RequantizeError* error) {
    check_factors(w, A, B);
    return requantize_merge(w, lora_delta(A, B, scaling), error);
}

}  // namespace peft
}  // namespace ember
