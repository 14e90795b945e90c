// Raw operations: compute and return a result, record nothing for autograd.
//
// Each one is a short front-end (tensor/ops_*.cpp) that checks shapes and dtypes, allocates the
// output and calls the CPU or CUDA kernel in a visible switch on the device. The differentiable
// versions in autograd/functions.h call these and record how to go backward.
//
// Conventions: binary ops broadcast (numpy rules) and need equal dtypes; outputs are contiguous;
// comparisons return 1 or 0 in the inputs' dtype; a `dims` list may hold negative dims, and an
// empty list means every dim.
#pragma once

#include <utility>
#include <vector>

#include "tensor/elementwise_math.h"
#include "tensor/tensor.h"

namespace ember {
namespace raw {

// ---- views (tensor/ops_views.cpp); none copies except reshape of a non-viewable layout ----
Tensor reshape(const Tensor& x, Shape shape);
Tensor view(const Tensor& x, Shape shape);
Tensor permute(const Tensor& x, const Shape& order);
Tensor transpose(const Tensor& x, int d0, int d1);
Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor squeeze(const Tensor& x, int dim);
Tensor unsqueeze(const Tensor& x, int dim);
Tensor flatten(const Tensor& x, int start_dim, int end_dim);
Tensor alias(const Tensor& x);  // a new handle over the same view, without autograd metadata

// ---- copies (tensor/ops_copy.cpp) ----
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType dtype);
Tensor to_device(const Tensor& x, Device device);
void copy_(const Tensor& dst, const Tensor& src);  // dst = src (broadcasting src); bumps version
void fill_(const Tensor& dst, double value);

// ---- elementwise (tensor/ops_elementwise.cpp) ----
Tensor unary(UnaryOp op, const Tensor& x);
Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& grad);  // grad * f'(x)
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double p);
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond != 0 ? a : b
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);  // mask != 0 -> value
// In place, for optimizers: x += alpha * y, x *= s. Both bump x's version.
void add_(const Tensor& x, const Tensor& y, double alpha = 1);
void mul_(const Tensor& x, double s);

// ---- reductions (tensor/ops_reduce.cpp) ----
Tensor sum(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, std::vector<int> dims = {}, bool keepdim = false);
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);  // i64
Tensor var(const Tensor& x, std::vector<int> dims = {}, bool unbiased = true, bool keepdim = false);
Tensor logsumexp(const Tensor& x, std::vector<int> dims, bool keepdim = false);
// Sums a broadcast gradient back down to `shape` (the inverse of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- softmax (tensor/ops_softmax.cpp) ----
Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);
Tensor softmax_backward(const Tensor& y, const Tensor& grad, int dim);      // y = softmax(x)
Tensor log_softmax_backward(const Tensor& y, const Tensor& grad, int dim);  // y = log_softmax(x)
// Attention's softmax over the last dim of scores x (..., Tq, Tk) with the scale and, when causal,
// the mask folded in: y = softmax(masked ? -1e30 : scale * x), key j masked for query i when
// j > i + (Tk - Tq); masked positions get no gradient (tensor/ops_scaled_softmax.cpp).
Tensor scaled_softmax(const Tensor& x, double scale, bool causal);
Tensor scaled_softmax_backward(const Tensor& y, const Tensor& grad, double scale, bool causal);

// ---- matrix products (tensor/ops_matmul.cpp) ----
// (..., M, K) @ (..., K, N) -> (..., M, N); batch dims broadcast; both operands at least 2-D.
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- joining and indexing (tensor/ops_index.cpp) ----
Tensor cat(const std::vector<Tensor>& xs, int dim);
Tensor stack(const std::vector<Tensor>& xs, int dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim);  // views
std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim);                      // views
Tensor gather(const Tensor& x, int dim, const Tensor& index);  // out[..i..] = x[..index[..i..]..]
Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src);
Tensor index_select(const Tensor& x, int dim, const Tensor& index);  // index is 1-D
// out = x with out.select(dim, index[i]) += src.select(dim, i); the backward of index_select.
Tensor index_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src);
Tensor embedding(const Tensor& weight, const Tensor& ids);  // (V, C), ids (...) -> (..., C)
// d weight of an embedding: (V, C) from ids (...) and grad (..., C). Deterministic order.
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t vocab_size);
Tensor one_hot(const Tensor& ids, int64_t classes, DType dtype = DType::F32);

// ---- masks (tensor/ops_index.cpp) ----
Tensor triu(const Tensor& x, int64_t diagonal = 0);  // keep j - i >= diagonal in the last 2 dims
Tensor tril(const Tensor& x, int64_t diagonal = 0);  // keep j - i <= diagonal
// (T, T) additive attention mask: 0 where key j <= query i, -inf above the diagonal.
Tensor causal_mask(int64_t T, DType dtype = DType::F32, Device device = Device::cpu());

// ---- normalization (tensor/ops_norm.cpp); fused, over the last dim ----
struct NormOutput {
    Tensor y;     // (..., C)
    Tensor mean;  // (...) for layernorm; undefined for rmsnorm
    Tensor rstd;  // (...) 1 / sqrt(var + eps), or 1 / sqrt(mean(x^2) + eps)
};
struct NormGrads {
    Tensor dx, dweight, dbias;  // dweight / dbias undefined when not asked for
};
// weight and bias are (C) or undefined.
NormOutput layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
NormGrads layernorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                             const NormOutput& saved, bool need_dx, bool need_dweight,
                             bool need_dbias);
NormOutput rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps);
NormGrads rmsnorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                           const NormOutput& saved, bool need_dx, bool need_dweight);

