#include "nn/trainer.h"

#include <sys/stat.h>

#include <cmath>
#include <iostream>

#include "nn/bf16_autocast.h"
#include "nn/checkpoint.h"

namespace ember {
namespace nn {

Trainer::Trainer(Module& model, const TrainerOptions& options, std::vector<std::shared_ptr<Generator>> rngs,
                 std::map<std::string, std::string> checkpoint_extra)
    : model_(model), options_(options), rngs_(std::move(rngs)), extra_(std::move(checkpoint_extra)) {
    check_options();
    AdamWOptions adamw;
    adamw.lr = options.lr;
    adamw.weight_decay = options.weight_decay;
    optimizer_ = std::make_unique<AdamW>(decay_groups(model, options.lr, options.weight_decay), adamw, options.moments);
    schedule_.kind = options.schedule;
    schedule_.base_lr = options.lr;
    schedule_.warmup_steps = options.warmup;
    schedule_.total_steps = options.steps;
    schedule_.min_lr_ratio = options.min_lr_ratio;
}

void Trainer::check_options() const {
    const TrainerOptions& o = options_;
    EMBER_CHECK(o.steps > 0 && o.accumulate > 0, "Trainer: steps and accumulate must be positive, not ", o.steps,
                " and ", o.accumulate);
    EMBER_CHECK(std::isfinite(o.lr) && o.lr > 0, "Trainer: the learning rate must be a positive number, not ", o.lr);
    EMBER_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0,
                "Trainer: weight decay must be a number >= 0, not ", o.weight_decay);
    EMBER_CHECK(std::isfinite(o.clip), "Trainer: clip must be a number (<= 0: no clipping), not ", o.clip);
    EMBER_CHECK(o.warmup >= 0 && o.stop_at >= 0 && o.eval_every >= 0 && o.save_every >= 0,
                "Trainer: warmup, stop_at, eval_every and save_every must be >= 0");
    EMBER_CHECK(std::isfinite(o.min_lr_ratio) && o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1,
                "Trainer: min_lr_ratio must be in [0, 1], not ", o.min_lr_ratio);
}

// x * 0 is 0 for every finite x and NaN for NaN and +-inf, so the sum is finite exactly when
// every element is.
void Trainer::check_weights_finite(int64_t step) const {
    NoGradGuard no_grad;
    for (const auto& [name, p] : model_.named_parameters())
        EMBER_CHECK(std::isfinite(sum(p * 0.0).item<double>()), "Trainer: parameter ", name,
                    " holds NaN or infinity after step ", step, "; not saving it. Lower the learning rate");
}

void Trainer::add_hooks(std::shared_ptr<TrainingHooks> hooks) {
    if (hooks) hooks_.push_back(std::move(hooks));
}

// Hook i's tensors are stored as "<i>.<name>"; its generators follow the Trainer's own.
void Trainer::save_checkpoint(int64_t step) const {
    if (options_.checkpoint.empty()) return;
    check_weights_finite(step);
    TrainingState s;
    s.model = model_.state_dict();
    s.optimizer = optimizer_->state();
    s.step = step;
    for (const auto& g : rngs_) s.rngs.push_back(*g);
    for (size_t i = 0; i < hooks_.size(); ++i) {
        for (auto& [name, t] : hooks_[i]->state_dict()) s.hooks[std::to_string(i) + "." + name] = t;
        for (const auto& g : hooks_[i]->generators()) s.rngs.push_back(*g);
    }
    s.extra = extra_;
    save_training_checkpoint(options_.checkpoint, s);
}

int64_t Trainer::load_checkpoint() {
    TrainingState s = load_training_checkpoint(options_.checkpoint);
    std::vector<std::shared_ptr<Generator>> all = rngs_;
    for (const auto& h : hooks_)
        for (const auto& g : h->generators()) all.push_back(g);
    EMBER_CHECK(s.rngs.size() == all.size(), "Trainer: ", options_.checkpoint, " holds ", s.rngs.size(),
                " generators but this run has ", all.size(), " (model and training hooks); was it written by "
                "another model or with other PEFT controllers?");
    model_.load_state_dict(s.model);
    optimizer_->load_state(s.optimizer);
    for (size_t i = 0; i < all.size(); ++i) *all[i] = s.rngs[i];
    for (size_t i = 0; i < hooks_.size(); ++i) {
        const std::string prefix = std::to_string(i) + ".";
        StateDict mine;
        for (auto& [name, t] : s.hooks)
            if (name.compare(0, prefix.size(), prefix) == 0) mine[name.substr(prefix.size())] = t;
        hooks_[i]->load_state_dict(mine);
    }
    return s.step;
}

static bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// A NaN or infinite loss or gradient norm at `step`: an error, or (skip_nonfinite) a warning.
void Trainer::nonfinite(int64_t step, const char* what, double value) const {
    EMBER_CHECK(options_.skip_nonfinite, "Trainer: the ", what, " at step ", step, " is ", value,
                "; stopped before it reached the weights (the last checkpoint is intact). Lower the learning "
                "rate, or skip such steps (TrainerOptions::skip_nonfinite, --skip-nonfinite)");
    std::cerr << "Trainer: skipping step " << step << ": its " << what << " is " << value << "\n";
}

int64_t Trainer::run(const std::function<MicroBatch(int64_t, int64_t)>& batch,
                     const std::function<void(int64_t)>& evaluate,
                     const std::function<void(int64_t, double, int64_t, double)>& on_step) {
    int64_t step = 0;
    if (options_.resume && file_exists(options_.checkpoint)) step = resumed_from_ = load_checkpoint();
    int64_t last = options_.stop_at > 0 ? std::min(options_.stop_at, options_.steps) : options_.steps;
    model_.train();
    while (step < last) {
        ++step;
        double lr_factor = schedule_.factor(step);
        optimizer_->set_lr_factor(lr_factor);
        for (const auto& h : hooks_) h->before_step(step);
        double loss_sum = 0;
        int64_t items = 0;
        bool finite = true;
        for (int64_t micro = 0; micro < options_.accumulate; ++micro) {
            MicroBatch mb;
            {
                Bf16Autocast autocast(options_.bf16_autocast);  // its nodes keep bf16 for the backward
                mb = batch(step, micro);
            }
            EMBER_CHECK(mb.loss.defined() && mb.loss.numel() == 1, "Trainer: the batch function must return a scalar loss");
            double loss = mb.loss.item<double>();
            if (!std::isfinite(loss)) {
                nonfinite(step, "loss", loss);
                finite = false;
                break;
            }
            for (const auto& h : hooks_) {
                Tensor extra = h->loss_term();
                if (extra.defined()) mb.loss = mb.loss + extra;
            }
            // Gradients add up across backward calls: scaling each micro-batch's loss by
            // 1/accumulate makes their sum the gradient of the mean.
            (options_.accumulate > 1 ? mb.loss / double(options_.accumulate) : mb.loss).backward();
            loss_sum += loss;
            items += mb.items;
        }
        if (finite && options_.clip > 0) {
            std::vector<Tensor> all;  // one global norm over every group
            for (const auto& g : optimizer_->groups()) all.insert(all.end(), g.params.begin(), g.params.end());
            double norm = clip_grad_norm(all, options_.clip);
            if (!std::isfinite(norm)) nonfinite(step, "gradient norm", norm), finite = false;
        }
        if (finite) {
            optimizer_->step();
            for (const auto& h : hooks_) h->after_optimizer_step(step);
        } else {
            ++skipped_;  // its gradients are dropped below; the weights stay as they were
        }
        optimizer_->zero_grad();
        if (on_step && finite) on_step(step, loss_sum / double(options_.accumulate), items, options_.lr * lr_factor);
        bool at_end = step == last;
        if (evaluate && ((options_.eval_every > 0 && step % options_.eval_every == 0) || at_end)) {
            evaluate(step);
            model_.train();
        }
        if ((options_.save_every > 0 && step % options_.save_every == 0) || at_end) save_checkpoint(step);
    }
    return step;
}

}  // namespace nn
}  // namespace ember
