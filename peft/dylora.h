// DyLoRA (Valipour et al., EACL 2023) on a Linear, after the authors' huawei-noah/KD-NLP
// DyLoRA code. One LoRA trained at every rank at once, so any rank b <= r can be picked after
// training without a search.
//
// The layer holds LoRA's A (r, in) and B (out, r) at the largest rank r and uses their first b
// rows / columns, with the scale alpha / b (eq. 7 of the paper; the reference code multiplies A
// and B each by sqrt(r / b) on top of the global alpha / r, which is the same alpha / b):
//   h = W0 x + b0 + (alpha / b) * B[:, :b] A[:b, :] dropout(x)
// Init as LoRA (A kaiming-uniform(a = sqrt 5), B = 0): a no-op until trained. Merge at the
// layer's current rank b: W <- W + (alpha / b) B[:, :b] A[:b].
//
// Training (the reference run_glue.py callback): before every step draw ONE rank for all layers,
// b uniform on {1, ..., r} (torch.randint(0, r) + 1), and train at it. With `frozen` (the
// reference's frozen=True, Ember's default) the components below b are detached, so only row b of
// A and column b of B get a gradient; frozen = false trains every component < b as well.
//
//   peft::DyLoraConfig c;  c.r = 8;  c.target_modules = {"c_attn"};
//   peft::PeftModel pm(gpt, c);          // its controller is a DyLoraRankSampler
//   nn::Trainer trainer(*gpt, opts);
//   trainer.add_hooks(pm.training_hooks());  // one rank drawn before each step; resumes exactly
//   trainer.run(...);
//   peft::set_dylora_rank(pm, 3);   // evaluate (or merge, or save) at rank 3
//
// Not in peft (its feature request was closed), so its files follow LoRA's: tensors
// "<module>.lora_A.weight" (r, in) and "<module>.lora_B.weight" (out, r) at the full rank r, and
// adapter_config.json with peft_type "DYLORA" and LoRA's keys (r, lora_alpha, lora_dropout, bias,
// target_modules, ...) plus "frozen".
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/config.h"
#include "peft/controller.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

class PeftModel;

class DyLoraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "DYLORA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<DyLoraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override { return "DyLoraLinear"; }
    static DyLoraConfig from_json(const std::string& text);
    void fill_defaults(const std::string& model_type) override;
    // A DyLoraRankSampler seeded with `seed`.
    std::shared_ptr<Controller> make_controller(PeftModel& pm, const std::string& adapter,
                                                uint64_t seed) const override;

    int64_t r = 8;            // the largest rank (r_max); the reference RoBERTa scripts use 8
    double lora_alpha = 16;   // the reference scripts' lora_alpha
    double lora_dropout = 0;
    bool frozen = true;       // the reference training callback's set_rank(b, frozen=True)
    std::string bias = "none";  // only "none": DyLoRA trains A and B alone
};

class DyLoraLayer : public TunerLayer {
public:
    explicit DyLoraLayer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "DyLoraLinear"; }

    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;

    // The rank b (1 <= b <= r) adapter `name` computes, merges and trains at (r after init).
    void set_rank(const std::string& name, int64_t b);
    int64_t rank(const std::string& name) const;
    int64_t max_rank(const std::string& name) const;
    // (alpha / b) B[:, :b] A[:b], the change to W (out, in) at the current rank.
    Tensor delta_weight(const std::string& name) const;

    struct Settings {
        int64_t r = 0, rank = 0;
        double alpha = 0, dropout = 0;
        bool frozen = true;
    };
    const Settings& settings(const std::string& name) const;

    std::shared_ptr<ModuleDict> lora_A, lora_B;  // Linear(in, r), Linear(r, out), no bias
    std::shared_ptr<Generator> rng;              // dropout draws

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;

private:
    std::map<std::string, Settings> settings_;
};

// Sets rank b on every DyLoRA layer of `adapter` (for evaluation, merging, or a training step).
// b must lie in [1, r]. Refused while the adapter is merged (unmerge, set, merge again).
void set_dylora_rank(PeftModel& pm, int64_t b, const std::string& adapter = "default");

// Writes adapter `adapter` at rank b as a plain peft LoRA adapter (peft_type "LORA", r = b,
// lora_alpha = alpha, so peft's scale alpha / r is DyLoRA's alpha / b): A[:b] and B[:, :b] under
// LoRA's names, in dir/adapter_model.safetensors and dir/adapter_config.json. peft (which has no
// DyLoRA) and Ember's LoraConfig both load it.
void save_dylora_as_lora(const PeftModel& pm, const std::string& dir, int64_t b,
                         const std::string& adapter = "default");

// The adapter's controller: sample() draws b uniform on {1, ..., r} from its own generator and
// sets it on every layer (one rank for the whole model, as the reference), before every step.
// Its generator goes in training checkpoints, so a resumed run draws the same ranks.
class DyLoraRankSampler : public Controller {
public:
    DyLoraRankSampler(PeftModel& pm, uint64_t seed, const std::string& adapter = "default");
    int64_t sample();  // returns the rank it set
    int64_t max_rank() const { return r_; }
    std::shared_ptr<Generator> generator() const { return gen_; }

    void before_step(int64_t /*step*/) override { sample(); }
    std::vector<std::shared_ptr<Generator>> generators() const override { return {gen_}; }
    // The metric at ranks 1, 2, 4, ... below r (one run serves them all); ends at rank r.
    void report(std::ostream& out, const std::function<double()>& evaluate) override;

private:
    PeftModel& pm_;
    std::string adapter_;
    int64_t r_ = 0;
    std::shared_ptr<Generator> gen_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> dylora_from_json(const std::string& text);
std::shared_ptr<PeftConfig> dylora_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
