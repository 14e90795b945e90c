// PEFT configs: what a method is told, in Hugging Face peft's names and defaults, and how that
// becomes adapter_config.json.
//
// PeftConfig holds what every method shares (which modules to adapt, which to train fully, the
// task); each method adds its own fields (LoraConfig: r, lora_alpha, ...). to_json() writes every
// key peft's dataclass has, with the same names, so peft can read the file; from_json() reads
// the keys Ember understands, takes peft's defaults for missing ones, and ignores the rest.
//
// target_modules (section 8.3 of the spec) is a list of names or one regex string:
//   cfg.target_modules = {"c_attn"};           // a list: full name or a ".c_attn" suffix
//   cfg.target_modules = ".*\\.(query|value)";  // a string: re.fullmatch over the full name
//   cfg.target_modules = "all-linear";          // every Linear except the output head
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/state_dict.h"

namespace ember {
namespace nn {
class Linear;
}
namespace peft {

class TunerLayer;       // tuner.h
struct AdapterContext;  // peft_model.h

// A list of module names or a single regex, as peft's Union[list[str], str].
struct ModuleSelector {
    std::vector<std::string> names;  // used when !is_regex
    std::string regex;               // used when is_regex
    bool is_regex = false;
    bool is_set = false;  // false: None (use the model type's default, or nothing)

    ModuleSelector() = default;
    ModuleSelector(std::initializer_list<std::string> list) : names(list), is_set(true) {}
    ModuleSelector(std::vector<std::string> list) : names(std::move(list)), is_set(true) {}
    ModuleSelector(const char* pattern) : regex(pattern), is_regex(true), is_set(true) {}
    ModuleSelector(std::string pattern) : regex(std::move(pattern)), is_regex(true), is_set(true) {}

    bool all_linear() const { return is_regex && regex == "all-linear"; }
    std::string describe() const;  // ["a", "b"] or "regex"
};

class PeftConfig {
public:
    virtual ~PeftConfig() = default;
    virtual std::string peft_type() const = 0;  // "LORA", "IA3", "VERA"
    virtual std::shared_ptr<PeftConfig> clone() const = 0;

    // adapter_config.json: every key peft writes for this method (sets as lists).
    virtual std::string to_json() const = 0;

    // ---- how PeftModel applies the method (each method's .cpp implements these) ----
    // A new, adapter-less layer of this method around `base`, and the type_name() such layers
    // have (to refuse stacking another method on a wrapped Linear).
    virtual std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::Linear> base) const = 0;
    virtual std::string layer_type() const = 0;
    // Fills options left unset from peft's per-model-type defaults (target_modules, ...).
    virtual void fill_defaults(const std::string& model_type);
    // Runs once per injected adapter, before its layers are made, with every targeted base
    // Linear: methods that share tensors across layers (VeRA) make them here, in ctx.shared.
    virtual void prepare_shared(const std::vector<std::shared_ptr<nn::Linear>>& /*bases*/,
                                AdapterContext& /*ctx*/) const {}
    // Whether adapter files carry those shared tensors (VeRA: save_projection).
    virtual bool save_shared() const { return true; }
    // Last say over the tensors adapter files hold (peft's per-method state-dict edits; AdaLoRA
    // slices A, E, B to the ranks its rank_pattern keeps). Keys as saved ("base_model.model.").
    virtual void shape_state_dict(nn::StateDict& /*sd*/, const std::string& /*adapter*/) const {}

    // ---- shared by every method (peft's PeftConfig + the tuner's target options) ----
    std::string task_type;                // "CAUSAL_LM", "SEQ_CLS", ... ("" = null)
    std::string base_model_name_or_path;  // "" = null
    std::string revision;                 // "" = null
    bool inference_mode = false;
    ModuleSelector target_modules;  // unset: the model type's default (see default_targets)
    ModuleSelector exclude_modules;
    std::vector<int64_t> layers_to_transform;  // empty: every layer
    std::string layers_pattern;                // "" = null: the first numeric segment
    std::vector<std::string> modules_to_save;  // trained fully (e.g. "classifier")
    bool fan_in_fan_out = false;  // set to true by PeftModel for GPT-2's Conv1D layers (spec §9.1)
};

// LoRA and its options (spec §3.1); DoRA is use_dora (spec §7.2).
class LoraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "LORA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<LoraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::Linear> base) const override;
    std::string layer_type() const override;
    static LoraConfig from_json(const std::string& text);

    int64_t r = 8;
    double lora_alpha = 8;
    double lora_dropout = 0;
    std::string bias = "none";  // "none", "all", "lora_only"
    bool use_rslora = false;    // scale alpha / sqrt(r) instead of alpha / r
    bool use_dora = false;
    // true: A kaiming-uniform(a = sqrt 5), B zero; "gaussian": A ~ N(0, 1/r); false: B random too
    // (not a no-op; for tests).
    std::string init_lora_weights = "true";
    std::map<std::string, int64_t> rank_pattern;   // regex-suffix key -> r
    std::map<std::string, double> alpha_pattern;   // regex-suffix key -> alpha
};

// (IA)^3 (spec §7.1).
class IA3Config : public PeftConfig {
public:
    std::string peft_type() const override { return "IA3"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<IA3Config>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::Linear> base) const override;
    std::string layer_type() const override;
    static IA3Config from_json(const std::string& text);

    // Unset: the model type's default. A feedforward module scales its input, others their output;
    // each must also be a target.
    ModuleSelector feedforward_modules;
    bool init_ia3_weights = true;
    void fill_defaults(const std::string& model_type) override;  // feedforward_modules too
};

// VeRA (spec §3.7).
class VeraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "VERA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<VeraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::Linear> base) const override;
    std::string layer_type() const override;
    static VeraConfig from_json(const std::string& text);

    int64_t r = 256;
    double vera_dropout = 0;
    double d_initial = 0.1;
    uint64_t projection_prng_key = 0;
    bool save_projection = true;
    std::string bias = "none";
    void prepare_shared(const std::vector<std::shared_ptr<nn::Linear>>& bases, AdapterContext& ctx) const override;
    bool save_shared() const override { return save_projection; }
};

// Reads any of the configs above from adapter_config.json text (by its peft_type).
std::shared_ptr<PeftConfig> config_from_json(const std::string& text);

}  // namespace peft
}  // namespace ember
