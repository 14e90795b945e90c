// The differentiable operations: the API a model is written in.
//
// Each one computes its result with the raw op of the same name (tensor/ops.h) and, when grad
// mode is on and an input requires a gradient, records a node whose backward is written right
// below its forward in autograd/*.cpp. Views are differentiable too: see the Tensor methods.
#pragma once

#include <vector>

#include "autograd/autograd.h"
#include "tensor/ops.h"

namespace ember {

// ---- elementwise (autograd/elementwise.cpp); binary ops broadcast ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);  // a > 0 where b's gradient is needed
Tensor maximum(const Tensor& a, const Tensor& b);  // ties send the gradient to a
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);
Tensor pow(const Tensor& x, double p);
Tensor clamp(const Tensor& x, double lo, double hi);  // gradient 1 inside [lo, hi], else 0

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);  // gradient 0
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
enum class GeluApprox { None, Tanh };  // the exact erf form, or GPT-2's tanh approximation
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::Tanh);
Tensor silu(const Tensor& x);

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // no gradient to cond
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// Comparisons give 1/0 in the inputs' dtype and carry no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& x, double s);
Tensor operator+(double s, const Tensor& x);
Tensor operator-(const Tensor& x, double s);
Tensor operator-(double s, const Tensor& x);
Tensor operator*(const Tensor& x, double s);
Tensor operator*(double s, const Tensor& x);
Tensor operator/(const Tensor& x, double s);
Tensor operator/(double s, const Tensor& x);

// ---- reductions and softmax (autograd/reduce.cpp); empty dims = all ----
Tensor sum(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);  // ties share
Tensor min(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);  // no gradient
Tensor var(const Tensor& x, std::vector<int> dims = {}, bool unbiased = true, bool keepdim = false);
Tensor std_dev(const Tensor& x, std::vector<int> dims = {}, bool unbiased = true, bool keepdim = false);
Tensor logsumexp(const Tensor& x, std::vector<int> dims, bool keepdim = false);
Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);
// softmax(scale * scores) over the last dim, causal mask folded in (raw::scaled_softmax).
Tensor scaled_softmax(const Tensor& scores, double scale, bool causal);

// ---- matrix product (autograd/linalg.cpp) ----
// A frozen operand costs nothing in the backward pass: its gradient product is never computed.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- joining and indexing (autograd/indexing.cpp) ----
Tensor cat(const std::vector<Tensor>& xs, int dim);
Tensor stack(const std::vector<Tensor>& xs, int dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim);
std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim);
Tensor gather(const Tensor& x, int dim, const Tensor& index);
Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src);
Tensor index_select(const Tensor& x, int dim, const Tensor& index);
Tensor embedding(const Tensor& weight, const Tensor& ids);  // (V, C), ids (...) -> (..., C)
Tensor triu(const Tensor& x, int64_t diagonal = 0);
Tensor tril(const Tensor& x, int64_t diagonal = 0);
Tensor one_hot(const Tensor& ids, int64_t classes, DType dtype = DType::F32);  // no gradient

// ---- fused layers (autograd/fused.cpp) ----
// Over the last dim; weight and bias (C) may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// Mean cross-entropy of logits (..., C) against class ids (...).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0);
// Fused attention (raw::attention_forward; CPU only): q (B, H, Tq, D), k/v (B, Hkv, Tk, D).
// Saves q, k, v, the output and its log-sum-exp; no (Tq, Tk) tensor is kept.
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                       const raw::AttentionPattern& pattern, double scale);
// Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, Generator& gen, bool training = true);

}  // namespace ember
