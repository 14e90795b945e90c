// QLoRA (Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", 2023): LoRA over a
// frozen NF4 base (tensor/quant.h: block 64, double quantization),
//   h = dequant(W) x + b + s * B A dropout(x),   A (r, in), B (out, r), s = alpha / r,
// on every Linear but the output head, norms kept in f32 (artidoro/qlora qlora.py:
// find_all_linear_names skips lm_head; defaults lora_r 64, lora_alpha 16, lora_dropout 0).
// A 4-bit base has no lossless merge: merge into the dequantized f32 weight, or requantize the
// sum and accept (and report) its rounding (peft warns likewise, huggingface/peft#2321).
//
// As a method, QLoRA is LoRA (peft/lora.h's LoraLayer) on nn::QuantLinear bases: QLoraConfig is
// a LoraConfig whose prepare_model quantizes the model first. Its adapter file is a plain peft
// LoRA adapter (peft_type "LORA", lora_A / lora_B keys), as qlora.py saves with peft, so it loads
// onto the f32 base and onto the 4-bit one (quantize_for_qlora first) alike.
#pragma once

#include "nn/quant_linear.h"
#include "peft/lora.h"

namespace ember {
namespace peft {

// qlora.py's defaults.
struct QLoraDefaults {
    static constexpr int64_t r = 64;
    static constexpr double lora_alpha = 16, lora_dropout = 0;
};

// Quantizes every Linear of `model` but the output head (NF4 with double quantization unless
// `config` says otherwise); returns how many. Everything else stays f32: embeddings, norms, the
// head (a module named lm_head, or classifier / score as peft's all-linear leaves out), the
// modules named in `keep` (a config's modules_to_save, matched as a name or ".name" suffix), and
// every Linear that belongs to a PEFT method (inside a TunerLayer -- LoRA's own A and B, a base
// already wrapped --, a site adapter "adapter_*" or the "prompt_encoder").
int quantize_for_qlora(nn::Module& model, const nn::QuantConfig& config = {},
                       const std::vector<std::string>& keep = {});

class QLoraConfig : public LoraConfig {
public:
    QLoraConfig();  // qlora.py's defaults: r 64, alpha 16, dropout 0, target_modules all-linear
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<QLoraConfig>(*this); }
    // Quantizes the model (quantize_for_qlora with `quant`) unless quantize_base is off.
    void prepare_model(nn::Module& model) const override;

    nn::QuantConfig quant;     // NF4, block 64, double quantization
    bool quantize_base = true;  // false: attach to the model as it is (already quantized)
};

// Sets how merging treats every quantized base of `pm` (peft/tuner.h QuantMerge): Dequantize
// (lossless, f32 Linears) or Requantize (stays 4-bit; the error is reported).
void set_quant_merge(PeftModel& pm, QuantMerge mode);
// The largest requantization error of the layers' last merges (zero when none requantized).
RequantizeError requantize_error(PeftModel& pm);

// The method table's row (peft/methods.h): --rank as r, qlora.py's alpha 16.
std::shared_ptr<PeftConfig> qlora_preset(const PresetOptions& options);

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
