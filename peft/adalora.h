// AdaLoRA (Zhang et al., ICLR 2023) on a Linear, as peft's tuners/adalora/. LoRA in SVD form
// whose singular values are pruned during training, so the rank budget goes where it matters most.
//
// Tensors (peft's names; plain parameters, so saved without ".weight"):
//   lora_A.<adapter> = Q (r, in),  lora_E.<adapter> = Lambda (r, 1),  lora_B.<adapter> = P (out, r)
//   h = W0 x + b0 + dropout(x) (A * E)^T B^T * scaling / (ranknum + 1e-5)
// scaling = lora_alpha if lora_alpha > 0 else r, ranknum = init_r: the scale stays alpha / init_r
// after pruning, not alpha / kept rank (peft's adalora/layer.py). Init: E = 0 (a no-op), A, B ~ N(0, 0.02^2). Merge: W <- W + B (A * E)
// * scaling / (ranknum + 1e-5).
//
// Training needs two extra calls, both in peft's order (AdaLoraModel.forward adds the penalty;
// update_and_allocate runs after optimizer.step(), before zero_grad()):
//   loss = task_loss + peft::adalora_orth_regularization(pm);   // orth_reg_weight * mean ||.||_F
//   loss.backward(); optimizer.step();
//   allocator.update_and_allocate(step);                        // needs .grad: before zero_grad
//   optimizer.zero_grad();
// The allocator is the adapter's controller, so a Trainer does both with
//   trainer.add_hooks(pm.training_hooks());
// and its checkpoints hold the allocator's state (a resumed run equals an uninterrupted one).
// Without it AdaLoRA is silently plain LoRA, the most-asked AdaLoRA question in peft's issues.
//
// The allocator (peft's RankAllocator): sensitivity I = |w * grad| per entry of A, E, B, smoothed
// I_bar = b1 I_bar + (1 - b1) I, uncertainty U_bar = b2 U_bar + (1 - b2) |I - I_bar|, score
// s = I_bar * U_bar; singular value i of a module scores S_i = s(E_i) + mean_j s(A_ij) +
// mean_k s(B_ki). The budget (kept singular values over all modules) follows the cubic schedule
// (budget()); while it shrinks, every deltaT steps the E entries with S_i <= the (b0 - b(t))-th
// smallest score are zeroed (A and B rows stay and may revive). At step total_step - tfinal the
// final mask gives rank_pattern (written into the adapter's config, as peft) and the EMAs reset;
// after it the pattern is re-applied every step.
//
// Files (peft's): adapter_config.json is LoRA's keys plus init_r, target_r, tinit, tfinal, deltaT,
// beta1, beta2, orth_reg_weight, total_step and rank_pattern ({"<module>.lora_E.<adapter>":
// [bool] * init_r}, the latest mask, which each layer keeps and writes at save time); with a
// rank_pattern the saved A, E, B hold only the kept rows / columns (peft's
// resize_state_dict_by_rank_pattern), and loading makes each layer that small. A loaded layer keeps ranknum = init_r (from the
// config), so it computes exactly what the trained model computed (peft's
// resize_modules_by_rank_pattern copies ranknum back after update_layer for the same reason).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/config.h"
#include "peft/controller.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

class PeftModel;

class AdaLoraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "ADALORA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<AdaLoraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override { return "AdaLoraLinear"; }
    // Default targets as LoRA's, and peft's __post_init__ checks (total_step > 0, a budgeting phase).
    void fill_defaults(const std::string& model_type) override;
    // The RankAllocator of the adapter (with the orthogonal penalty as its loss term).
    std::shared_ptr<Controller> make_controller(PeftModel& pm, const std::string& adapter,
                                                uint64_t seed) const override;
    static AdaLoraConfig from_json(const std::string& text);

    // peft's AdaLoraConfig defaults (tuners/adalora/config.py).
    int64_t init_r = 12, target_r = 8;
    int64_t tinit = 0, tfinal = 0, deltaT = 1;
    double beta1 = 0.85, beta2 = 0.85;
    double orth_reg_weight = 0.5;
    int64_t total_step = 0;  // required: > 0
    double lora_alpha = 8;   // inherited from LoraConfig in peft
    double lora_dropout = 0;
    int64_t r = 8;           // written for peft, ignored (init_r is the rank)
    // Full parameter name "<module>.lora_E.<adapter>" -> kept flag per singular value. Read from
    // a file (the layers are then made that small); written at save time from the layers' masks.
    std::map<std::string, std::vector<bool>> rank_pattern;
};

