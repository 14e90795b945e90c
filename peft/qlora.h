// QLoRA (Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", 2023): LoRA over a
// frozen NF4 base (tensor/quant.h: block 64, double quantization),
//   h = dequant(W) x + b + s * B A dropout(x),   A (r, in), B (out, r), s = alpha / r,
// on every Linear but the output head, norms kept in f32 (artidoro/qlora qlora.py:
// find_all_linear_names skips lm_head; defaults lora_r 64, lora_alpha 16, lora_dropout 0).
// A 4-bit base has no lossless merge: merge into the dequantized f32 weight, or requantize the
// sum and accept (and report) its rounding (peft warns likewise, huggingface/peft#2321).
#pragma once

#include "nn/quant_linear.h"

namespace ember {
namespace peft {

// qlora.py's defaults.
struct QLoraDefaults {
    static constexpr int64_t r = 64;
    static constexpr double lora_alpha = 16, lora_dropout = 0;
};

// Quantizes every Linear of `model` but "lm_head" (NF4 with double quantization unless `config`
// says otherwise); returns how many. Everything else (embeddings, norms, the head) stays f32.
int quantize_for_qlora(nn::Module& model, const nn::QuantConfig& config = {});

// One QLoRA projection without dropout: quant_linear(x, W, bias) + s * (x A^T) B^T, x (..., in).
Tensor qlora_forward(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& A,
                     const Tensor& B, double scaling);

// dequant(W) + s B A, the lossless merge into an f32 base (out, in).
Tensor merge_lora_dequantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B, double scaling);
// The same sum requantized in W's format, and what the rounding cost (tensor/quant.h).
QuantizedWeight merge_lora_requantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B,
                                       double scaling, RequantizeError* error = nullptr);

}  // namespace peft
}  // namespace ember
