// The basic layers. Each forward is a line or two over the differentiable ops; the fused kernels
// (layer_norm, rms_norm, embedding, dropout) carry the work.
#include "nn/layers.h"

#include <cmath>

#include "nn/bf16_autocast.h"
#include "nn/init.h"

namespace ember {
namespace nn {

// ---- Linear ----

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    EMBER_CHECK(x.defined() && weight.defined() && weight.dim() == 2, "linear: needs x (..., in) "
                "and a 2-D weight (out, in)");
    EMBER_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input of shape ", x.shape(),
                " does not fit a weight of shape ", weight.shape(), "; the last dim must be ",
                weight.size(1));
    if (Bf16Autocast::is_enabled() && x.dtype() == DType::F32) return bf16_autocast_linear(x, weight, bias);
    // Flatten the leading dims so one GEMM does the work: (N, in) @ (in, out).
    Shape out_shape = x.shape();
    out_shape[out_shape.rank - 1] = weight.size(0);
    Tensor y = matmul(x.reshape({-1, weight.size(1)}), weight.t());  // (N, out)
    if (bias.defined()) y = y + bias;
    return y.reshape(out_shape);
}

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) : LinearBase(in, out) {
    EMBER_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in ", in, ", out ", out);
    weight = empty({out, in});
    kaiming_uniform_(weight, std::sqrt(5.0), gen);  // U(-1/sqrt(in), 1/sqrt(in))
    register_parameter("weight", weight);
    if (has_bias) {
        double b = 1.0 / std::sqrt(double(in));
        bias = empty({out});
        uniform_(bias, -b, b, gen);
        register_parameter("bias", bias);
    }
}

Linear::Linear(Tensor w, Tensor b) : LinearBase(w.defined() && w.dim() == 2 ? w.size(1) : 0, w.defined() && w.dim() == 2 ? w.size(0) : 0) {
    EMBER_CHECK(w.defined() && w.dim() == 2 && w.numel() > 0, "Linear: needs a non-empty 2-D weight (out, in)");
    EMBER_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == out_features), "Linear: a bias of shape ",
                b.defined() ? make_message(b.shape()) : std::string(), " does not fit a weight of shape ", w.shape(),
                "; it must be (", out_features, ")");
    weight = std::move(w);
    register_parameter("weight", weight);
    if (b.defined()) {
        bias = std::move(b);
        register_parameter("bias", bias);
    }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

// ---- Embedding ----

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen)
    : num_embeddings(num), embedding_dim(dim) {
    EMBER_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got ", num, " x ", dim);
    weight = empty({num, dim});
    normal_(weight, 0, 1, gen);
    register_parameter("weight", weight);
}

Tensor Embedding::forward_ids(const Tensor& ids) { return embedding(weight, ids); }

// ---- norms ----

LayerNorm::LayerNorm(int64_t dim, double eps, bool has_bias) : eps(eps) {
    weight = ones({dim});
    register_parameter("weight", weight);
    if (has_bias) {
        bias = zeros({dim});
        register_parameter("bias", bias);
    }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps) : eps(eps) {
    weight = ones({dim});
    register_parameter("weight", weight);
}

Tensor RMSNorm::forward(const Tensor& x) { return rms_norm(x, weight, eps); }

// ---- Dropout and activations ----

Dropout::Dropout(double p, std::shared_ptr<Generator> gen) : p(p), gen(std::move(gen)) {
    EMBER_CHECK(p >= 0 && p < 1, "Dropout: p must lie in [0, 1), got ", p);
    EMBER_CHECK(p == 0 || this->gen, "Dropout: p = ", p, " needs a generator; pass "
                "std::make_shared<Generator>(seed)");
}

Tensor Dropout::forward(const Tensor& x) {
    if (!is_training() || p == 0) return x;
    return dropout(x, p, *gen, true);
}

Tensor activate(const Tensor& x, Activation act) {
    switch (act) {
        case Activation::GeluTanh: return gelu(x, GeluApprox::Tanh);
        case Activation::GeluErf: return gelu(x, GeluApprox::None);
        case Activation::Relu: return relu(x);
        case Activation::Silu: return silu(x);
    }
    return x;
}

const char* activation_name(Activation act) {
    switch (act) {
        case Activation::GeluTanh: return "gelu_tanh";
        case Activation::GeluErf: return "gelu";
        case Activation::Relu: return "relu";
        case Activation::Silu: return "silu";
    }
    return "?";
}

// ---- feed-forward blocks ----

MLP::MLP(int64_t dim, int64_t hidden, Activation act, bool bias, double dropout,
         std::shared_ptr<Generator> rng, Generator& init_gen, MLPNames names)
    : act(act), dropout_p(dropout), rng(std::move(rng)) {
    EMBER_CHECK(dropout >= 0 && dropout < 1, "MLP: dropout must lie in [0, 1), got ", dropout);
    EMBER_CHECK(dropout == 0 || this->rng, "MLP: dropout ", dropout, " needs an rng generator");
    fc = std::make_shared<Linear>(dim, hidden, bias, init_gen);
    proj = std::make_shared<Linear>(hidden, dim, bias, init_gen);
    register_module(names.fc, fc);
    register_module(names.proj, proj);
}

Tensor MLP::forward(const Tensor& x) {
    Tensor h = activate(fc->forward(x), act);  // (..., hidden)
    Tensor y = proj->forward(h);                // (..., dim)
    if (is_training() && dropout_p > 0) y = dropout(y, dropout_p, *rng, true);
    return y;
}

SwiGLU::SwiGLU(int64_t dim, int64_t hidden, bool bias, Generator& init_gen, SwiGLUNames names) {
    gate = std::make_shared<Linear>(dim, hidden, bias, init_gen);
    up = std::make_shared<Linear>(dim, hidden, bias, init_gen);
    down = std::make_shared<Linear>(hidden, dim, bias, init_gen);
    register_module(names.gate, gate);
    register_module(names.up, up);
    register_module(names.down, down);
}

Tensor SwiGLU::forward(const Tensor& x) {
    return down->forward(silu(gate->forward(x)) * up->forward(x));
}

int replace_linears(Module& root, const std::function<std::shared_ptr<LinearBase>(const Linear&)>& make,
                    const std::function<bool(const std::string&)>& keep) {
    std::vector<std::pair<std::string, std::shared_ptr<Linear>>> targets;  // found first, replaced after
    for (auto& [name, m] : root.named_modules()) {
        auto linear = std::dynamic_pointer_cast<Linear>(m);
        if (linear && !name.empty() && !(keep && keep(name))) targets.emplace_back(name, linear);
    }
    NoGradGuard no_grad;
    for (auto& [name, linear] : targets) root.replace_submodule(name, make(*linear));
    return int(targets.size());
}

}  // namespace nn
}  // namespace ember
