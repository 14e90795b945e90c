// The step-dependent scalars of one AdamW update, computed once in double and rounded to the
// element type: the f32 / f64 kernel (optim.cpp, where the formulas are) and the 8-bit one
// (optim_8bit.cpp) share them, so both move a parameter by the same arithmetic.
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
};

}  // namespace cpu
}  // namespace ember
