// QLoRA's preparation, forward and merges; the math is in qlora.h.
#include "peft/qlora.h"

#include <algorithm>

#include "nn/bf16_linear.h"
#include "peft/methods.h"
#include "peft/peft_model.h"

namespace ember {
namespace peft {

static std::vector<std::string> segments(const std::string& name) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t dot; (dot = name.find('.', start)) != std::string::npos; start = dot + 1)
        out.push_back(name.substr(start, dot - start));
    out.push_back(name.substr(start));
    return out;
}

int quantize_for_qlora(nn::Module& model, const nn::QuantConfig& config, const std::vector<std::string>& keep) {
    std::vector<std::string> peft_paths;  // modules whose Linears belong to a method
    for (auto& [name, m] : model.named_modules()) {
        if (!name.empty() && std::dynamic_pointer_cast<TunerLayer>(m)) peft_paths.push_back(name + ".");
        // A bf16 base has no f32 Linears left to quantize: the method would quietly be plain LoRA.
        EMBER_CHECK(!std::dynamic_pointer_cast<nn::Bf16Linear>(m), "QLoRA / QA-LoRA: ", name, " is a Bf16Linear; "
                    "these methods quantize the f32 Linears to 4 bits, so start from the f32 model (no "
                    "cast_to_bf16 or --base-dtype bf16)");
    }
    return nn::quantize_linears(model, config, [&](const std::string& name) {
        std::vector<std::string> seg = segments(name);
        const std::string& leaf = seg.back();
        if (leaf == "lm_head" || leaf == "classifier" || leaf == "score") return true;
        for (const std::string& k : keep)
            if (name == k || (name.size() > k.size() && name.compare(name.size() - k.size() - 1, k.size() + 1, "." + k) == 0))
                return true;
        for (const std::string& p : peft_paths)
            if (name.rfind(p, 0) == 0) return true;
        for (const std::string& s : seg)
            if (s == "prompt_encoder" || s.rfind("adapter_", 0) == 0) return true;
        return false;
    });
}

QLoraConfig::QLoraConfig() {
    r = QLoraDefaults::r;
    lora_alpha = QLoraDefaults::lora_alpha;
    lora_dropout = QLoraDefaults::lora_dropout;
    target_modules = "all-linear";  // qlora.py find_all_linear_names: every Linear but lm_head
}

void QLoraConfig::prepare_model(nn::Module& model) const {
    if (quantize_base) quantize_for_qlora(model, quant, modules_to_save);
}

void set_quant_merge(PeftModel& pm, QuantMerge mode) {
    for (auto& [key, tl] : pm.tuner_layers()) tl->quant_merge = mode;
}

RequantizeError requantize_error(PeftModel& pm) {
    RequantizeError worst;
    for (auto& [key, tl] : pm.tuner_layers()) {
        const RequantizeError& e = tl->requantize_error();
        worst.max_abs = std::max(worst.max_abs, e.max_abs);
        worst.rms = std::max(worst.rms, e.rms);
        worst.max_abs_delta = std::max(worst.max_abs_delta, e.max_abs_delta);
    }
    return worst;
}

std::shared_ptr<PeftConfig> qlora_preset(const PresetOptions& o) {
    auto c = std::make_shared<QLoraConfig>();
    c->r = o.rank;
    return c;
}

static void check_factors(const QuantizedWeight& w, const Tensor& A, const Tensor& B) {
    EMBER_CHECK(A.dim() == 2 && A.size(1) == w.cols && B.dim() == 2 && B.size(0) == w.rows &&
                    B.size(1) == A.size(0),
                "QLoRA: A ", A.shape(), " and B ", B.shape(), " do not fit ", w.describe(),
                "; A must be (r, ", w.cols, ") and B (", w.rows, ", r)");
}

Tensor qlora_forward(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& A,
                     const Tensor& B, double scaling) {
    check_factors(w, A, B);
    return nn::quant_linear(x, w, bias) + matmul(matmul(x, A.t()), B.t()) * scaling;
}

static Tensor lora_delta(const Tensor& A, const Tensor& B, double scaling) {
    Tensor d = raw::mul_scalar(raw::matmul(B.detach(), A.detach()), scaling);
    return d.dtype() == DType::F32 ? d : raw::to_dtype(d, DType::F32);
}

Tensor merge_lora_dequantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B, double scaling) {
    check_factors(w, A, B);
    return raw::add(dequantize(w), lora_delta(A, B, scaling));
}

QuantizedWeight merge_lora_requantized(const QuantizedWeight& w, const Tensor& A, const Tensor& B,
                                       double scaling, RequantizeError* error) {
    check_factors(w, A, B);
    return requantize_merge(w, lora_delta(A, B, scaling), error);
}

}  // namespace peft
}  // namespace ember
