// The pre-norm transformer block; the order of every step is written out in nn/transformer.h.
#include "nn/transformer.h"

namespace ember {
namespace nn {

const std::vector<std::string>& site_names() {
    static const std::vector<std::string> names = {"adapter_attn_pre", "adapter_attn_post", "adapter_mlp_pre",
                                                   "adapter_mlp_post", "adapter_mlp_parallel"};
    return names;
}

Tensor call_site(const std::shared_ptr<Module>& site, const SiteInputs& in, const Tensor& value) {
    if (!site) return value;
    if (auto* s = dynamic_cast<SiteModule*>(site.get())) return s->forward_site(in);
    return site->forward(value);
}

TransformerBlock::TransformerBlock(const BlockConfig& cfg, Generator& init_gen,
                                   std::shared_ptr<Generator> rng)
    : config(cfg), rng(std::move(rng)) {
    build(init_gen);
}

TransformerBlock::TransformerBlock(const BlockConfig& cfg) : config(cfg) {
    Generator gen(cfg.init_seed);
    build(gen);
}

void TransformerBlock::build(Generator& init_gen) {
    const BlockConfig& c = config;
    const int64_t dim = c.attn.dim;
    EMBER_CHECK(c.dropout >= 0 && c.dropout < 1, "TransformerBlock: dropout must lie in [0, 1), got ",
                c.dropout);
    EMBER_CHECK(c.dropout == 0 || rng, "TransformerBlock: dropout ", c.dropout, " needs an rng generator");
    auto make_norm = [&]() -> std::shared_ptr<Module> {
        if (c.norm == NormKind::RMSNorm) return std::make_shared<RMSNorm>(dim, c.norm_eps);
        return std::make_shared<LayerNorm>(dim, c.norm_eps, c.norm_bias);
    };
    ln1 = make_norm();
    attn = std::make_shared<MultiHeadAttention>(c.attn, init_gen, rng);
    ln2 = make_norm();
    const int64_t hidden = c.hidden > 0 ? c.hidden : 4 * dim;
    if (c.mlp == MlpKind::SwiGLU)
        mlp = std::make_shared<SwiGLU>(dim, hidden, c.mlp_bias, init_gen, c.swiglu_names);
    else  // the block applies the residual dropout itself, so the MLP gets none
        mlp = std::make_shared<MLP>(dim, hidden, c.act, c.mlp_bias, 0.0, nullptr, init_gen, c.mlp_names);

    register_module(c.names.ln1, ln1);
    register_module(c.names.attn, attn);
    register_module(c.names.ln2, ln2);
    register_module(c.names.mlp, mlp);
    register_module("adapter_attn_pre", adapter_attn_pre);
    register_module("adapter_attn_post", adapter_attn_post);
    register_module("adapter_mlp_pre", adapter_mlp_pre);
    register_module("adapter_mlp_post", adapter_mlp_post);
    register_module("adapter_mlp_parallel", adapter_mlp_parallel);
}

Tensor TransformerBlock::forward(const Tensor& x_in, const AttentionInputs& in) {
    auto residual_dropout = [&](const Tensor& t) {
        return (is_training() && config.dropout > 0) ? dropout(t, config.dropout, *rng, true) : t;
    };
    Tensor x = x_in;  // (B, T, C)

    SiteInputs s{x, ln1->forward(x), Tensor()};
    Tensor h = call_site(adapter_attn_pre, s, s.normed);
    s.output = residual_dropout(attn->forward(h, in));
    x = x + call_site(adapter_attn_post, s, s.output);

    s = {x, ln2->forward(x), Tensor()};
    Tensor hm = call_site(adapter_mlp_pre, s, s.normed);
    s.output = residual_dropout(mlp->forward(hm));
    Tensor m = call_site(adapter_mlp_post, s, s.output);
    if (adapter_mlp_parallel) m = m + call_site(adapter_mlp_parallel, s, s.normed);
    return x + m;
}

}  // namespace nn
}  // namespace ember
