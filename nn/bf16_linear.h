// A frozen Linear whose weight is stored in bf16 (tensor/bf16.h): y = x W^T + b, computed by the
// bf16 product (vdpbf16ps where the CPU has it), differentiable in x only. It is the base a weight
// tuner (LoRA, DoRA, IA3, ...) can sit on for CPU training: the frozen weight takes half the bytes
// and its products up to twice the f32 rate, at bf16's rounding of the weight and of what meets it.
// The adapters themselves stay f32. CPU only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/linear_base.h"
#include "tensor/bf16.h"

namespace ember {
namespace nn {

// y = x W^T + b over the last dim, any leading dims: x (..., in) -> (..., out). The gradient
// reaches x (dx = dy W, by the bf16 product) and b when it requires one; never W.
Tensor bf16_linear(const Tensor& x, const Bf16Weight& w, const Tensor& bias);

class Bf16Linear : public LinearBase {
public:
    // bias (out) or undefined, kept in f32 and frozen like the weight. input_dtype: what the layer
    // is fed (f32; f64 in gradient checks, where the products are exact on the bf16 values).
    Bf16Linear(Bf16Weight weight, Tensor bias, DType input_dtype = DType::F32);
    static std::shared_ptr<Bf16Linear> from_linear(const Linear& linear);
    std::string type_name() const override { return "Bf16Linear"; }
    Tensor forward(const Tensor& x) override { return bf16_linear(x, weight, bias); }

    Tensor dense_weight() const override { return from_bf16(weight, input_dtype); }
    DType dtype() const override { return input_dtype; }
    Device device() const override { return weight.device(); }
    bool stores_dense_weight() const override { return false; }

    // Registered as the non-persistent buffer "weight_bf16": Module::to moves it (and the product
    // then refuses a GPU), state_dict() does not save it. Save the adapter, or merge first.
    Bf16Weight weight;
    DType input_dtype;
};

// Replaces every Linear under `root` for which keep(dotted name) is false by a Bf16Linear of it.
// Returns how many it replaced. Call it before a PEFT method attaches: afterwards it would cast
// the adapters' own Linears (LoRA's lora_A, lora_B) too. Weights that are not Linears (GPT-2's
// head is the token embedding) are not touched; GPT::cast_to_bf16 handles the head.
int cast_linears_to_bf16(Module& root, const std::function<bool(const std::string&)>& keep = nullptr);

}  // namespace nn
}  // namespace ember
