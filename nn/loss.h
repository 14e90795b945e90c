// Losses. cross_entropy wraps the fused log-softmax + NLL kernel (ember::cross_entropy).
#pragma once

#include "autograd/functions.h"

namespace ember {
namespace nn {

// Mean cross-entropy of logits (..., C) against class ids (...) (i32/i64). Targets equal to
// ignore_index count for nothing (the mean is over the rest); label_smoothing in [0, 1] mixes the
// one-hot target with the uniform distribution, as torch.nn.functional.cross_entropy.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0);

// mean((pred - target)^2); target broadcasts to pred's shape and gets no gradient only if it
// does not require one.
Tensor mse_loss(const Tensor& pred, const Tensor& target);

}  // namespace nn
}  // namespace ember
