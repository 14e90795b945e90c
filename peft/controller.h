// Controller: the part of a PEFT method that steers training rather than computing the forward
// pass -- DyLoRA's rank sampler, AdaLoRA's rank allocator (later: supernet sampling, pruning
// schedules). A method's config makes one (PeftConfig::make_controller) when its adapter is
// attached; PeftModel::training_hooks() hands every active adapter's controller to a training
// loop as one nn::TrainingHooks:
//
//   nn::Trainer trainer(*model, options);
//   trainer.add_hooks(pm.training_hooks());   // step hooks, loss term, checkpointed state
//
// A loop of one's own calls the same four functions in the same places (before_step,
// loss_term, after_optimizer_step before zero_grad) and saves state_dict() and generators().
#pragma once

#include <functional>
#include <ostream>

#include "nn/trainer.h"

namespace ember {
namespace peft {

class Controller : public nn::TrainingHooks {
public:
    // After training, what the controller has to say about the run (AdaLoRA: the ranks it kept;
    // DyLoRA: the metric at several ranks, through `evaluate`). Leaves the model as it found it.
    virtual void report(std::ostream& /*out*/, const std::function<double()>& /*evaluate*/) {}
};

}  // namespace peft
}  // namespace ember
