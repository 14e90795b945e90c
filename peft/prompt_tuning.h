// Prompt tuning (Lester et al., 2021), as peft's tuners/prompt_tuning: n learned embeddings
// P (n, d) put before the token embeddings of every input,
//   x = [P ; Embed(ids)]    (B, n + T, d)
// with everything else frozen (the embedding table too). The virtual tokens take positions
// 0..n-1 and the model returns logits for the real tokens only. Init (prompt_tuning_init): RANDOM
// draws N(0, 1) (torch's nn.Embedding default, as peft); TEXT takes the embeddings of the
// tokenizer's ids of prompt_tuning_init_text, repeated to fill n and cut there (peft's
// PromptEmbedding); SAMPLE_VOCAB the embeddings of n ids drawn uniformly from the vocabulary.
// peft tokenizes the text itself (tokenizer_name_or_path); here the caller gives the ids
// (init_token_ids, e.g. from models::Tokenizer), and the text is written to the file as peft does.
//
// Files (peft's PROMPT_TUNING): one tensor "prompt_embeddings" (n, d); adapter_config.json with
// PromptTuningConfig's keys. Not mergeable. Count: n d, 15,360 for n = 20 on GPT-2 small.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "peft/prompts.h"

namespace ember {
namespace peft {

class PromptTuningConfig : public PromptLearningConfig {
public:
    std::string peft_type() const override { return "PROMPT_TUNING"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<PromptTuningConfig>(*this); }
    std::string to_json() const override;
    static PromptTuningConfig from_json(const std::string& text);
    std::shared_ptr<PromptModule> make_forward_inputs(const nn::ForwardShape& shape, Generator& init_gen) const override;

    std::string prompt_tuning_init = "RANDOM";  // "RANDOM", "TEXT", "SAMPLE_VOCAB"
    std::string prompt_tuning_init_text;        // TEXT: written to the file
    std::vector<int64_t> init_token_ids;        // TEXT: the tokenizer's ids of that text (not saved)
    std::string tokenizer_name_or_path;         // written for peft ("" = null)
};

// The virtual tokens: embedding.weight (n, d), peft's prompt_encoder.<adapter>.embedding.weight.
class PromptEmbedding : public PromptModule {
public:
    PromptEmbedding(int64_t n, int64_t dim, Generator& init_gen);
    std::string type_name() const override { return "PromptEmbedding"; }
    void supply(nn::ForwardContext& ctx) override;
    int64_t virtual_token_count() const override { return embedding->num_embeddings; }
    nn::StateDict saved_tensors() const override;

    std::shared_ptr<nn::Embedding> embedding;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> prompt_tuning_from_json(const std::string& text);
std::shared_ptr<PeftConfig> prompt_tuning_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
