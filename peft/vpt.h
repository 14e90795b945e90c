// VPT, visual prompt tuning (Jia et al., "Visual Prompt Tuning", ECCV 2022), shallow and deep, as
// the authors' code does it (KMnP/vpt src/models/vit_prompt/vit.py):
//
//   shallow   x0 = [CLS ; dropout(P) ; patches]            P (p, d), after the position embeddings
//   deep      before layer l >= 1: h = [h_CLS ; dropout(P_l) ; h_patches]
//             (the p prompt outputs of layer l - 1 are thrown away, not passed on)
//
// and the [CLS] output feeds the head. The model's side is nn::ForwardContext's virtual_tokens
// (ViT puts them after [CLS]) and layer_tokens (deep prompts). Init: U(-v, v) with
// v = sqrt(6 / (fan_in + d)), fan_in the patch projection's C * P * P (the authors write
// 3 * patch_h * patch_w for RGB: v = 0.0625 on ViT-B/16). Defaults (src/configs/config.py):
// 5 tokens, not deep, dropout 0, no projection (PROJECT -1, which is all Ember offers).
//
// Not in Hugging Face peft: the file is Ember's own, in peft's layout -- adapter_config.json with
// peft_type "VPT" and the keys below, and adapter_model.safetensors with the authors' tensor names
// prompt_embeddings (1, p, d) and deep_prompt_embeddings (L - 1, p, d). Not mergeable (the prompts
// are extra tokens). Counts: p d shallow, L p d deep (ViT-B: 38,400 shallow p = 50; 92,160 deep
// p = 10; 460,800 deep p = 50), plus the head when it is trained.
//
// The authors keep the frozen backbone in eval mode while training (its dropout off); Ember's ViT
// examples train with dropout 0, where the two agree. Deep prompts need a model that takes them:
// ViT does, GPT refuses them.
#pragma once

#include <memory>
#include <string>

#include "peft/prompts.h"

namespace ember {
namespace peft {

class VptConfig : public PromptLearningConfig {
public:
    std::string peft_type() const override { return "VPT"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<VptConfig>(*this); }
    std::string to_json() const override;
    static VptConfig from_json(const std::string& text);
    std::shared_ptr<PromptModule> make_forward_inputs(const nn::ForwardShape& shape, Generator& init_gen) const override;

    bool deep = false;
    double prompt_dropout = 0;  // on the prompts, in training
};

class VisualPrompts : public PromptModule {
public:
    // layers: 1 (shallow) or the model's layer count (deep); rng draws the dropout masks.
    VisualPrompts(int64_t n, int64_t dim, int64_t layers, double dropout, double init_bound, Generator& init_gen,
                  std::shared_ptr<Generator> rng);
    std::string type_name() const override { return "VisualPrompts"; }
    void supply(nn::ForwardContext& ctx) override;
    int64_t virtual_token_count() const override { return prompt_embeddings.size(1); }
    nn::StateDict saved_tensors() const override;

    Tensor prompt_embeddings;       // (1, p, d)
    Tensor deep_prompt_embeddings;  // (L - 1, p, d); undefined when shallow

private:
    double dropout_;
    std::shared_ptr<Generator> rng_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> vpt_from_json(const std::string& text);
std::shared_ptr<PeftConfig> vpt_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
