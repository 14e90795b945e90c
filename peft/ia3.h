// (IA)^3 (Liu et al., "T-Few", 2022) on a Linear: spec §7.1, as Hugging Face peft does it.
//
// A learned vector rescales one side of the layer:
//   not feedforward (attention k, v; GPT-2's fused c_attn)  y = (W x + b) * l      l: ia3_l (out, 1)
//   feedforward (the FFN's second matrix)                    y = W (x * l) + b      l: ia3_l (1, in)
// Scaling the input of the FFN's second matrix is scaling the FFN hidden activation, which is
// what the paper's l_ff does. l starts at ones, so the adapter is a no-op at init.
// Merge: output scaling W <- diag(l) W and b <- l * b; input scaling W <- W diag(l), b unchanged.
//
// On GPT-2 peft's default targets are c_attn and mlp.c_proj (feedforward: mlp.c_proj). c_attn
// is q, k and v fused, so q is scaled too -- not the paper's k, v only (spec §9.12); kept, as peft.
// Whether a module is feedforward: a feedforward_modules string is a full regex match; a list
// entry matches when the name ends with it (peft's plain endswith, no dot required).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/tuner.h"

namespace ember {
namespace peft {

class IA3Layer : public TunerLayer {
public:
    explicit IA3Layer(std::shared_ptr<nn::Linear> base);
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

}  // namespace peft
}  // namespace ember
