#include "nn/trainer.h"

#include <sys/stat.h>

#include "nn/checkpoint.h"

namespace ember {
namespace nn {

Trainer::Trainer(Module& model, const TrainerOptions& options, std::vector<std::shared_ptr<Generator>> rngs,
                 std::map<std::string, std::string> checkpoint_extra)
    : model_(model), options_(options), rngs_(std::move(rngs)), extra_(std::move(checkpoint_extra)) {
    EMBER_CHECK(options.steps > 0 && options.accumulate > 0, "Trainer: steps and accumulate must be positive");
    AdamWOptions adamw;
    adamw.lr = options.lr;
    adamw.weight_decay = options.weight_decay;
    optimizer_ = std::make_unique<AdamW>(decay_groups(model, options.lr, options.weight_decay), adamw);
    schedule_.kind = options.schedule;
    schedule_.base_lr = options.lr;
    schedule_.warmup_steps = options.warmup;
    schedule_.total_steps = options.steps;
    schedule_.min_lr_ratio = options.min_lr_ratio;
}

void Trainer::add_hooks(std::shared_ptr<TrainingHooks> hooks) {
    if (hooks) hooks_.push_back(std::move(hooks));
}

// Hook i's tensors are stored as "<i>.<name>"; its generators follow the Trainer's own.
void Trainer::save_checkpoint(int64_t step) const {
    if (options_.checkpoint.empty()) return;
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
        for (int64_t micro = 0; micro < options_.accumulate; ++micro) {
            MicroBatch mb = batch(step, micro);
            EMBER_CHECK(mb.loss.defined() && mb.loss.numel() == 1, "Trainer: the batch function must return a scalar loss");
            for (const auto& h : hooks_) {
                Tensor extra = h->loss_term();
                if (extra.defined()) mb.loss = mb.loss + extra;
            }
            // Gradients add up across backward calls: scaling each micro-batch's loss by
            // 1/accumulate makes their sum the gradient of the mean.
            (options_.accumulate > 1 ? mb.loss / double(options_.accumulate) : mb.loss).backward();
            loss_sum += mb.loss.item<double>();
            items += mb.items;
        }
        if (options_.clip > 0) {
            std::vector<Tensor> all;  // one global norm over every group
            for (const auto& g : optimizer_->groups()) all.insert(all.end(), g.params.begin(), g.params.end());
            clip_grad_norm(all, options_.clip);
        }
        optimizer_->step();
        for (const auto& h : hooks_) h->after_optimizer_step(step);
        optimizer_->zero_grad();
        if (on_step) on_step(step, loss_sum / double(options_.accumulate), items, options_.lr * lr_factor);
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
