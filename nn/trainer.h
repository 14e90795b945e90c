// The training loop every example shares: gradient accumulation, clipping, a learning-rate
// schedule, periodic evaluation, atomic checkpoints and an exact resume.
//
// Resuming is bit-identical to an uninterrupted run on the same device because everything that
// decides the next step is either in the checkpoint (weights, optimizer moments, step, the
// generators' counters) or a pure function of (seed, step): batches are drawn by the caller's
// batch function from a generator seeded per step, never from a stream that would need saving.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "nn/optim.h"
#include "nn/schedule.h"

namespace ember {
namespace nn {

struct TrainerOptions {
    int64_t steps = 1000;        // optimizer steps in the whole run
    int64_t stop_at = 0;         // stop after this step, as if interrupted (0: run to the end)
    int64_t accumulate = 1;      // micro-batches per optimizer step
    double lr = 1e-3, weight_decay = 0.1, clip = 1.0;  // clip <= 0: no clipping
    MomentStorage moments;       // AdamW's state: f32 or 8-bit, resident or paged (nn/optim.h)
    bool bf16_autocast = false;  // each micro-batch's forward in a Bf16Autocast scope (nn/bf16_autocast.h)
    int64_t warmup = 0;
    double min_lr_ratio = 0.1;
    ScheduleKind schedule = ScheduleKind::Cosine;
    int64_t eval_every = 0;      // 0: only at the end
    int64_t save_every = 0;      // 0: only at the end
    std::string checkpoint;      // path of the training checkpoint; empty: none
    bool resume = false;         // continue from `checkpoint` when it exists
    // A step whose loss or gradient norm is NaN or infinite stops the run with an error naming
    // the step, before the optimizer spreads it into the weights; with skip_nonfinite such a step
    // is skipped instead (its gradients dropped, the weights untouched) and counted.
    bool skip_nonfinite = false;
};

// What one micro-batch gives back: its mean loss (a scalar that requires grad) and how many
// items (tokens, images) it held.
struct MicroBatch {
    Tensor loss;
    int64_t items = 0;
};

// What steers a run from outside the model, e.g. a PEFT method's controller (DyLoRA's rank
// sampler, AdaLoRA's rank allocator). The Trainer calls every hook in the order added:
//   before_step(step)            before the step's first micro-batch
//   loss_term()                  added to each micro-batch's loss before backward (undefined: none)
//   after_optimizer_step(step)   after optimizer.step(), before zero_grad(): .grad is still there
// state_dict() / load_state_dict() and generators() go in the training checkpoint, so a resumed
// run continues the hook exactly where it stopped.
class TrainingHooks {
public:
    virtual ~TrainingHooks() = default;
    virtual void before_step(int64_t /*step*/) {}
    virtual Tensor loss_term() { return Tensor(); }
    virtual void after_optimizer_step(int64_t /*step*/) {}
    virtual StateDict state_dict() const { return {}; }
    virtual void load_state_dict(const StateDict& /*sd*/) {}
    virtual std::vector<std::shared_ptr<Generator>> generators() const { return {}; }
};

class Trainer {
public:
    // The optimizer is AdamW over `model`'s trainable parameters, with biases and norms in a
    // group without weight decay. `rngs` are the generators that must resume (dropout).
    Trainer(Module& model, const TrainerOptions& options, std::vector<std::shared_ptr<Generator>> rngs = {},
            std::map<std::string, std::string> checkpoint_extra = {});

    // batch(step, micro) for step = 1..steps; evaluate(step) every eval_every steps and at the
    // end; on_step(step, loss, items, lr) after each optimizer step (for logs). Returns the
    // last step done.
    int64_t run(const std::function<MicroBatch(int64_t step, int64_t micro)>& batch,
                const std::function<void(int64_t step)>& evaluate = nullptr,
                const std::function<void(int64_t step, double loss, int64_t items, double lr)>& on_step = nullptr);

    void save_checkpoint(int64_t step) const;
    int64_t load_checkpoint();  // returns the step it holds
    int64_t resumed_from() const { return resumed_from_; }
    int64_t skipped_steps() const { return skipped_; }  // non-finite steps skipped (skip_nonfinite)
    AdamW& optimizer() { return *optimizer_; }

    // Adds hooks (null: ignored); add them before run() and before a resume loads the checkpoint.
    void add_hooks(std::shared_ptr<TrainingHooks> hooks);

private:
    Module& model_;
    TrainerOptions options_;
    std::vector<std::shared_ptr<Generator>> rngs_;
    std::vector<std::shared_ptr<TrainingHooks>> hooks_;
    std::map<std::string, std::string> extra_;
    std::unique_ptr<AdamW> optimizer_;
    LRSchedule schedule_;
    int64_t resumed_from_ = 0;
    int64_t skipped_ = 0;

    void check_options() const;
    void nonfinite(int64_t step, const char* what, double value) const;
    // Throws unless every parameter is finite: a NaN model is never saved as a checkpoint.
    void check_weights_finite(int64_t step) const;
};

}  // namespace nn
}  // namespace ember
