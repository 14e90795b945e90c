// The frozen bf16 Linear: its autograd node maps dy to dx = dy W with the bf16 product, so
// neither pass builds an f32 copy of the weight.
#include "nn/bf16_linear.h"

namespace ember {
namespace nn {

Tensor bf16_linear(const Tensor& x, const Bf16Weight& w, const Tensor& bias) {
    EMBER_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == w.cols, "bf16_linear: input of shape ",
                x.defined() ? make_message(x.shape()) : std::string("(undefined)"), " does not fit ",
                w.describe(), "; the last dim must be ", w.cols);
    return frozen_linear(
        "bf16_linear", x, w.cols, w.rows, [&](const Tensor& x2) { return raw::bf16_matmul(x2, w); },
        [w](const Tensor& dy) { return raw::bf16_matmul_t(dy, w); }, bias);
}

Bf16Linear::Bf16Linear(Bf16Weight w, Tensor b, DType input)
    : LinearBase(w.cols, w.rows), weight(std::move(w)), input_dtype(input) {
    EMBER_CHECK(is_floating(input_dtype), "Bf16Linear: input_dtype must be f32 or f64, got ", input_dtype);
    register_buffer("weight_bf16", weight.bits, false);
    bias = std::move(b);
    if (bias.defined()) {
        EMBER_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "Bf16Linear: bias of shape ", bias.shape(),
                    " does not fit ", weight.describe(), "; it must be (", out_features, ")");
        bias = bias.detach();
        register_parameter("bias", bias);
        bias.set_requires_grad(false);
    }
}

std::shared_ptr<Bf16Linear> Bf16Linear::from_linear(const Linear& linear) {
    return std::make_shared<Bf16Linear>(to_bf16(linear.weight), linear.bias, linear.weight.dtype());
}

int cast_linears_to_bf16(Module& root, const std::function<bool(const std::string&)>& keep) {
    return replace_linears(root, [](const Linear& l) { return Bf16Linear::from_linear(l); }, keep);
}

}  // namespace nn
}  // namespace ember
