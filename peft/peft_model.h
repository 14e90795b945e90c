// PeftModel: a model with named adapters -- peft's get_peft_model / PeftModel, as a user sees it.
//
//   auto gpt = std::make_shared<models::GPT>(cfg, 0);
//   peft::LoraConfig lc;  lc.r = 8;  lc.target_modules = {"c_attn"};
//   peft::PeftModel pm(gpt, lc);          // wraps the targets in place, freezes the rest
//   pm.print_trainable_parameters();      // trainable params: 294,912 || all params: ...
//   ... train gpt as usual (its parameters() now include the adapters) ...
//   pm.save_pretrained("out/");           // adapter_model.safetensors + adapter_config.json
//
// The model is changed in place (as get_peft_model does) and every parameter not belonging to an
// active adapter or to modules_to_save is frozen. Call the model itself for forward passes.
//
// A method attaches through the kinds its config declares (peft/config.h); PeftModel knows how to
// attach, freeze, count, save, load, merge and remove each kind and never names a method:
//   weight tuner     each targeted Linear slot holds the method's TunerLayer, with the Linear as
//                    its base_layer (LoRA, DoRA, DyLoRA, AdaLoRA, VeRA, IA3); mergeable
//   site module      a block's adapter site (nn/transformer.h) holds a SiteAdapters with the
//                    method's module per adapter (Houlsby, Pfeiffer); not mergeable
//   per-forward input  the model's prompt_encoder slot (nn/forward_inputs.h) holds a
//                    PromptAdapters with the method's module per adapter, asked on every
//                    forward pass (prompt tuning's virtual tokens, prefix tuning's layer
//                    prefixes); not mergeable
//   parameter tuner  chosen parameters of the base train in place, without copies (BitFit's
//                    biases, Houlsby's LayerNorms, LoRA's bias option); saved under their own
//                    names. Disabling or deleting the adapter does not undo what they learned.
//   controller       step hooks, a loss term and checkpointed state (DyLoRA, AdaLoRA), driven
//                    through training_hooks()
//
// modules_to_save (peft/modules_to_save.h): the frozen original and a trainable copy per adapter
// of each parameter of those modules, held in the model's tree under "modules_to_save"; the
// active adapter's copy sits in the parameter slot (the original when adapters are disabled or
// none has a copy). Counting follows peft: originals and every copy are counted.
//
// Placement: adapter tensors are created on the base weight's device and dtype. Every tensor of
// every adapter is in the model's tree, so a later model->to(device / dtype) converts them all.
//
// Names: in memory the base model's names are used ("transformer.h.0.attn.c_attn.lora_A.default
// .weight"); saved keys get peft's "base_model.model." prefix and lose the adapter name.
#pragma once

#include <functional>
#include <map>
#include <ostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "nn/module.h"
#include "peft/config.h"
#include "peft/controller.h"
#include "peft/modules_to_save.h"
#include "peft/prompts.h"
#include "peft/sites.h"
#include "peft/targets.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

class PeftModel {
public:
    // Injects `config` as adapter `adapter_name` into `model` (changed in place). model_type
    // ("gpt2", "llama", "vit") picks default targets; "" infers it from the module names.
    // seed drives adapter initialization and adapter dropout.
    PeftModel(std::shared_ptr<nn::Module> model, const PeftConfig& config,
              const std::string& adapter_name = "default", uint64_t seed = 0,
              const std::string& model_type = "");
    PeftModel(const PeftModel&) = delete;
    PeftModel& operator=(const PeftModel&) = delete;

    nn::Module& model() const { return *model_; }
    std::shared_ptr<nn::Module> model_ptr() const { return model_; }
    const std::string& model_type() const { return model_type_; }

    // ---- adapters ----
    // Adds another adapter (inactive until set_adapter; several methods may not be mixed in one
    // PeftModel except where they target different modules).
    void add_adapter(const std::string& name, const PeftConfig& config);
    void set_adapter(const std::string& name) { set_adapters({name}); }
    void set_adapters(const std::vector<std::string>& names);  // several: their deltas add up
    const std::vector<std::string>& active_adapters() const { return active_; }
    std::vector<std::string> adapter_names() const;  // in the order added
    const PeftConfig& config(const std::string& name = "default") const;
    // The config as save_pretrained writes it: config() plus what training taught the layers
    // (AdaLoRA's rank_pattern).
    std::shared_ptr<PeftConfig> saved_config(const std::string& name = "default") const;
    void delete_adapter(const std::string& name);
    // While disabled the model computes the base alone (peft's `with model.disable_adapter()`).
    void disable_adapters(bool on = true);
    bool adapters_disabled() const { return disabled_; }

