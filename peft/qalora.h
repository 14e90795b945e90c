// QA-LoRA (Xu et al., "QA-LoRA: Quantization-Aware Low-Rank Adaptation", ICLR 2024) over a
// group-wise INT4 base (tensor/quant.h, groups of L inputs per output row):
//   h = W x + b + s * B A pool(x),   pool(x)[g] = mean of x over group g (L inputs),
//   A (r, in / L), B (out, r), s = alpha / r.
// Mean pooling is the reference's convention (yuhuixu1993/qa-lora peft_utils.py QuantLoraLinear,
// nn.AvgPool1d(L)); peft's QALoraLinearVariant multiplies by in / L instead, a constant A absorbs.
// Because the change is constant inside each group, ΔW[o][i] = s (B A)[o][g(i)] / L, merging
// needs no new weight: it folds into the zero points, z' = z - ΔW / scale (qa-lora merge.py),
// and the merged model is still INT4 with the same integer codes.
//
// As a method: QALoraConfig is peft's LoraConfig with use_qalora = true and qalora_group_size = L
// (peft tuners/lora/config.py), so the adapter file is a peft LoRA file (peft_type "LORA",
// lora_A.weight (r, in / L), lora_B.weight (out, r)). Its prepare_model quantizes every Linear but
// the head to INT4 with groups of L. Choice: the pooled input is the mean (the reference's
// AvgPool1d), not peft's mean * (in / L): a peft user loading an Ember file gets outputs whose
// adapter part is in / L times larger; A absorbs the constant either way, so training is alike.
#pragma once

#include "nn/quant_linear.h"
#include "peft/lora.h"

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

class QALoraConfig : public LoraConfig {
public:
    QALoraConfig();  // qa-lora qalora.py: r 64, alpha 16, dropout 0, all-linear; L = 32 (GPTQ 4bit-32g)
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<QALoraConfig>(*this); }
    std::string to_json() const override;  // LoraConfig's keys with use_qalora true
    static QALoraConfig from_json(const std::string& text);
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override { return "QALoraLinear"; }
    // Quantizes every Linear but the head to INT4 with groups of qalora_group_size, unless
    // quantize_base is off.
    void prepare_model(nn::Module& model) const override;

    // The pooling width L, also the INT4 group size of the base. peft's dataclass default is 16
    // (used for a file without the key); Ember's own default is the reference's 32.
    int64_t qalora_group_size = 32;
    bool quantize_base = true;
};

// QA-LoRA on one Linear-like base: lora_A.<adapter>.weight (r, in / L), lora_B (out, r); A
// kaiming-uniform over its width in / L (peft's LoRA init on the pooled width), B zero, so it
// starts as a no-op. On a dense base (an f32 Linear) merging adds the group-constant change to W;
// on an INT4 base with groups of L it folds into the zero points and keeps the codes.
class QALoraLayer : public TunerLayer {
public:
    explicit QALoraLayer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "QALoraLinear"; }
    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;

    struct Settings {
        int64_t r = 0, group_size = 0;
        double scaling = 0, dropout = 0;
    };
    const Settings& settings(const std::string& name) const;
    // s B A / L (out, in / L): the change of W per (output, group).
    Tensor group_delta(const std::string& name) const;

    std::shared_ptr<ModuleDict> lora_A, lora_B;
    std::shared_ptr<Generator> rng;

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;
    std::shared_ptr<nn::LinearBase> merged_quantized_base(const std::vector<std::string>& names, const Tensor& W,
                                                          const Tensor& b) override;

private:
    std::map<std::string, Settings> settings_;
};

// The method table's row: --rank as r, alpha 16, L 32.
std::shared_ptr<PeftConfig> qalora_from_json(const std::string& text);
std::shared_ptr<PeftConfig> qalora_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
