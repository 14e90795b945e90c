// Per-forward inputs from PEFT methods (prompt tuning, prefix tuning, later P-tuning and VPT): the
// method's module per adapter, held in the model's prompt_encoder slot (nn/forward_inputs.h)
// inside a PromptAdapters, which asks the active adapters on every forward pass.
//
// Names follow peft's: in memory "prompt_encoder.<adapter>.embedding.weight" (peft's
// prompt_encoder.default.embedding.weight); in files the tensors a method saves, by the keys it
// gives (peft's prompt-learning methods save one tensor, "prompt_embeddings", without the
// "base_model.model." prefix).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/forward_inputs.h"
#include "nn/state_dict.h"
#include "peft/config.h"

namespace ember {
namespace peft {

// peft's PromptLearningConfig: what prompt-learning methods share. fill_from_model records the
// model's sizes (peft's _prepare_prompt_learning_config); target_modules and the other tuner
// keys do not apply and are not written.
class PromptLearningConfig : public PeftConfig {
public:
    void fill_from_model(const nn::ForwardShape& shape) override;

    int64_t num_virtual_tokens = 0;  // required: > 0
    int64_t token_dim = 0;           // 0: the model's width
    int64_t num_transformer_submodules = 1;  // 1 for decoder-only and encoder-only models
    int64_t num_attention_heads = 0, num_layers = 0;  // 0: the model's

protected:
    nlohmann::json prompt_learning_json() const;  // peft's keys, with "peft_type"
    void read_prompt_learning(const nlohmann::json& j);
};

// A method's per-forward module.
class PromptModule : public nn::ForwardInputs {
public:
    // What the adapter file holds, by peft's keys. Loading copies the file into these tensors, so a
    // module whose saved tensor is computed (prefix tuning's reparameterisation) cannot be loaded
    // into; PeftModel then says so.
    virtual nn::StateDict saved_tensors() const = 0;
};

class PromptAdapters : public nn::ForwardInputs {
public:
    std::string type_name() const override { return "PromptAdapters"; }
    void supply(nn::ForwardContext& ctx) override;  // the active adapters', in activation order
    int64_t virtual_token_count() const override;

    void set(const std::string& adapter, std::shared_ptr<PromptModule> m);  // null removes it
    std::shared_ptr<PromptModule> get(const std::string& adapter) const;   // null if absent
    std::vector<std::string> adapter_names() const;
    bool empty() const { return adapter_names().empty(); }
    void set_active(const std::vector<std::string>& names) { active_ = names; }
    void set_disabled(bool on) { disabled_ = on; }

private:
    std::map<std::string, std::shared_ptr<nn::Module>> slots_;  // map nodes never move
    std::vector<std::string> active_;
    bool disabled_ = false;
};

}  // namespace peft
}  // namespace ember