    // Full module names of the layers an adapter wraps.
    std::vector<std::string> targeted_modules(const std::string& adapter = "default") const;
    std::shared_ptr<TunerLayer> tuner_layer(const std::string& module_name) const;
    // Every wrapped layer with its full module name, depth-first (for methods' training hooks).
    std::vector<std::pair<std::string, std::shared_ptr<TunerLayer>>> tuner_layers() const;
    // Every block site holding site modules, by full module name ("transformer.h.0.adapter_attn_post").
    std::vector<std::pair<std::string, std::shared_ptr<SiteAdapters>>> site_adapters() const;
    // The model's prompt_encoder (per-forward inputs), null when no adapter supplies any.
    std::shared_ptr<PromptAdapters> prompt_adapters() const;
    // Names of the base model's parameters adapter `adapter` trains in place (parameter tuners).
    std::vector<std::string> tuned_base_parameters(const std::string& adapter = "default") const;

    // ---- training ----
    // The controllers of the active, trainable adapters as one set of hooks for nn::Trainer (or any
    // loop that calls them); null when no active adapter has a controller.
    std::shared_ptr<nn::TrainingHooks> training_hooks() const;
    std::shared_ptr<Controller> controller(const std::string& adapter = "default") const;  // null if none
    // Each active controller's report after training (peft/controller.h).
    void report_training(std::ostream& out, const std::function<double()>& evaluate) const;

    // ---- merging ----
    void merge_adapter(const std::vector<std::string>& names = {}, bool safe_merge = false);
    void unmerge_adapter();
    // Merges the active adapters (or `names`) and puts the plain Linear layers back: the model
    // is then a plain model (modules_to_save keep the active adapter's copy). PeftModel is spent.
    std::shared_ptr<nn::Module> merge_and_unload(const std::vector<std::string>& names = {},
                                                 bool safe_merge = false);
    // Removes every adapter without merging: the base model as it was.
    std::shared_ptr<nn::Module> unload();

    // ---- counting (peft's get_nb_trainable_parameters / print_trainable_parameters) ----
    struct ParamCounts {
        int64_t trainable = 0, all = 0;
    };
    ParamCounts count_parameters() const;
    // "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364"
    std::string trainable_parameters_line() const;
    void print_trainable_parameters() const;  // to stdout

    // ---- saving and loading just the adapter (peft's save_pretrained, utils/save_and_load.py) ----
    // peft's get_peft_model_state_dict: keys "base_model.model.<module>.lora_A.weight", ...
    nn::StateDict adapter_state_dict(const std::string& adapter = "default") const;
    // Writes dir/adapter_model.safetensors and dir/adapter_config.json (a non-default adapter
    // into dir/<adapter>/, as peft). Atomic per file.
    void save_pretrained(const std::string& dir) const;
    void save_adapter(const std::string& dir, const std::string& adapter) const;
    // Reads a saved adapter into `model` (peft's PeftModel.from_pretrained): frozen unless
    // is_trainable. Names and shapes are checked; a mismatch lists the offending keys.
    static std::unique_ptr<PeftModel> from_pretrained(std::shared_ptr<nn::Module> model,
                                                      const std::string& dir,
                                                      const std::string& adapter_name = "default",
                                                      bool is_trainable = false,
                                                      const std::string& model_type = "");
    void load_adapter(const std::string& dir, const std::string& adapter_name, bool is_trainable = false);
    // Copies peft-keyed tensors into adapter `adapter`'s tensors (every key must match).
    void load_adapter_state_dict(const nn::StateDict& sd, const std::string& adapter = "default");

private:
    void inject(const std::string& name, const PeftConfig& config);
    void setup_modules_to_save(const std::string& name, const PeftConfig& config);
    void apply_modules_to_save();  // put the right copy in each slot
    void update_trainable();       // freeze all, then unfreeze what the active adapters train
    void attach_sites(const std::string& name, const PeftConfig& config);
    void attach_prompt(const std::string& name, PeftConfig& config);
    void check_mergeable(const std::vector<std::string>& names) const;
    void check_usable() const;

    std::shared_ptr<nn::Module> model_;
    std::string model_type_;
    std::vector<std::string> order_;  // adapter names as added
    std::map<std::string, std::shared_ptr<PeftConfig>> configs_;
    std::vector<std::string> active_;
    bool disabled_ = false;
    bool spent_ = false;  // after merge_and_unload / unload
    Generator init_gen_;
    std::shared_ptr<Generator> rng_;
    std::map<std::string, std::shared_ptr<Controller>> controllers_;

    std::shared_ptr<ModulesToSave> modules_to_save() const;  // null when no adapter has any
    std::set<std::string> modules_to_save_names() const;     // the parameters it keeps
};

// peft's `with model.disable_adapter():` -- the base alone inside the scope, as before after it.
class DisableAdapterGuard {
public:
    explicit DisableAdapterGuard(PeftModel& pm) : pm_(pm), was_(pm.adapters_disabled()) { pm_.disable_adapters(true); }
    ~DisableAdapterGuard() {
        try {
            pm_.disable_adapters(was_);
        } catch (const Error&) {  // unloaded inside the scope: nothing to restore
        }
    }
    DisableAdapterGuard(const DisableAdapterGuard&) = delete;
    DisableAdapterGuard& operator=(const DisableAdapterGuard&) = delete;

private:
    PeftModel& pm_;
    bool was_;
};

}  // namespace peft
}  // namespace ember