class AdaLoraLayer : public TunerLayer {
public:
    explicit AdaLoraLayer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "AdaLoraLinear"; }

    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;

    // B (A * E) * scaling / (ranknum + 1e-5), the change to W (out, in).
    Tensor delta_weight(const std::string& name) const;

    // The latest mask over the init_r singular values (empty: none yet, every value kept). For an
    // adapter loaded from a file it is that file's pattern, over the rows the layer never had.
    void set_mask(const std::string& name, std::vector<bool> keep);
    const std::vector<bool>& mask(const std::string& name) const;
    // A, E, B sliced to the kept rows / columns when the layer still holds all init_r of them.
    void add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const override;
    void describe(const std::string& adapter, const std::string& key, PeftConfig& saved) const override;

    struct Settings {
        int64_t r = 0;         // rows of A here (init_r, or the kept rank of a loaded adapter)
        double ranknum = 0;    // init_r
        double scaling = 0;    // lora_alpha, or r when lora_alpha <= 0
        double dropout = 0;
    };
    const Settings& settings(const std::string& name) const;

    std::shared_ptr<ParameterDict> lora_A, lora_E, lora_B;  // (r, in), (r, 1), (out, r)
    std::shared_ptr<Generator> rng;                         // dropout draws

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;

private:
    std::map<std::string, Settings> settings_;
    std::map<std::string, std::vector<bool>> masks_;
};

// orth_reg_weight * the mean over every A and B of adapter `adapter` of ||A A^T - I||_F and
// ||B^T B - I||_F: plain Frobenius norms, not squared (peft's AdaLoraModel.forward).
// Differentiable; add it to the loss. CHOICE: a weight of 0 (or no layers) gives a 0 scalar,
// where peft's forward raises for orth_reg_weight <= 0 -- here the caller decides to add it.
Tensor adalora_orth_regularization(const PeftModel& pm, const std::string& adapter = "default");

// The adapter's controller: loss_term() is adalora_orth_regularization, after_optimizer_step()
// is update_and_allocate(), and state_dict() holds the smoothed scores and the masks.
class RankAllocator : public Controller {
public:
    explicit RankAllocator(PeftModel& pm, const std::string& adapter = "default");

    Tensor loss_term() override;
    void after_optimizer_step(int64_t step) override { update_and_allocate(step); }
    nn::StateDict state_dict() const override;
    void load_state_dict(const nn::StateDict& sd) override;
    void report(std::ostream& out, const std::function<double()>& evaluate) override;

    // peft's budget_schedule: (budget at `step`, whether this step masks).
    std::pair<int64_t, bool> budget(int64_t step) const;
    // Call once per optimizer step, after optimizer.step() and before zero_grad() (needs .grad).
    void update_and_allocate(int64_t step);

    int64_t initial_budget() const { return init_bgt_; }  // sum of init ranks
    int64_t target_budget() const { return target_bgt_; }  // target_r * number of modules
    // Kept singular values per module, by the latest mask (init_r each before any mask).
    std::map<std::string, int64_t> rank_allocation() const;
    int64_t total_rank() const;
    // The final pattern (empty before step total_step - tfinal), also in the saved config.
    const std::map<std::string, std::vector<bool>>& rank_pattern() const { return rank_pattern_; }
    // The last triplet scores S_i by module (for study and tests).
    std::map<std::string, std::vector<double>> triplet_scores() const;

private:
    struct Entry {
        std::string module;  // full module name
        std::shared_ptr<AdaLoraLayer> layer;
        // I_bar and U_bar for A, E, B (same shapes), undefined until the first update.
        Tensor avg_ipt[3], avg_unc[3];
    };
    void update_ipt();
    std::map<std::string, std::vector<bool>> mask_to_budget(int64_t budget);
    void mask_using_pattern();
    void reset_ipt();
    std::string pattern_name(const std::string& module) const { return module + ".lora_E." + adapter_; }

    PeftModel& pm_;
    std::string adapter_;
    const AdaLoraConfig* cfg_;
    std::vector<Entry> entries_;  // sorted by module name
    int64_t init_bgt_ = 0, target_bgt_ = 0;
    std::map<std::string, std::vector<bool>> rank_pattern_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> adalora_from_json(const std::string& text);
std::shared_ptr<PeftConfig> adalora_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
