// Houlsby bottleneck adapters (Houlsby et al., ICML 2019), as google-research/adapter-bert's
// modeling.py: a small residual MLP on the output of a sublayer,
//   y = f + W_up act(W_down f + b_down) + b_up,    f = dropout(sublayer(x))    W_down (m, d), W_up (d, m)
// placed after attention and after the MLP of every block (site modules at adapter_attn_post and
// adapter_mlp_post of nn::TransformerBlock), before the residual add -- for the pre-norm GPT and
// ViT blocks, the paper's "adapter applied to each sublayer's output". W_down, W_up start
// truncated-normal with std init_scale = 1e-3 (cut at 2 std) and the biases at zero, so the
// adapter starts near the identity (not exactly). The adapters train, and so do all LayerNorms
// (adapter-bert's optimization.py trains the "layer_norm" collection; train_layernorms = false
// leaves them frozen). Not mergeable: act is nonlinear.
//
// Pfeiffer's placement (Pfeiffer et al., 2021; adapter-hub's SeqBnConfig) is the same module
// after the MLP only: mh_adapter = false, non_linearity = "relu", adapter_size = d / 16.
//
// Counts, per adapter 2 d m + m + d: GPT-2 small and ViT-B with m = 64, two per block,
// 12 x 2 x 99,136 = 2,379,264 (plus 38,400 LayerNorm values when they train); Pfeiffer m = 48
// one per block 894,528.
//
// peft has no bottleneck adapters, so the files are Ember's, in peft's layout: tensors
// "base_model.model.<block>.<site>.adapter_down.weight" (m, d), ".adapter_down.bias" (m),
// ".adapter_up.weight" (d, m), ".adapter_up.bias" (d), plus every LayerNorm parameter by its own
// name when they train; adapter_config.json has peft's shared keys, peft_type "HOULSBY" and
// adapter-hub's option names below.
#pragma once

#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/transformer.h"
#include "peft/config.h"

namespace ember {
namespace peft {

class HoulsbyConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "HOULSBY"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<HoulsbyConfig>(*this); }
    std::string to_json() const override;
    static HoulsbyConfig from_json(const std::string& text);
    void fill_defaults(const std::string& model_type) override;  // checks the options
    std::shared_ptr<nn::SiteModule> make_site_module(const std::string& site, int64_t dim,
                                                     Generator& init_gen) const override;
    bool trains_base_parameter(const std::string& name, const nn::Module& owner, bool in_target) const override;

    int64_t adapter_size = 64;           // m, the paper's and adapter-bert's default
    bool mh_adapter = true;              // after attention
    bool output_adapter = true;          // after the MLP
    std::string non_linearity = "gelu";  // "gelu" (adapter-bert, tanh form), "relu", "swish"
    double init_scale = 1e-3;            // std of W_down, W_up (adapter-bert)
    bool train_layernorms = true;
};

// One bottleneck adapter at a *_post site: output + up(act(down(output))).
class BottleneckAdapter : public nn::SiteModule {
public:
    BottleneckAdapter(int64_t dim, int64_t size, const std::string& non_linearity, double init_scale,
                      Generator& init_gen);
    std::string type_name() const override { return "BottleneckAdapter"; }
    Tensor forward_site(const nn::SiteInputs& in) override;  // (B, T, d) -> (B, T, d)

    std::shared_ptr<nn::Linear> adapter_down, adapter_up;
    std::string non_linearity;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> houlsby_from_json(const std::string& text);
std::shared_ptr<PeftConfig> houlsby_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
