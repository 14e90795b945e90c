// LinearBase: what a weight tuner (LoRA, DoRA, IA3, VeRA, ...) needs of the layer it wraps, so
// that the frozen base may be a plain Linear or a quantized one (nn/quant_linear.h):
//   forward     y = x W^T + b over the last dim, (..., in) -> (..., out)
//   dense W     the (out, in) weight as numbers, for merging and for methods that read W (DoRA's
//               norm, IA3's and VeRA's dtype)
//   bias        (out) or undefined
// A Linear stores W densely, so merging can swap its weight tensor and unmerge swap it back
// exactly. A quantized base stores codes: merging there builds a new base module instead (an f32
// Linear of the dequantized weight, or a requantized weight; peft/tuner.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "autograd/autograd.h"
#include "nn/module.h"

namespace ember {
namespace nn {

class LinearBase : public Module {
public:
    LinearBase(int64_t in, int64_t out) : in_features(in), out_features(out) {}

    // W (out, in) in dtype(). Linear: its own weight tensor (no copy). A quantized base: its
    // dequantized values, made afresh on each call.
    virtual Tensor dense_weight() const = 0;
    // The element type and device an adapter on this base takes (a quantized base: that of the
    // inputs it is fed, f32 unless a gradient check runs it in f64).
    virtual DType dtype() const = 0;
    virtual Device device() const = 0;
    // true when dense_weight() is the stored weight itself (Linear); false for a quantized base.
    virtual bool stores_dense_weight() const = 0;

    Tensor bias;  // (out) or undefined
    int64_t in_features, out_features;
};

// The forward of a frozen Linear-like base whose weight is not a Tensor (4-bit, bf16): x
// (..., in) flattened to (N, in), y = product(x2) (N, out) with an autograd node that maps dy to
// input_grad(dy) (N, in), then the bias (met in x's dtype: f64 in gradient checks), back to
// (..., out). The weight never gets a gradient. The caller checks that x's last dim is `in`.
template <class Product, class InputGrad>
Tensor frozen_linear(const char* op, const Tensor& x, int64_t in, int64_t out, const Product& product,
                     const InputGrad& input_grad, const Tensor& bias) {
    Shape out_shape = x.shape();
    out_shape[out_shape.rank - 1] = out;
    Tensor x2 = x.reshape({-1, in});
    Tensor y = product(x2);
    if (needs_graph({x2})) {
        record(op, y, {x2}, [input_grad](const Tensor& g, const Needs&) { return Grads{input_grad(g)}; });
    }
    if (bias.defined()) y = y + (bias.dtype() == y.dtype() ? bias : bias.to(y.dtype()));
    return y.reshape(out_shape);
}

// Throws, naming the module, when a Linear-like module under `root` keeps its weight outside
// state_dict() (a 4-bit or bf16 base): a file written from state_dict() would silently lack it.
// `op` names the caller ("GPT::save_pretrained").
inline void require_dense_weights(const Module& root, const std::string& op, const std::string& prefix = "") {
    for (const auto& [name, child] : root.named_children()) {
        const std::string path = name.empty() ? prefix : prefix.empty() ? name : prefix + "." + name;
        auto base = std::dynamic_pointer_cast<LinearBase>(child);
        EMBER_CHECK(!base || base->stores_dense_weight(), op, ": ", path, " is a ", child->type_name(),
                    ", whose frozen weight a file of f32 tensors cannot hold; save the adapter "
                    "(PeftModel::save_pretrained), merge_and_unload first (it leaves f32 Linears), or "
                    "write a 4-bit model with nn::save_quantized");
        require_dense_weights(*child, op, path);
    }
}

}  // namespace nn
}  // namespace ember
