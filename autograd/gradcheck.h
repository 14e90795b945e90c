// gradcheck: compares the gradients autograd computes with central finite differences, in float64.
//
// The output is reduced to a scalar by a fixed random projection, L = sum(f(x) * R) with R drawn
// from a seeded normal, never by a plain sum: a plain sum hides backward bugs whose errors add up
// to zero across an output row (a softmax backward that forgets the sum term passes a plain-sum
// check). Every element of every input that requires a gradient is perturbed by +-eps, and
//     |numeric - analytic| <= atol + rtol * |numeric|
// must hold for each. Use it on your own ops: it is public API.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ember {

struct GradcheckOptions {
    double eps = 1e-6;   // finite-difference step
    double atol = 1e-6;  // absolute tolerance
    double rtol = 1e-4;  // relative tolerance
    uint64_t seed = 20261122;  // for the projection R
    std::string name;    // names the op in the report; defaults to the output's last node
};

struct GradcheckResult {
    bool ok = true;
    int64_t elements_checked = 0;
    double max_abs_error = 0;
    std::string report;  // the first mismatch (op, input, element, numeric and analytic values)
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// inputs: f64 tensors; those with requires_grad are checked. f must be deterministic (for
// dropout, re-seed the generator inside f).
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace ember