// ---- loss (tensor/ops_loss.cpp) ----
// Mean cross-entropy of logits (N, C) against class ids (N), fused with log-softmax. Rows whose
// target is ignore_index count for nothing; label_smoothing mixes the one-hot target with uniform.
struct CrossEntropyOutput {
    Tensor loss;      // () scalar
    Tensor log_probs; // (N, C), kept for the backward pass
    int64_t counted;  // rows not ignored
};
CrossEntropyOutput cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                         int64_t ignore_index = -100,
                                         double label_smoothing = 0);
// d logits (N, C); grad is the scalar upstream gradient.
Tensor cross_entropy_backward(const Tensor& grad, const CrossEntropyOutput& saved,
                              const Tensor& targets, int64_t ignore_index, double label_smoothing);

// ---- random (tensor/ops_random.cpp) ----
// Zeroes each element with probability p and scales the rest by 1 / (1 - p). Returns the output
// and the mask (1 kept, 0 dropped, in x's dtype); element i's fate depends only on (seed, offset, i).
std::pair<Tensor, Tensor> dropout(const Tensor& x, double p, Generator& gen);

// ---- fused attention (tensor/ops_attention.cpp; CPU only) ----
// softmax(scale q k^T + mask) v without the (Tq, Tk) scores: q (B, H, Tq, D), k and v
// (B, Hkv, Tk, D) with H % Hkv == 0 (query head h reads kv head h / (H / Hkv)). Query i sits at
// key position i + Tk - Tq (prefix and cached keys come first). A query that sees no key gets
// the mean of all values. The backward recomputes the scores from the saved log-sum-exp.
struct AttentionPattern {
    bool causal = false;  // query i sees keys j <= i + Tk - Tq
    Tensor key_padding;   // optional (B, Tk): nonzero = a real key, 0 = padding
    // LongLoRA's shifted sparse attention (S2-Attn; Chen et al., ICLR 2024) when group > 0: the
    // T = Tq = Tk tokens are cut into groups of G = group (T % G == 0, H even); heads [0, H/2)
    // see only their own group [kG, (k+1)G), heads [H/2, H) groups shifted by s = G/2 (floor),
    // and `causal` applies inside a group. The shifted half has two forms:
    //   group_roll false (no wrap; LongLoRA's flash-attention path, whose cu_seqlens are
    //     [0, s, s+G, ..., T-s, T]): segments [0, s), [s, s+G), ..., [T-G+s, T). The first and
    //     last segments are half-groups of their own; no token sees across the sequence's ends.
    //   group_roll true (LongLoRA's non-flash path, torch.roll): tokens rolled by -s, grouped,
    //     rolled back. The last shifted group is [T-s, T) then [0, s), in that order, so with
    //     causal the first s tokens see the last s (the leak of LongLoRA issues #15, #90).
    int64_t group = 0;
    bool group_roll = false;
};
struct AttentionOutput {
    Tensor out;  // (B, H, Tq, D)
    Tensor lse;  // (B, H, Tq) log-sum-exp of each query's visible scores
};
struct AttentionGrads {
    Tensor dq, dk, dv;
};
AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionPattern& pattern, double scale);
AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const AttentionOutput& saved,
                                  const AttentionPattern& pattern, double scale);
// (1, H, Tq, Tk): 1 where the pattern lets query i of head h see key j, padding aside (the
// fused kernel's own rule, as a mask for the composed path).
Tensor attention_visible(const AttentionPattern& pattern, int64_t H, int64_t Tq, int64_t Tk,
                         DType dtype, Device device);

// ---- optimizers (tensor/ops_optim.cpp) ----
// One fused AdamW update (decoupled weight decay, as torch.optim.AdamW), in place on param,
// exp_avg and exp_avg_sq; step is 1-based (bias correction uses beta^step).
struct AdamWParams {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;
};
// All four contiguous, same shape, dtype (f32/f64) and device.
void adamw_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
            const Tensor& exp_avg_sq, const AdamWParams& p);
// The same update for many tensors in one pass (one fork/join on the CPU); all on one device
// and of one dtype. Each tensor gets the bits adamw_ alone would give it.
struct AdamWSlot {
    Tensor param, grad, exp_avg, exp_avg_sq;
    AdamWParams hp;
};
void adamw_multi_(const std::vector<AdamWSlot>& slots);

// AdamW with 8-bit state (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", 2022;
// bitsandbytes' AdamW8bit): exp_avg and exp_avg_sq are stored as one byte per element, cut into
// blocks of ADAMW_8BIT_BLOCK elements that each keep their absmax in f32. A byte is an index into
// bitsandbytes' signed dynamic code (exp_avg) or unsigned one (exp_avg_sq), tensor/quant.h; the
// moment is code[byte] * absmax of its block. Each update dequantizes a block, applies adamw_'s
// formulas in f32, and quantizes it again with the block's new absmax, to the nearest code
// (exp_avg keeps its sign: a value rounded to a code of the other sign moves one code back).
// The block of 256 is bitsandbytes' since 0.44 (csrc/ops.cu BLOCKSIZE_2STATE; 2048 before, changed in
// bitsandbytes-foundation/bitsandbytes#1365).
constexpr int64_t ADAMW_8BIT_BLOCK = 256;
// param and grad: contiguous f32 of n elements, on the CPU. The codes: the n bytes in an i32
// tensor of ceil(n / 4) words (as ByteBuffer, tensor/quant.h); the absmaxes: f32, one per block.
// All zero (codes 0 times absmax 0) is the state before the first step.
struct AdamW8bitSlot {
    Tensor param, grad, exp_avg_codes, exp_avg_absmax, exp_avg_sq_codes, exp_avg_sq_absmax;
    AdamWParams hp;
};
void adamw_8bit_multi_(const std::vector<AdamW8bitSlot>& slots);

}  // namespace raw
}  // namespace ember
