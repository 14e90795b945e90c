// A pre-norm transformer block with five adapter sites, the shape GPT-2, LLaMA and ViT share:
//
//   h  = ln1(x)                       ; normed attention input
//   h  = adapter_attn_pre(h)          ; if set
//   a  = attn(h, inputs)
//   a  = dropout(a)                   ; residual dropout
//   a  = adapter_attn_post(a)         ; if set (includes its own residual, if it has one)
//   x  = x + a
//   h  = ln2(x)                       ; normed MLP input
//   hm = adapter_mlp_pre(h)           ; if set, else h
//   m  = mlp(hm)
//   m  = dropout(m)                   ; residual dropout
//   m  = adapter_mlp_post(m)          ; if set
//   m  = m + adapter_mlp_parallel(h)  ; if set: fed the normed input h (before the pre site)
//   x  = x + m
//
// Sites are child slots typed std::shared_ptr<Module>, null (and skipped, and absent from the
// parameter list) until a PEFT method sets them with replace_submodule("adapter_mlp_post", m).
// A plain Module at a site is called with the tensor written above; a SiteModule gets every
// tensor of the sublayer (SiteInputs) and returns the same thing, so each published adapter
// placement can be written exactly (Houlsby and Pfeiffer read the sublayer output; AdaptFormer
// reads the residual stream; a parallel adapter reads the normed input).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/attention.h"

namespace ember {
namespace nn {

// What a site sees of its sublayer (attention or MLP). residual: the stream entering the
// sublayer (x); normed: its normed input (ln(x)); output: the sublayer's output after residual
// dropout (undefined at a *_pre site, which runs before the sublayer).
struct SiteInputs {
    Tensor residual, normed, output;
};

// A module written for a site: forward_site returns what the site replaces -- the normed input at
// a *_pre site, the sublayer output at a *_post site, the term added at a *_parallel site.
class SiteModule : public Module {
public:
    virtual Tensor forward_site(const SiteInputs& in) = 0;
};

// The five site names, in block order.
const std::vector<std::string>& site_names();
// Calls the module at a site (null: `value` unchanged). A SiteModule gets `in`, another module
// `value` (the tensor the site replaces, as in the diagram above).
Tensor call_site(const std::shared_ptr<Module>& site, const SiteInputs& in, const Tensor& value);

// Implemented by every module that has the five site slots (nn::TransformerBlock, ViT's layer),
// so PEFT methods find blocks without knowing the model: dim is the residual stream's width.
class HasAdapterSites {
public:
    virtual ~HasAdapterSites() = default;
    virtual int64_t site_dim() const = 0;
};

enum class NormKind { LayerNorm, RMSNorm };
enum class MlpKind { Mlp, SwiGLU };  // fc -> act -> proj (GPT-2, ViT), or LLaMA's gated SiLU

struct BlockNames {
    std::string ln1 = "ln_1", attn = "attn", ln2 = "ln_2", mlp = "mlp";  // GPT-2's
    // LLaMA: "input_layernorm", "self_attn", "post_attention_layernorm", "mlp"
};

struct BlockConfig {
    NormKind norm = NormKind::LayerNorm;
    double norm_eps = 1e-5;
    bool norm_bias = true;  // LayerNorm only
    AttentionConfig attn;
    MlpKind mlp = MlpKind::Mlp;
    int64_t hidden = 0;  // MLP hidden size; 0 = 4 * dim
    Activation act = Activation::GeluTanh;  // Mlp only
    bool mlp_bias = true;
    double dropout = 0;  // residual dropout after attention and after the MLP
    BlockNames names;
    MLPNames mlp_names;        // GPT-2: {"c_fc", "c_proj"}
    SwiGLUNames swiglu_names;  // LLaMA's by default
    uint64_t init_seed = 0;    // for the constructor without a generator
};

class TransformerBlock : public Module, public HasAdapterSites {
public:
    // rng drives residual and attention dropout (needed when either is > 0).
    TransformerBlock(const BlockConfig& config, Generator& init_gen,
                     std::shared_ptr<Generator> rng = nullptr);
    // Initializes from Generator(config.init_seed).
    explicit TransformerBlock(const BlockConfig& config);
    std::string type_name() const override { return "TransformerBlock"; }

    Tensor forward(const Tensor& x, const AttentionInputs& in);  // (B, T, C) -> (B, T, C)
    Tensor forward(const Tensor& x) override { return forward(x, AttentionInputs{}); }
    int64_t site_dim() const override { return config.attn.dim; }

    BlockConfig config;
    std::shared_ptr<Module> ln1, ln2, mlp;
    std::shared_ptr<MultiHeadAttention> attn;
    std::shared_ptr<Module> adapter_attn_pre, adapter_attn_post, adapter_mlp_pre, adapter_mlp_post,
        adapter_mlp_parallel;
    std::shared_ptr<Generator> rng;

private:
    void build(Generator& init_gen);
};

}  // namespace nn
}  // namespace ember
