// Parameter initializers, as torch.nn.init: each fills a leaf tensor in place from an explicit
// Generator (so a seed fixes a model's initial weights on every device) under NoGradGuard.
//
// Fans: a tensor (out, in, k...) has fan_in = in * k..., fan_out = out * k... (a Linear weight is
// (out, in)); 1-D tensors have no fans and the fan-based initializers refuse them.
#pragma once

#include "autograd/functions.h"

namespace ember {
namespace nn {
namespace init {

void normal_(Tensor& t, double mean, double std, Generator& gen);
void uniform_(Tensor& t, double lo, double hi, Generator& gen);
// Normal(mean, std) restricted to [lo, hi] (absolute bounds, as torch's trunc_normal_), by
// redrawing the values that fall outside; ViT's default init uses std 0.02, bounds +-2.
void trunc_normal_(Tensor& t, double mean, double std, Generator& gen, double lo = -2, double hi = 2);
// Glorot: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)); N(0, gain^2 * 2 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, Generator& gen, double gain = 1);
void xavier_normal_(Tensor& t, Generator& gen, double gain = 1);
// He, fan_in mode, leaky-ReLU gain sqrt(2 / (1 + a^2)): U(-b, b) with b = gain * sqrt(3 / fan_in),
// or N(0, gain^2 / fan_in). a = sqrt(5) gives PyTorch's Linear default, b = 1 / sqrt(fan_in).
void kaiming_uniform_(Tensor& t, double a, Generator& gen);
void kaiming_normal_(Tensor& t, double a, Generator& gen);
void zeros_(Tensor& t);
void ones_(Tensor& t);
void constant_(Tensor& t, double value);

// (fan_in, fan_out) of a tensor of rank >= 2, or an error naming `op`.
std::pair<int64_t, int64_t> fans(const Tensor& t, const char* op);

}  // namespace init

// Both spellings work: nn::init::normal_(...) (as torch.nn.init) and nn::normal_(...).
using init::constant_;
using init::kaiming_normal_;
using init::kaiming_uniform_;
using init::normal_;
using init::ones_;
using init::trunc_normal_;
using init::uniform_;
using init::xavier_normal_;
using init::xavier_uniform_;
using init::zeros_;

}  // namespace nn
}  // namespace ember
