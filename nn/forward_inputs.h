// Per-forward inputs: tensors a forward pass takes beyond the ids or images, supplied by a module
// the model holds rather than passed by its caller -- prompt tuning's virtual tokens, prefix
// tuning's per-layer keys and values (and, later, an adapter id per batch row). A model that
// takes them (models::GPT, models::ViT) implements TakesForwardInputs: it has a child slot
// "prompt_encoder" for a ForwardInputs module, asks it on every forward pass, and honours what it
// gives, in generation with and without the KV cache too. The caller calls the model as usual.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace ember {
namespace nn {

// What a model tells the modules that supply its inputs.
struct ForwardShape {
    int64_t dim = 0;              // the residual stream's width (token_dim)
    int64_t layers = 0;           // blocks with attention
    int64_t heads = 0, kv_heads = 0, head_dim = 0;
    Tensor word_embeddings;       // (V, C) token embedding table; undefined for models without one
    int64_t patch_fan_in = 0;     // vision models: the patch projection's fan-in C * P * P; else 0
    // The model's own generator for dropout draws, which training checkpoints hold with it; null
    // if it has none.
    std::shared_ptr<Generator> dropout_rng;
};

// One forward pass's inputs, filled by ForwardInputs::supply.
struct ForwardContext {
    int64_t batch = 0;
    // (1 or B, P, C): embeddings put before the token embeddings. The model computes them at
    // positions 0..P-1, the real tokens after them, and returns outputs for the real tokens only.
    // ViT puts them after its [CLS] token, with no position embedding (VPT's "prepend").
    Tensor virtual_tokens;
    // Deep prompts (VPT-deep): empty, or one (1 or B, P, C) per layer after the first; before
    // layer l >= 1 they replace the outputs of the P virtual-token slots of layer l - 1, so no
    // layer sees what the previous one made of its prompts. Needs virtual_tokens of the same P.
    std::vector<Tensor> layer_tokens;
    // Per layer (k, v), each (1 or B, Hkv, P, D): keys and values every query also attends to
    // (never masked, no positions of their own). Empty, or one pair per layer.
    std::vector<std::pair<Tensor, Tensor>> layer_prefixes;

    // Adds virtual tokens after those already there.
    void add_virtual_tokens(const Tensor& t);
    // Adds prefix keys and values after those already there (per layer).
    void add_layer_prefixes(const std::vector<std::pair<Tensor, Tensor>>& prefixes);
};

class ForwardInputs : public Module {
public:
    virtual void supply(ForwardContext& ctx) = 0;
    // How many virtual tokens supply() adds (generation leaves room for them in the context).
    virtual int64_t virtual_token_count() const { return 0; }
};

class TakesForwardInputs {
public:
    virtual ~TakesForwardInputs() = default;
    virtual ForwardShape forward_shape() const = 0;
};

}  // namespace nn
}  // namespace ember
