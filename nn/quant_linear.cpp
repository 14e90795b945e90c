// The frozen 4-bit Linear: its autograd node maps dy to dx = dy dequant(W) with the quantized
// product, so the backward pass builds no f32 weight either.
#include "nn/quant_linear.h"

namespace ember {
namespace nn {

QuantizedWeight quantize(const Tensor& weight, const QuantConfig& config) {
    if (config.format == QuantFormat::INT4) return quantize_int4(weight, config.group_size);
    return quantize_nf4(weight, config.double_quant, config.blocksize);
}

Tensor quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias) {
    EMBER_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == w.cols, "quant_linear: input of "
                "shape ", x.defined() ? make_message(x.shape()) : std::string("(undefined)"),
                " does not fit ", w.describe(), "; the last dim must be ", w.cols);
    return frozen_linear(
        "quant_linear", x, w.cols, w.rows, [&](const Tensor& x2) { return raw::quant_matmul(x2, w); },
        [w](const Tensor& dy) { return raw::quant_matmul_t(dy, w); }, bias);
}

QuantLinear::QuantLinear(QuantizedWeight w, Tensor b, DType input)
    : LinearBase(w.cols, w.rows), weight(std::move(w)), input_dtype(input) {
    EMBER_CHECK(is_floating(input_dtype), "QuantLinear: input_dtype must be f32 or f64, got ", input_dtype);
    bias = std::move(b);
    register_weight_buffers();
    if (bias.defined()) {
        EMBER_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "QuantLinear: bias of shape ",
                    bias.shape(), " does not fit ", weight.describe(), "; it must be (", out_features, ")");
        bias = bias.detach();
        register_parameter("bias", bias);
        bias.set_requires_grad(false);
    }
}

void QuantLinear::register_weight_buffers() {
    register_buffer("weight_codes", weight.codes.words, false);
    if (weight.absmax_codes.words.defined()) register_buffer("weight_absmax_codes", weight.absmax_codes.words, false);
    if (weight.absmax.defined()) register_buffer("weight_absmax", weight.absmax, false);
    if (weight.nested_absmax.defined()) register_buffer("weight_nested_absmax", weight.nested_absmax, false);
    if (weight.nested_code.defined()) register_buffer("weight_nested_quant_map", weight.nested_code, false);
    if (weight.scales.defined()) register_buffer("weight_scales", weight.scales, false);
    if (weight.zeros.defined()) register_buffer("weight_zeros", weight.zeros, false);
}

void QuantLinear::set_weight(QuantizedWeight w) {
    EMBER_CHECK(w.rows == weight.rows && w.cols == weight.cols && w.format == weight.format &&
                    w.double_quant == weight.double_quant,
                "QuantLinear::set_weight: ", w.describe(), " does not replace ", weight.describe(),
                "; quantize the model with the same settings as the checkpoint");
    const Device device = weight.device();
    // The registry points at the slots, so the slots stay and only their contents change.
    QuantizedWeight moved = w.to(device);
    weight.codes = moved.codes;
    weight.absmax_codes = moved.absmax_codes;
    weight.absmax = moved.absmax;
    weight.nested_absmax = moved.nested_absmax;
    weight.nested_code = moved.nested_code;
    weight.absmax_offset = moved.absmax_offset;
    weight.nested_blocksize = moved.nested_blocksize;
    weight.blocksize = moved.blocksize;
    weight.scales = moved.scales;
    weight.zeros = moved.zeros;
}

std::shared_ptr<QuantLinear> QuantLinear::from_linear(const Linear& linear, const QuantConfig& config) {
    // The codes come from the f32 values (an f64 Linear, in a gradient check, is rounded first).
    Tensor w = linear.weight.dtype() == DType::F32 ? linear.weight : raw::to_dtype(linear.weight, DType::F32);
    return std::make_shared<QuantLinear>(quantize(w, config), linear.bias, linear.weight.dtype());
}

int quantize_linears(Module& root, const QuantConfig& config,
                     const std::function<bool(const std::string&)>& keep) {
    return replace_linears(root, [&](const Linear& l) { return QuantLinear::from_linear(l, config); }, keep);
}

}  // namespace nn
}  // namespace ember
