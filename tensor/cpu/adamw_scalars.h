// One AdamW update: the step-dependent scalars, computed once in double and rounded to the
// element type, and the per-element arithmetic. The f32 / f64 kernel (optim.cpp, where the
// formulas are written out) and the 8-bit one (optim_8bit.cpp) both call update(), so they move a
// parameter by the same arithmetic in the same order.
#pragma once

#include <cmath>

#include "tensor/ops.h"

namespace ember {
namespace cpu {

template <typename T>
struct AdamWScalars {
    T decay, b1, b2, one_minus_b1, one_minus_b2, step_size, inv_sqrt_bc2, eps;

    explicit AdamWScalars(const raw::AdamWParams& p) {
        const double t = double(p.step);
        decay = T(1.0 - p.lr * p.weight_decay);
        b1 = T(p.beta1), b2 = T(p.beta2);
        one_minus_b1 = T(1.0 - p.beta1), one_minus_b2 = T(1.0 - p.beta2);
        step_size = T(p.lr / (1.0 - std::pow(p.beta1, t)));
        inv_sqrt_bc2 = T(1.0 / std::sqrt(1.0 - std::pow(p.beta2, t)));
        eps = T(p.eps);
    }

    // One element: the moments m and v (already in T) and the weight w step; g is its gradient.
    void update(T& w, T g, T& m, T& v) const {
        m = b1 * m + one_minus_b1 * g;
        v = b2 * v + one_minus_b2 * g * g;
        const T denom = std::sqrt(v) * inv_sqrt_bc2 + eps;
        w = w * decay - step_size * (m / denom);
    }
};

}  // namespace cpu
}  // namespace ember
