// LongLoRA (Chen et al., ICLR 2024): context extension by LoRA on the attention projections, the
// embeddings and every norm trained in full, and shifted sparse attention (S2-Attn) in training.
//
//   LoRA      r 8, alpha 16 (s = 2), dropout 0, on q, k, v, o (LLaMA's q_proj, k_proj, v_proj,
//             o_proj; GPT-2's c_attn and attn.c_proj) -- the ordinary LoRA layers, so merging is
//             LoRA's (LongLoRA's fine-tune.py)
//   trained   every parameter whose name holds "embed" or "norm" (fine-tune.py's
//             trainable_params "embed,norm"), and, for dialects whose names hold neither (GPT-2's
//             wte, wpe, ln_*), every parameter of an Embedding, LayerNorm or RMSNorm. They train in
//             place through the parameter tuner, no copies.
//   S2-Attn   switched on in every nn::MultiHeadAttention of the model when the adapter is
//             attached for training: groups of group_size_ratio * T tokens, half the heads
//             shifted by half a group, in the no-wrap form (shift_roll picks the roll form);
//             attention in eval mode stays full, as LongLoRA infers.
//   positions linear position interpolation, factor = ceil(new context / old) (fine-tune.py),
//             through the model's RoPE scaling: models::interpolate_positions (models/context.h).
//
// Files: PeftModel::save_pretrained writes Ember's own adapter (peft_type "LONGLORA", the LoRA
// and the embed/norm tensors in one adapter_model.safetensors). save_longlora writes LongLoRA's
// layout instead, which peft and LongLoRA's merge_lora_weights_and_save_hf_model.py read: a plain
// LoRA adapter (adapter_config.json with peft_type "LORA", adapter_model.safetensors) and beside
// it trainable_params.safetensors with the embed/norm tensors under the base model's own names
// (LongLoRA's get_trainable_weights.py strips "base_model.model." into trainable_params.bin).
#pragma once

#include <memory>
#include <string>

#include "peft/lora.h"
#include "peft/peft_model.h"

namespace ember {
namespace peft {

class LongLoraConfig : public LoraConfig {
public:
    LongLoraConfig() { r = 8, lora_alpha = 16; }
    std::string peft_type() const override { return "LONGLORA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<LongLoraConfig>(*this); }
    std::string to_json() const override;
    static LongLoraConfig from_json(const std::string& text);
    // q, k, v, o of the model type ("llama", "gpt2"); checks the S2-Attn options.
    void fill_defaults(const std::string& model_type) override;
    // LoRA's bias option, plus the embeddings and norms.
    bool trains_base_parameter(const std::string& name, const nn::Module& owner, bool in_target) const override;
    // Switches S2-Attn on in the model's attention layers (unless inference_mode), the point
    // where a method first meets the model; no training hooks, so it returns null.
    std::shared_ptr<Controller> make_controller(PeftModel& pm, const std::string& adapter,
                                                uint64_t seed) const override;
    // The LoRA part alone, as peft's LoraConfig (LongLoRA's saved adapter_config.json).
    LoraConfig lora_part() const;

    bool use_s2_attn = true;
    double group_size_ratio = 0.25;  // G = int(T * ratio)
    bool shift_roll = false;         // the wrap-around roll form instead of the no-wrap segments
};

// Sets (ratio > 0) or clears (ratio 0) S2-Attn in every nn::MultiHeadAttention under `model`;
// returns how many it changed.
int64_t set_shifted_sparse_attention(nn::Module& model, double ratio, bool roll = false);

// LongLoRA's files (see above) for adapter `adapter` of a LongLoRA PeftModel, and back.
void save_longlora(const PeftModel& pm, const std::string& dir, const std::string& adapter = "default");
// Copies trainable_params.safetensors into `model` and attaches the LoRA adapter: frozen for
// inference unless is_trainable (then the embeddings and norms train again and S2-Attn is on).
std::unique_ptr<PeftModel> load_longlora(std::shared_ptr<nn::Module> model, const std::string& dir,
                                         bool is_trainable = false, const std::string& model_type = "");
// load_longlora, then merge_and_unload: a plain model with the LoRA deltas in its weights and
// the trained embeddings and norms in place (merge_lora_weights_and_save_hf_model.py).
std::shared_ptr<nn::Module> merge_longlora(std::shared_ptr<nn::Module> model, const std::string& dir);

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> longlora_from_json(const std::string& text);
std::shared_ptr<PeftConfig> longlora_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
