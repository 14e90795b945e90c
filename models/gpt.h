// GPT: a decoder-only transformer language model in two dialects.
//
//   GPT-2 style  learned positions, LayerNorm, GELU MLP, fused QKV with biases, tied lm_head;
//                parameters named as Hugging Face's GPT2LMHeadModel (transformer.h.0.attn.c_attn...)
//   LLaMA style  RoPE, RMSNorm, SwiGLU, no biases, separate q/k/v/o, grouped-query attention;
//                parameters named as Hugging Face's LlamaForCausalLM (model.layers.0.self_attn.q_proj...)
//
// In memory every projection is an nn::Linear with weight (out, in). GPT-2's checkpoints store
// its Conv1D weights as (in, out); hf_state_dict() and load_hf_state_dict() transpose them at the
// file boundary, so a GPT-2 file loads as it is and is written back byte for byte.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/containers.h"
#include "nn/forward_inputs.h"
#include "nn/transformer.h"
#include "tensor/bf16.h"

namespace ember {
namespace models {

struct GPTConfig {
    enum class Style { GPT2, Llama };
    Style style = Style::GPT2;
    int64_t vocab_size = 256;
    int64_t context = 256;    // n_positions / max_position_embeddings
    int64_t dim = 128;        // n_embd / hidden_size
    int64_t layers = 4, heads = 4;
    int64_t kv_heads = 0;     // 0: as many as heads (LLaMA's num_key_value_heads)
    int64_t hidden = 0;       // MLP width; 0: 4 * dim (GPT-2); LLaMA files always give it
    double dropout = 0;       // embeddings, attention probabilities and residual branches
    double norm_eps = 1e-5;
    double rope_theta = 10000;    // LLaMA
    nn::RopeScaling rope_scaling; // LLaMA: a window longer than trained (models/context.h)
    bool tie_embeddings = true;                 // lm_head shares the token embedding

    static GPTConfig gpt2(int64_t vocab, int64_t context, int64_t dim, int64_t layers, int64_t heads);
    static GPTConfig llama(int64_t vocab, int64_t context, int64_t dim, int64_t layers, int64_t heads,
                           int64_t kv_heads, int64_t hidden);
    // Hugging Face config.json of a gpt2 or llama model, and back.
    static GPTConfig from_hf_json(const std::string& json_text);
    std::string to_hf_json() const;
    // Throws an ember::Error naming the field and the fix unless every size is positive, dim
    // divides into heads, and the rates and epsilons are in range. The constructor calls it.
    void validate() const;
    double parameter_count() const;  // what the constructor will allocate, in parameters
    int64_t mlp_hidden() const { return hidden > 0 ? hidden : 4 * dim; }
};

// Optional inputs of one forward pass.
struct GPTInputs {
    Tensor key_padding;                       // (B, T) or (B, T_cached + T): 1 real, 0 pad
    std::vector<nn::KVCache>* caches = nullptr;  // one per layer, for generation
    int64_t position_offset = 0;              // position of ids[:, 0] (= cached length)
    // Prefix tuning: per layer (k, v) of shape (B or 1, Hkv, P, D), prepended inside attention.
    std::vector<std::pair<Tensor, Tensor>> layer_prefixes;
    // Prompt tuning: (B or 1, P, C) embeddings put before the token embeddings. Its positions
    // come first, so the logits gain P leading rows.
    Tensor prefix_embeds;
};

// Per-forward inputs (nn/forward_inputs.h): when the slot prompt_encoder holds a module (a PEFT
// prompt method's), every forward pass asks it for virtual tokens and layer prefixes. Virtual
// tokens take positions 0..P-1 and the logits cover the real tokens only; with the KV cache they
// are fed once, with the cache's first chunk, and stay in it.
class GPT : public nn::Module, public nn::TakesForwardInputs {
public:
    GPT(const GPTConfig& config, uint64_t seed);
    std::string type_name() const override { return "GPT"; }

    Tensor forward_ids(const Tensor& ids /*(B, T) i64*/, const GPTInputs& in = {});  // -> logits (B, T, V)
    Tensor forward(const Tensor& ids) override { return forward_ids(ids); }
    Tensor hidden_states(const Tensor& ids, const GPTInputs& in = {});  // final normed (B, T, C)
    Tensor embed(const Tensor& ids);      // token embeddings (B, T, C)
    Tensor lm_head_weight() const;        // (V, C): the token embedding when tied

    // Hugging Face names and layouts (GPT-2's Conv1D weights as (in, out)).
    nn::StateDict hf_state_dict() const;
    void load_hf_state_dict(const nn::StateDict& sd, bool strict = true);
    // A folder with model.safetensors and config.json, as Hugging Face writes them.
    void save_pretrained(const std::string& dir) const;
    static std::shared_ptr<GPT> from_pretrained(const std::string& dir, uint64_t seed = 0);

    nn::TransformerBlock& block(size_t i) const { return *(*blocks)[i]; }
    size_t num_blocks() const { return blocks->size(); }

    // bf16 weights for adapter training on the CPU (nn/bf16_linear.h). Every Linear of the body
    // becomes a frozen Bf16Linear, and the head's product runs on a bf16 copy of its weight (the
    // token embedding when tied, which stays f32 for the lookup). Call it before a PEFT method
    // attaches (afterwards it would cast the adapters' own Linears too). The head's weight must
    // then stay frozen, as LoRA leaves it: the copy does not follow it, so a forward that records
    // a graph refuses to run while that weight requires a gradient (one under NoGradGuard runs).
    // Returns the number of Linears cast.
    int cast_to_bf16();
    bool bf16_head() const { return head_bf16_ != nullptr; }

    nn::ForwardShape forward_shape() const override;
    // Positions left for real tokens: the context less the prompt encoder's virtual tokens.
    int64_t token_context() const;

    GPTConfig config;
    std::shared_ptr<nn::ForwardInputs> prompt_encoder;  // null: no per-forward inputs
    std::shared_ptr<Generator> rng;  // dropout draws; saved in training checkpoints

private:
    // The final normed hidden states and the number of virtual tokens at their start.
    Tensor hidden(const Tensor& ids, const GPTInputs& in, int64_t& virtual_tokens);
    // The body's children, named per dialect (see the constructor).
    class Body;
    std::shared_ptr<Body> body;
    std::shared_ptr<nn::ModuleList<nn::TransformerBlock>> blocks;  // alias of body's list
    std::shared_ptr<nn::Linear> lm_head;                            // null when tied
    std::shared_ptr<const Bf16Weight> head_bf16_;                   // set by cast_to_bf16
};

// Names of GPT-2's Conv1D weights, stored (in, out) in its files.
bool is_gpt2_conv1d_weight(const std::string& name);

}  // namespace models
}  // namespace ember
