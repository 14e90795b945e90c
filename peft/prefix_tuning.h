// Prefix tuning (Li & Liang, 2021), as peft's tuners/prefix_tuning: every layer's attention also
// attends to n learned keys and values,
//   K_l = [P_k,l ; X W_k],  V_l = [P_v,l ; X W_v]      queries unchanged, prefix slots never masked
// held as one matrix E (n, 2 L Hkv D) read as (n, 2L, Hkv, D): slot 2l is layer l's keys, 2l + 1
// its values (peft's past_key_values view and permute; Hkv = the key/value heads, for GQA). The
// real tokens keep positions 0..T-1 (the prefix has none). With prefix_projection (the paper's
// reparameterisation) training learns E' (n, d) and an MLP instead,
//   E = Linear(m, 2 L Hkv D)(tanh(Linear(d, m)(E')))      m = encoder_hidden_size (0: d)
// and the files hold E computed from it (peft saves the folded prefix; the MLP is dropped), so an
// adapter loads for inference as a plain E. Init: N(0, 1) embeddings (torch's nn.Embedding,
// as peft), torch's Linear defaults. Not mergeable.
//
// Files (peft's PREFIX_TUNING): one tensor "prompt_embeddings" (n, 2 L Hkv D); adapter_config.json
// with PrefixTuningConfig's keys. Counts on GPT-2 small, n = 20: 368,640 (raw), 9,864,704 while
// training with m = 512.
#pragma once

#include <memory>
#include <string>

#include "nn/layers.h"
#include "peft/prompts.h"

namespace ember {
namespace peft {

class PrefixTuningConfig : public PromptLearningConfig {
public:
    std::string peft_type() const override { return "PREFIX_TUNING"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<PrefixTuningConfig>(*this); }
    std::string to_json() const override;
    static PrefixTuningConfig from_json(const std::string& text);
    std::shared_ptr<PromptModule> make_forward_inputs(const nn::ForwardShape& shape, Generator& init_gen) const override;

    bool prefix_projection = false;
    int64_t encoder_hidden_size = 0;  // m; 0: token_dim (peft's default)
};

// E or (E', MLP): embedding.weight, and with the projection transform.0 / transform.2 (peft's
// PrefixEncoder names).
class PrefixEncoder : public PromptModule {
public:
    PrefixEncoder(const nn::ForwardShape& shape, int64_t n, bool projection, int64_t hidden, Generator& init_gen);
    std::string type_name() const override { return "PrefixEncoder"; }
    void supply(nn::ForwardContext& ctx) override;
    nn::StateDict saved_tensors() const override;
    Tensor prefix() const;  // E (n, 2 L Hkv D), computed through the MLP when there is one

    std::shared_ptr<nn::Embedding> embedding;
    std::shared_ptr<nn::Module> transform;  // null without the projection
    std::shared_ptr<nn::Linear> fc1, fc2;

private:
    int64_t layers_, kv_heads_, head_dim_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> prefix_tuning_from_json(const std::string& text);
std::shared_ptr<PeftConfig> prefix_tuning_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
