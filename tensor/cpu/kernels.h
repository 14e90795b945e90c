// The CPU kernels. Each takes tensors that its front-end in tensor/ops_*.cpp has already checked
// and allocated (outputs contiguous unless said otherwise) and fills the output. The CUDA kernels
// in tensor/cuda/kernels.h have the same names and arguments, file by file.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/elementwise_math.h"
#include "tensor/tensor.h"

namespace ember {
namespace raw {
struct AdamWParams;  // tensor/ops.h
struct AdamWSlot;    // likewise
struct AdamW8bitSlot;  // likewise
struct AttentionPattern;  // likewise
}
namespace cpu {

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
// Sum (or mean) over the rows of a contiguous x (rows, n) -> out (n): a bias gradient.
void sum_columns(const Tensor& x, const Tensor& out, bool mean);

// ---- softmax.cpp ---- over the last dim of contiguous (rows, n) tensors
void softmax(const Tensor& x, const Tensor& out, bool log);
void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& out, bool log);

// ---- matmul.cpp ----
// out (batch, M, N) = a (batch, M, K) @ b (batch, K, N). a and b may have any strides (batch
// stride 0 when broadcast, a transposed layout in the last two dims); out is contiguous.
void matmul(const Tensor& a, const Tensor& b, const Tensor& out);
// f32 products use an AVX-512 build of the kernel when the CPU has AVX-512; tests turn it off to
// check the AVX2 build against it.
void allow_avx512_matmul(bool allow);
bool cpu_has_avx512();  // AVX-512 F and VL, and built with the AVX-512 kernels (matmul_avx512.cpp)

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
void cross_entropy_backward(double grad, const Tensor& log_probs, const Tensor& targets,
                            int64_t ignore_index, double label_smoothing, int64_t counted,
                            const Tensor& dlogits);

// ---- random.cpp ---- element i depends only on (seed, offset, i)
void uniform_fill(const Tensor& out, uint64_t seed, uint64_t offset);
void normal_fill(const Tensor& out, uint64_t seed, uint64_t offset);
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out,
             const Tensor& mask);

// ---- optim.cpp ---- all contiguous, same shape and dtype; in place on param, exp_avg, exp_avg_sq
// Fused attention (tensor/cpu/attention.cpp): q (B, H, Tq, D), k/v (B, Hkv, Tk, D), any strides
// but a unit one along D; real (B, Tk) in q's dtype (nonzero = a real key) or undefined.
// out (B, H, Tq, D) and lse (B, H, Tq) contiguous; dq, dk, dv contiguous and zeroed.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& real,
                       const raw::AttentionPattern& pattern, double scale, const Tensor& out,
                       const Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const Tensor& real,
                        const raw::AttentionPattern& pattern, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv);
void adamw_multi_(const std::vector<raw::AdamWSlot>& slots);  // one pass over all
// ---- optim_8bit.cpp ---- checked by raw::adamw_8bit_multi_; one pass over all blocks of all slots
void adamw_8bit_multi_(const std::vector<raw::AdamW8bitSlot>& slots);

}  // namespace cpu
}  // namespace ember
