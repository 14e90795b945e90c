// LoRA (Hu et al., 2021) and DoRA (Liu et al., 2024) on a Linear, as peft's tuners/lora/layer.py.
//
// LoRA adds a low-rank change to the frozen weight W0 (out, in):
//   h = W0 x + b + s * B A dropout(x),     A (r, in), B (out, r), s = alpha / r (alpha / sqrt(r)
//   with use_rslora). A starts kaiming-uniform(a = sqrt 5), i.e. U(-1/sqrt(in), 1/sqrt(in)), and
//   B at zero, so the adapter is a no-op until trained. Merge: W <- W + s B A.
//
// DoRA (use_dora) splits the adapted weight into a direction and a per-output-channel magnitude m
// (out), initialised to the norms of W0's rows, i.e. over the input dim of the (out, in) weight
// (peft's torch.linalg.norm(W, dim=1); the paper's "column" norm of its (in, out) W):
//   W' = m / ||W0 + s B A||_row * (W0 + s B A)
// computed as peft does, without forming W':
//   h = W0 x + b + (m/n - 1) * (W0 dropout(x)) + (m/n) * s * B A dropout(x),   n = ||W0 + s B A||_row
// with n detached: no gradient flows through the norm (the paper's §4.3 memory saving), so m/n is
// treated as a constant scale per output channel in the backward pass.
//
// Tensors, peft's names: lora_A.<adapter>.weight (r, in), lora_B.<adapter>.weight (out, r),
// lora_magnitude_vector.<adapter> (out) -- peft keeps the last in a module as ".weight" in memory
// but saves it as "lora_magnitude_vector"; here it is named as saved.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/config.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

// LoRA's options, peft's LoraConfig (tuners/lora/config.py); DoRA is use_dora.
class LoraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "LORA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<LoraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override;
    static LoraConfig from_json(const std::string& text);
    void fill_defaults(const std::string& model_type) override;
    // bias "all": every bias of the model trains; "lora_only": the biases of the wrapped Linears.
    bool trains_base_parameter(const std::string& name, const nn::Module& owner, bool in_target) const override;

    int64_t r = 8;
    double lora_alpha = 8;
    double lora_dropout = 0;
    std::string bias = "none";  // "none", "all", "lora_only"
    bool use_rslora = false;    // scale alpha / sqrt(r) instead of alpha / r
    bool use_dora = false;
    // true: A kaiming-uniform(a = sqrt 5), B zero; "gaussian": A ~ N(0, 1/r); false: B random too
    // (not a no-op; for tests).
    std::string init_lora_weights = "true";
    std::map<std::string, int64_t> rank_pattern;   // regex-suffix key -> r
    std::map<std::string, double> alpha_pattern;   // regex-suffix key -> alpha

    // r, alpha and the scaling of the layer `key` (its rank_pattern / alpha_pattern entries, else
    // r and lora_alpha; rsLoRA's alpha / sqrt(r) when use_rslora). `method` names it in the error
    // for r <= 0.
    struct LayerRank {
        int64_t r;
        double alpha, scaling;
    };
    LayerRank rank_at(const std::string& key, const char* method) const;
};

class LoraLayer : public TunerLayer {
public:
    explicit LoraLayer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "LoraLinear"; }

    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;

    // s * B A, the change LoRA makes to W (out, in); without DoRA's rescaling.
    Tensor delta_weight(const std::string& name) const;
    // The per-output-channel norm ||W0 + s B A||_row (out), as DoRA uses it (detached).
    Tensor dora_weight_norm(const std::string& name) const;

    struct Settings {
        int64_t r = 0;
        double alpha = 0, scaling = 0, dropout = 0;
        bool use_dora = false;
    };
    const Settings& settings(const std::string& name) const;

    std::shared_ptr<ModuleDict> lora_A, lora_B;           // Linear(in, r), Linear(r, out), no bias
    std::shared_ptr<ParameterDict> lora_magnitude_vector;  // DoRA's m (out)
    std::shared_ptr<Generator> rng;                        // dropout draws
    // DoRA: true (peft, the paper's §4.3) takes no gradient through the norm n. false
    // differentiates through it too -- the exact derivative of W', for gradchecks and study.
    bool dora_detach_norm = true;

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;

private:
    std::map<std::string, Settings> settings_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> lora_from_json(const std::string& text);
std::shared_ptr<PeftConfig> lora_preset(const PresetOptions& options);
std::shared_ptr<PeftConfig> dora_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
