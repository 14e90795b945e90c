// QA-LoRA (Xu et al., "QA-LoRA: Quantization-Aware Low-Rank Adaptation", ICLR 2024) over a
// group-wise INT4 base (tensor/quant.h, groups of L inputs per output row):
//   h = W x + b + s * B A pool(x),   pool(x)[g] = mean of x over group g (L inputs),
//   A (r, in / L), B (out, r), s = alpha / r.
// Mean pooling is the reference's convention (yuhuixu1993/qa-lora peft_utils.py QuantLoraLinear,
// nn.AvgPool1d(L)); peft's QALoraLinearVariant multiplies by in / L instead, a constant A absorbs.
// Because the change is constant inside each group, ΔW[o][i] = s (B A)[o][g(i)] / L, merging
// needs no new weight: it folds into the zero points, z' = z - ΔW / scale (qa-lora merge.py),
// and the merged model is still INT4 with the same integer codes.
#pragma once

#include "nn/quant_linear.h"

namespace ember {
namespace peft {

// x (..., in) -> (..., in / L): the mean of each group of L consecutive inputs (differentiable).
Tensor group_mean(const Tensor& x, int64_t group_size);

// The change per (output, group) that merging folds in: s * B A / L, (out, in / L).
Tensor qalora_group_delta(const Tensor& A, const Tensor& B, double scaling, int64_t group_size);

// One QA-LoRA projection: quant_linear(x, W, bias) + s * (pool(x) A^T) B^T, x (..., in).
Tensor qalora_forward(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& A,
                      const Tensor& B, double scaling);

// Folds s B A into w's zero points (w must be INT4 with group size L = in / A's width).
void merge_qalora(QuantizedWeight& w, const Tensor& A, const Tensor& B, double scaling);

}  // namespace peft
}  // namespace ember
