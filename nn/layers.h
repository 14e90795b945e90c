// The basic layers: Linear, Embedding, the norms, Dropout, activations, and the two transformer
// feed-forward blocks (a GELU MLP as in GPT-2/ViT, SwiGLU as in LLaMA).
//
// Projections that PEFT may replace (LoRA wraps a Linear, IA3 scales one) sit in child slots typed
// std::shared_ptr<Module> and are called through ->forward(x), so any unary module fits them.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nn/linear_base.h"
#include "nn/module.h"

namespace ember {
namespace nn {

// y = x W^T + b over the last dim, any leading dims. weight (out, in), bias (out) or undefined.
// Init as torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for both.
// A LinearBase (nn/linear_base.h) whose W is stored densely: a weight tuner's usual base.
class Linear : public LinearBase {
public:
    Linear(int64_t in, int64_t out, bool bias, Generator& gen);
    // Holds the given tensors (weight (out, in), bias (out) or undefined) as they are.
    Linear(Tensor weight, Tensor bias);
    std::string type_name() const override { return "Linear"; }
    Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)

    Tensor dense_weight() const override { return weight; }
    DType dtype() const override { return weight.dtype(); }
    Device device() const override { return weight.device(); }
    bool stores_dense_weight() const override { return true; }

    Tensor weight;  // (out, in); bias, in_features, out_features are LinearBase's
};

// The projection x W^T + b that Linear computes, for wrappers that hold W and b elsewhere.
// x (..., in), weight (out, in), bias (out) or undefined -> (..., out). In f32 inside a
// Bf16Autocast scope (nn/bf16_autocast.h) its products run in bf16.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// Replaces every Linear under `root` for which keep(dotted name) is false (keep null: every one)
// by make(that Linear), recording no gradients: how a model's Linears become frozen 4-bit
// (nn/quant_linear.h) or bf16 (nn/bf16_linear.h) bases. Returns how many it replaced.
int replace_linears(Module& root, const std::function<std::shared_ptr<LinearBase>(const Linear&)>& make,
                    const std::function<bool(const std::string&)>& keep = nullptr);

// Rows of weight (num, dim) ~ N(0, 1), looked up by integer ids.
class Embedding : public Module {
public:
    Embedding(int64_t num, int64_t dim, Generator& gen);
    std::string type_name() const override { return "Embedding"; }
    Tensor forward_ids(const Tensor& ids);  // ids (...) i32/i64 -> (..., dim)
    Tensor forward(const Tensor& ids) override { return forward_ids(ids); }

    Tensor weight;
    int64_t num_embeddings, embedding_dim;
};

// Over the last dim; weight ones, bias zeros (absent when bias = false).
class LayerNorm : public Module {
public:
    explicit LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true);
    std::string type_name() const override { return "LayerNorm"; }
    Tensor forward(const Tensor& x) override;

    Tensor weight, bias;
    double eps;
};

// x / sqrt(mean(x^2) + eps) * weight over the last dim; weight ones.
class RMSNorm : public Module {
public:
    explicit RMSNorm(int64_t dim, double eps = 1e-6);
    std::string type_name() const override { return "RMSNorm"; }
    Tensor forward(const Tensor& x) override;

    Tensor weight;
    double eps;
};

// Zeroes with probability p while training, scaling the rest by 1 / (1 - p); identity in eval
// mode or when p == 0. The generator is shared so a model's dropout draws form one stream.
class Dropout : public Module {
public:
    Dropout(double p, std::shared_ptr<Generator> gen);
    std::string type_name() const override { return "Dropout"; }
    Tensor forward(const Tensor& x) override;

    double p;
    std::shared_ptr<Generator> gen;
};

class GELU : public Module {
public:
    explicit GELU(GeluApprox approx = GeluApprox::Tanh) : approx(approx) {}
    std::string type_name() const override { return "GELU"; }
    Tensor forward(const Tensor& x) override { return gelu(x, approx); }
    GeluApprox approx;
};

class SiLU : public Module {
public:
    std::string type_name() const override { return "SiLU"; }
    Tensor forward(const Tensor& x) override { return silu(x); }
};

class ReLU : public Module {
public:
    std::string type_name() const override { return "ReLU"; }
    Tensor forward(const Tensor& x) override { return relu(x); }
};

class Identity : public Module {
public:
    std::string type_name() const override { return "Identity"; }
    Tensor forward(const Tensor& x) override { return x; }
};

enum class Activation { GeluTanh, GeluErf, Relu, Silu };
Tensor activate(const Tensor& x, Activation act);
const char* activation_name(Activation act);

struct MLPNames {
    std::string fc = "fc1", proj = "fc2";  // GPT-2: "c_fc", "c_proj"
};

// fc -> act -> proj -> dropout: (..., dim) -> (..., hidden) -> (..., dim).
class MLP : public Module {
public:
    MLP(int64_t dim, int64_t hidden, Activation act, bool bias, double dropout,
        std::shared_ptr<Generator> rng, Generator& init_gen, MLPNames names = {});
    std::string type_name() const override { return "MLP"; }
    Tensor forward(const Tensor& x) override;

    std::shared_ptr<Module> fc, proj;  // Linear by default
    Activation act;
    double dropout_p;
    std::shared_ptr<Generator> rng;
};

struct SwiGLUNames {
    std::string gate = "gate_proj", up = "up_proj", down = "down_proj";  // LLaMA's
};

// down(silu(gate(x)) * up(x)): (..., dim) -> (..., dim), hidden inside.
class SwiGLU : public Module {
public:
    SwiGLU(int64_t dim, int64_t hidden, bool bias, Generator& init_gen, SwiGLUNames names = {});
    std::string type_name() const override { return "SwiGLU"; }
    Tensor forward(const Tensor& x) override;

    std::shared_ptr<Module> gate, up, down;  // Linear by default
};

}  // namespace nn
}  // namespace ember
