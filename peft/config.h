// PEFT configs: what a method is told, in Hugging Face peft's names and defaults, and how that
// becomes adapter_config.json.
//
// PeftConfig holds what every method shares (which modules to adapt, which to train fully, the
// task); each method's own header adds its fields (LoraConfig in lora.h: r, lora_alpha, ...) and
// says what it attaches (the virtuals below). to_json() writes every
// key peft's dataclass has, with the same names, so peft can read the file; from_json() reads
// the keys Ember understands, takes peft's defaults for missing ones, and ignores the rest.
//
// target_modules (peft's tuners_utils.py check_target_module_exists) is a list of names or one
// regex string:
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
#include "tensor/random.h"

namespace ember {
namespace nn {
class Linear;
class LinearBase;
class Module;
class SiteModule;
struct ForwardShape;
}
namespace peft {

class TunerLayer;  // tuner.h
class Controller;    // controller.h
class PromptModule;  // prompts.h
class PeftModel;   // peft_model.h

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
    virtual std::string peft_type() const = 0;  // "LORA", "IA3", "VERA", ...
    virtual std::shared_ptr<PeftConfig> clone() const = 0;

    // adapter_config.json: every key peft writes for this method (sets as lists).
    virtual std::string to_json() const = 0;
    // Fills options left unset from peft's per-model-type defaults (target_modules, ...) and
    // checks the config, as peft's __post_init__ does.
    virtual void fill_defaults(const std::string& /*model_type*/) {}

    // What the method does to the base model before anything attaches (QLoRA quantizes its
    // Linears); nothing by default. PeftModel calls it once per adapter added.
    virtual void prepare_model(nn::Module& /*model*/) const {}

    // ---- what the method attaches: PeftModel handles each kind; a method uses any of them ----
    // Weight tuner: a new, adapter-less layer of this method around a targeted Linear-like base
    // (nn/linear_base.h: a Linear or a quantized Linear), and the
    // type_name() such layers have (to refuse stacking another method on a wrapped Linear).
    // layer_type() "" (the default): the method wraps no Linear and target_modules is unused.
    virtual std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> /*base*/) const { return nullptr; }
    virtual std::string layer_type() const { return ""; }
    // Site modules: the module this method puts at `site` ("adapter_attn_post", ... of
    // nn::TransformerBlock) of a block of width `dim`; null where it puts none.
    virtual std::shared_ptr<nn::SiteModule> make_site_module(const std::string& /*site*/, int64_t /*dim*/,
                                                             Generator& /*init_gen*/) const {
        return nullptr;
    }
    // Per-forward inputs: the module that supplies this method's virtual tokens or layer prefixes
    // to a model that takes them (nn/forward_inputs.h); null for methods that supply none.
    // fill_from_model first records the model's sizes in the config (peft's
    // _prepare_prompt_learning_config: token_dim, num_layers, num_attention_heads).
    virtual void fill_from_model(const nn::ForwardShape& /*shape*/) {}
    virtual std::shared_ptr<PromptModule> make_forward_inputs(const nn::ForwardShape& /*shape*/,
                                                              Generator& /*init_gen*/) const {
        return nullptr;
    }
    // Parameter tuner: whether the method trains the base model's parameter `name` (owned by
    // `owner`) in place, without a copy. in_target: the parameter belongs to a Linear this
    // adapter wraps. Such parameters are saved in the adapter file under their own names.
    virtual bool trains_base_parameter(const std::string& /*name*/, const nn::Module& /*owner*/,
                                       bool /*in_target*/) const {
        return false;
    }
    // Controller: what steers training (step hooks, a loss term, checkpointed state), made once
    // the adapter is attached; null for methods that train plainly.
    virtual std::shared_ptr<Controller> make_controller(PeftModel& /*pm*/, const std::string& /*adapter*/,
                                                        uint64_t /*seed*/) const {
        return nullptr;
    }

    // ---- shared by every method (peft's PeftConfig + the tuner's target options) ----
    std::string task_type;                // "CAUSAL_LM", "SEQ_CLS", ... ("" = null)
    std::string base_model_name_or_path;  // "" = null
    std::string revision;                 // "" = null
    bool inference_mode = false;
    ModuleSelector target_modules;  // unset: the method's default for the model type (fill_defaults)
    ModuleSelector exclude_modules;
    std::vector<int64_t> layers_to_transform;  // empty: every layer
    std::string layers_pattern;                // "" = null: the first numeric segment
    std::vector<std::string> modules_to_save;  // trained fully (e.g. "classifier")
    // Set to true by PeftModel for GPT-2, whose projections are Conv1D (in, out) in its files
    // (peft's dispatch_default sets it for Conv1D); Ember's Linear is (out, in) in memory either way.
    bool fan_in_fan_out = false;
};

// Reads any method's config from adapter_config.json text, by its peft_type (the method table in
// peft/methods.cpp says which class reads which type).
std::shared_ptr<PeftConfig> config_from_json(const std::string& text);

}  // namespace peft
}  // namespace ember
