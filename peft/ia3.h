// (IA)^3 (Liu et al., "T-Few", 2022) on a Linear, as peft's tuners/ia3/layer.py.
//
// A learned vector rescales one side of the layer:
//   not feedforward (attention k, v; GPT-2's fused c_attn)  y = (W x + b) * l      l: ia3_l (out, 1)
//   feedforward (the FFN's second matrix)                    y = W (x * l) + b      l: ia3_l (1, in)
// Scaling the input of the FFN's second matrix is scaling the FFN hidden activation, which is
// what the paper's l_ff does. l starts at ones, so the adapter is a no-op at init.
// Merge: output scaling W <- diag(l) W and b <- l * b; input scaling W <- W diag(l), b unchanged.
//
// On GPT-2 peft's default targets are c_attn and mlp.c_proj (feedforward: mlp.c_proj). c_attn
// is q, k and v fused, so q is scaled too -- not the paper's k, v only ; kept, as peft.
// Whether a module is feedforward: a feedforward_modules string is a full regex match; a list
// entry matches when the name ends with it (peft's plain endswith, no dot required).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/config.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

// (IA)^3's options, peft's IA3Config (tuners/ia3/config.py).
class IA3Config : public PeftConfig {
public:
    std::string peft_type() const override { return "IA3"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<IA3Config>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override;
    static IA3Config from_json(const std::string& text);

    // Unset: the model type's default. A feedforward module scales its input, others their output;
    // each must also be a target.
    ModuleSelector feedforward_modules;
    bool init_ia3_weights = true;
    void fill_defaults(const std::string& model_type) override;  // feedforward_modules too
};

class IA3Layer : public TunerLayer {
public:
    explicit IA3Layer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "IA3Linear"; }

    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;
    bool is_feedforward(const std::string& name) const;

    std::shared_ptr<ParameterDict> ia3_l;  // (out, 1) or (1, in) per adapter

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;

private:
    std::map<std::string, bool> feedforward_;
};

// peft's _check_target_module_feedforward.
bool is_feedforward_module(const ModuleSelector& feedforward_modules, const std::string& name);

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> ia3_from_json(const std::string& text);
std::shared_ptr<PeftConfig> ia3_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
