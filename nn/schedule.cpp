// Learning-rate schedules; the formulas are in nn/schedule.h.
#include "nn/schedule.h"

#include <algorithm>
#include <cmath>

#include "tensor/check.h"

namespace ember {
namespace nn {

static double progress(int64_t step, int64_t warmup, int64_t total) {
    EMBER_CHECK(warmup >= 0 && total > 0 && step >= 0, "lr schedule: need warmup >= 0, total > 0 "
                "and step >= 0, got warmup ", warmup, ", total ", total, ", step ", step);
    if (total <= warmup) return 1;
    return std::clamp(double(step - warmup) / double(total - warmup), 0.0, 1.0);
}

double cosine_with_warmup(int64_t step, int64_t warmup, int64_t total, double r) {
    double p = progress(step, warmup, total);
    if (step < warmup) return double(step) / double(warmup);
    return r + (1 - r) * 0.5 * (1 + std::cos(M_PI * p));
}

double linear_with_warmup(int64_t step, int64_t warmup, int64_t total, double r) {
    double p = progress(step, warmup, total);
    if (step < warmup) return double(step) / double(warmup);
    return r + (1 - r) * (1 - p);
}

double LRSchedule::factor(int64_t step) const {
    switch (kind) {
        case ScheduleKind::Constant:
            return (step < warmup_steps) ? double(step) / double(warmup_steps) : 1.0;
        case ScheduleKind::Cosine: return cosine_with_warmup(step, warmup_steps, total_steps, min_lr_ratio);
        case ScheduleKind::Linear: return linear_with_warmup(step, warmup_steps, total_steps, min_lr_ratio);
    }
    return 1;
}

}  // namespace nn
}  // namespace ember
