// Learning-rate schedules: linear warmup, then cosine or linear decay down to a floor.
//
// factor(step) multiplies the base lr; step counts optimizer steps taken so far (0 for the first
// update), following Hugging Face's get_cosine_schedule_with_warmup:
//   step <  warmup: step / warmup                     (the first update has lr 0)
//   step >= warmup: progress = (step - warmup) / (total - warmup), clamped to [0, 1]
//       cosine: r + (1 - r) * (1 + cos(pi * progress)) / 2
//       linear: r + (1 - r) * (1 - progress)
// where r = min_lr_ratio (the floor, as a fraction of the base lr).
// Use with Optimizer::set_lr_factor(schedule.factor(opt.step_count)).
#pragma once

#include <cstdint>

namespace ember {
namespace nn {

enum class ScheduleKind { Constant, Cosine, Linear };

struct LRSchedule {
    ScheduleKind kind = ScheduleKind::Cosine;
    double base_lr = 1e-3;
    int64_t warmup_steps = 0;
    int64_t total_steps = 1;
    double min_lr_ratio = 0;

    double factor(int64_t step) const;
    double lr_at(int64_t step) const { return base_lr * factor(step); }
};

double cosine_with_warmup(int64_t step, int64_t warmup, int64_t total, double min_lr_ratio = 0);
double linear_with_warmup(int64_t step, int64_t warmup, int64_t total, double min_lr_ratio = 0);

}  // namespace nn
}  // namespace ember
