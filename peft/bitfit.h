// BitFit (Ben Zaken et al., ACL 2022): fine-tune only the bias terms of the model, add nothing.
//
// The reference (benzakenelad/BitFit, glue_evaluator.py with --bias-terms all) trains every
// parameter whose name holds "bias": the attention and MLP projections' biases and the LayerNorm
// biases (here: every parameter named "bias" or "*.bias"). The method is a parameter tuner: the
// base model's biases train in place, no copy is made, so disabling or deleting the adapter does
// not undo them. Merging is the identity (the biases are the model's own); the forward pass is
// the base model's, so the adapter is a no-op until trained.
//
// GPT-2 small: 12 x (2304 + 768 + 3072 + 768 + 2 x 768) + 768 (ln_f) = 102,144 biases; ViT-B/16:
// the same per layer, plus the final LayerNorm's and the patch projection's, = 102,912 (plus the
// classifier's, a task head).
//
// peft has no BitFit, so the files are Ember's, in peft's layout: adapter_model.safetensors holds
// every bias as "base_model.model.<name>", adapter_config.json peft's shared keys with peft_type
// "BITFIT". exclude_modules (a module name or regex, as for peft's targets) keeps a module's bias
// frozen.
#pragma once

#include <memory>
#include <string>

#include "peft/config.h"

namespace ember {
namespace peft {

class BitFitConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "BITFIT"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<BitFitConfig>(*this); }
    std::string to_json() const override;
    static BitFitConfig from_json(const std::string& text);
    bool trains_base_parameter(const std::string& name, const nn::Module& owner, bool in_target) const override;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> bitfit_from_json(const std::string& text);
std::shared_ptr<PeftConfig> bitfit_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
