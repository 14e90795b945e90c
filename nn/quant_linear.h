// A frozen Linear whose weight is 4-bit (tensor/quant.h): y = x dequant(W)^T + b, computed by
// the quantized product (the f32 weight is never built), differentiable in x only. It is what
// QLoRA and QA-LoRA put under their adapters (bitsandbytes' Linear4bit plays this part in peft).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/linear_base.h"
#include "tensor/quant.h"

namespace ember {
namespace nn {

// How to quantize: NF4 (QLoRA: block 64, double quantization) or INT4 (QA-LoRA: groups of 32).
struct QuantConfig {
    QuantFormat format = QuantFormat::NF4;
    bool double_quant = true;  // NF4 only
    int64_t blocksize = 64;    // NF4 only
    int64_t group_size = 32;   // INT4 only
};
QuantizedWeight quantize(const Tensor& weight, const QuantConfig& config);

// y = x dequant(w)^T + b over the last dim, any leading dims: x (..., in) -> (..., out).
// The gradient reaches x (through quant_matmul_t) and b when it requires one; never w.
Tensor quant_linear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias);

// A LinearBase (nn/linear_base.h) that stores W as codes: dense_weight() dequantizes, and merging
// an adapter into it builds a new base (peft/tuner.h).
class QuantLinear : public LinearBase {
public:
    // bias (out) or undefined; it is kept frozen like the weight. input_dtype: what the layer is
    // fed (f32; f64 in gradient checks, where the products run on the f64 dequantized weight).
    QuantLinear(QuantizedWeight weight, Tensor bias, DType input_dtype = DType::F32);
    static std::shared_ptr<QuantLinear> from_linear(const Linear& linear, const QuantConfig& config);
    std::string type_name() const override { return "QuantLinear"; }
    Tensor forward(const Tensor& x) override { return quant_linear(x, weight, bias); }

    Tensor dense_weight() const override { return dequantize(weight, input_dtype); }
    DType dtype() const override { return input_dtype; }
    Device device() const override { return weight.device(); }
    bool stores_dense_weight() const override { return false; }
    // Puts a new quantized weight of the same shape in place (loading a checkpoint).
    void set_weight(QuantizedWeight w);

    // The weight's tensors are registered as non-persistent buffers ("weight_codes", ...), so Module::to(device) moves
    // them; they are saved by nn/quant_checkpoint.h in bitsandbytes' layout, not by state_dict().
    QuantizedWeight weight;
    DType input_dtype;  // bias, in_features, out_features are LinearBase's

private:
    void register_weight_buffers();
};

// Replaces every Linear under `root` for which keep(dotted name) is false by a QuantLinear of it.
// Returns how many it replaced. QLoRA keeps the output head: keep = name == "lm_head".
int quantize_linears(Module& root, const QuantConfig& config,
                     const std::function<bool(const std::string&)>& keep = nullptr);

}  // namespace nn
}  // namespace ember
