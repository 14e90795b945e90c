// The CUDA kernel launchers. Each takes tensors that its front-end in tensor/ops_*.cpp has
// already checked and allocated on the GPU (outputs contiguous unless said otherwise). They mirror
// tensor/cpu/kernels.h: the same names and arguments, file by file (.cu for .cpp).
#pragma once

#include <cstdint>

#include "tensor/elementwise_math.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace ember {
namespace cuda {

// ---- copy.cpp ----
// dst[i] = src[i] over dst's shape, any strides on both sides (src may be broadcast with stride 0),
// converting dtype when they differ.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);  // any strides

// ---- elementwise.cpp ---- inputs already expanded to out's shape (stride 0 where broadcast)
void unary(UnaryOp op, const Tensor& x, const Tensor& out);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& grad, const Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void axpy(const Tensor& x, const Tensor& y, double alpha);  // x += alpha * y, in place, x any strides
void scale(const Tensor& x, double s);                     // x *= s, in place

// ---- reduce.cpp ---- over the last dim of a contiguous (rows, n) tensor
enum class ReduceOp { Sum, Mean, Max, Min, ArgMax, LogSumExp };
void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out);  // x (rows, n) -> out (rows)
// out (cols) = sum (mean: / rows) over the rows of a contiguous x (rows, cols): a bias gradient
void reduce_cols(bool mean, const Tensor& x, const Tensor& out);

// ---- softmax.cpp ---- over the last dim of contiguous (rows, n) tensors
void softmax(const Tensor& x, const Tensor& out, bool log);
void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& out, bool log);
// Attention's softmax with its scale and causal mask folded in: x, y (rows, n), row r the query
// r % tq of tq; key j is masked for query i when j > i + (n - tq) (tq = 0: nothing masked).
//   y = softmax_j(masked ? MASKED_SCORE : scale * x_j)   dx = masked ? 0 : scale * y (g - sum(g y))
constexpr double MASKED_SCORE = -1e30;  // as nn/attention.cpp's masked_fill: a fully masked row is uniform
void scaled_softmax(const Tensor& x, const Tensor& y, double scale, int64_t tq);
void scaled_softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& dx, double scale,
                             int64_t tq);

// ---- matmul.cpp ----
// out (batch, M, N) = a (batch, M, K) @ b (batch, K, N). a and b may have any strides (batch
// stride 0 when broadcast, a transposed layout in the last two dims); out is contiguous.
void matmul(const Tensor& a, const Tensor& b, const Tensor& out);

// ---- index.cpp ----
void gather(const Tensor& x, int dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src);  // in place
void index_select(const Tensor& x, int dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src);  // in place
void one_hot(const Tensor& ids, const Tensor& out);  // out (n, classes), zeroed first
void triangle(const Tensor& x, int64_t diagonal, bool upper, const Tensor& out);

// ---- norm.cpp ---- x (rows, C) contiguous; weight, bias (C) or undefined
void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       const Tensor& y, const Tensor& mean, const Tensor& rstd);
void layernorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                        const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                        const Tensor& dweight, const Tensor& dbias);  // outputs may be undefined
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y,
                     const Tensor& rstd);
void rmsnorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, const Tensor& dx, const Tensor& dweight);

// ---- loss.cpp ---- logits (N, C) contiguous, targets (N) i32/i64
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                           double label_smoothing, const Tensor& log_probs, const Tensor& loss,
                           int64_t* counted);
// grad: the loss's upstream gradient, one element on the GPU (read there: no host sync)
void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                            int64_t ignore_index, double label_smoothing, int64_t counted,
                            const Tensor& dlogits);

// ---- random.cpp ---- element i depends only on (seed, offset, i)
void uniform_fill(const Tensor& out, uint64_t seed, uint64_t offset);
void normal_fill(const Tensor& out, uint64_t seed, uint64_t offset);
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out,
             const Tensor& mask);

// ---- attention.cu ---- q (B, H, Tq, D), k/v (B, Hkv, Tk, D), any strides but a unit one along
// D, D <= 256; real (B, Tk) in q's dtype (nonzero = a real key) or undefined. out (B, H, Tq, D)
// and lse (B, H, Tq) contiguous; dout, out, lse contiguous; dq, dk, dv contiguous (every element
// is written). The CPU kernel's arguments and rule (tensor/cpu/attention.cpp).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& real,
                       const raw::AttentionPattern& pattern, double scale, const Tensor& out,
                       const Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const Tensor& real,
                        const raw::AttentionPattern& pattern, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv);

// ---- optim.cu ---- all contiguous, same shape and dtype; in place on param, exp_avg, exp_avg_sq
void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const raw::AdamWParams& p);

}  // namespace cuda
}  // namespace ember
