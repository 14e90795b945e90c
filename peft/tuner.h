// TunerLayer: what every weight-space PEFT method (LoRA, DoRA, IA3, VeRA, ...) shares when it
// wraps one Linear: the frozen base layer, several named adapters, which are active, disabling,
// and merging into the base weight with an exact unmerge.
//
// A method subclasses TunerLayer and writes three things: add_adapter (make its tensors),
// forward_adapters (the base output plus its change, for the active adapters) and delta (what
// merging does to W and b). Everything else -- the switches below, merge bookkeeping, naming --
// lives here once.
//
// The base is any nn::LinearBase: a Linear, or a frozen quantized Linear (QLoRA, QA-LoRA).
//
// Naming (peft's): the wrapped Linear is the child "base_layer"; every adapter tensor is named
// "<kind>.<adapter>[.<rest>]", e.g. "lora_A.default.weight" or "ia3_l.default", so the saved key
// is the name with the second segment (the adapter name) removed, as peft saves it.
//
// Exact unmerge: merging replaces base_layer->weight (and bias) by new tensors and keeps the
// originals; unmerge puts the originals back, so the base is restored bit for bit (no W + d - d
// rounding). The cost is one extra weight per merged layer while merged.
//
// Merging onto a quantized base (one that does not store W densely) replaces the base module
// itself and keeps the original for unmerge, which is again exact. A 4-bit weight has no lossless
// place for a general change, so the layer's quant_merge says what the merged base is:
//   Dequantize  (default) an f32 Linear holding dequant(W) + delta: lossless, the merged model is
//               dense there (merge_and_unload returns f32 Linears);
//   Requantize  a QuantLinear of dequant(W) + delta quantized afresh in W's format: stays 4-bit,
//               costs a rounding error, reported by requantize_error().
// A method whose change fits the quantized format exactly (QA-LoRA's zero points) overrides
// merged_quantized_base.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/linear_base.h"
#include "nn/quant_linear.h"
#include "peft/config.h"

namespace ember {
namespace peft {

// Named child modules that can be added and removed (peft's nn.ModuleDict of adapters):
// lora_A = {"default": Linear(in, r), "other": ...}. A removed name leaves a null slot, which
// the tree skips; adding the name again reuses it.
class ModuleDict : public nn::Module {
public:
    std::string type_name() const override { return "ModuleDict"; }
    void set(const std::string& name, std::shared_ptr<nn::Module> m);
    void erase(const std::string& name) { set(name, nullptr); }
    std::shared_ptr<nn::Module> get(const std::string& name) const;  // null if absent
    template <class M> std::shared_ptr<M> get_as(const std::string& name) const {
        return std::dynamic_pointer_cast<M>(get(name));
    }

private:
    std::map<std::string, std::shared_ptr<nn::Module>> slots_;  // map nodes never move
};

// Named parameters (peft's nn.ParameterDict): ia3_l = {"default": (out, 1)}, so the tensor is
// named "ia3_l.default" with nothing after it. A registered parameter cannot be unregistered, so
// removing one makes a new dict without it (erased), which the owner puts in its slot.
class ParameterDict : public nn::Module {
public:
    std::string type_name() const override { return "ParameterDict"; }
    void set(const std::string& name, const Tensor& value);  // registers value as a parameter
    Tensor get(const std::string& name) const;               // undefined if absent
    std::shared_ptr<ParameterDict> erased(const std::string& name) const;

private:
    std::map<std::string, Tensor> slots_;  // map nodes never move
};

// Persistent buffers by name (peft's BufferDict): frozen tensors an adapter needs, in the module
// tree so that Module::to and state_dict() see them. Several layers may hold the same tensor
// (VeRA's shared projections); Module::to keeps such slots tied.
class BufferDict : public nn::Module {
public:
    std::string type_name() const override { return "BufferDict"; }
    void set(const std::string& name, const Tensor& value);  // registers value as a buffer
    Tensor get(const std::string& name) const;               // undefined if absent
    std::shared_ptr<BufferDict> erased(const std::string& name) const;

private:
    std::map<std::string, Tensor> slots_;  // map nodes never move
};

// What add_adapter gets beyond the config, while one adapter is being attached.
struct AdapterContext {
    Generator& init_gen;             // initial values of new adapter tensors
    std::shared_ptr<Generator> rng;  // dropout draws in training
    // Every Linear this adapter targets, and a scratch map that lives while the adapter is
    // attached: methods sharing tensors across layers (VeRA) make them on the first layer.
    std::vector<std::shared_ptr<nn::LinearBase>> targets;
    std::map<std::string, Tensor> shared;
};

// How merging treats a quantized base (above).
enum class QuantMerge { Dequantize, Requantize };

class TunerLayer : public nn::Module {
public:
    explicit TunerLayer(std::shared_ptr<nn::LinearBase> base);

    // ---- adapters ----
    // Makes the tensors of adapter `name` from `config`; `key` is this layer's full module name
    // (for rank_pattern / alpha_pattern).
    virtual void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                             AdapterContext& ctx) = 0;
    virtual void delete_adapter(const std::string& name);  // removes the name from every dict
    bool has_adapter(const std::string& name) const;
    const std::vector<std::string>& adapter_names() const { return names_; }
    void set_active(const std::vector<std::string>& names) { active_ = names; }
    const std::vector<std::string>& active() const { return active_; }
    void set_disabled(bool on) { disabled_ = on; }
    bool disabled() const { return disabled_; }

    // ---- forward ----
    // Disabled: the base alone (unmerging first if merged, as peft). Merged: the base, which
    // now holds the adapters. Otherwise the method's forward_adapters for the active adapters.
    Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)

    // ---- merging ----
    // Folds `names` (default: the active adapters held here) into base_layer's weight and bias,
    // in order. Throws if a value is not finite when `safe` (the base is then left as it was).
    void merge(const std::vector<std::string>& names = {}, bool safe = false);
    void unmerge();  // restores the pre-merge weight and bias exactly
    bool merged() const { return !merged_.empty(); }
    const std::vector<std::string>& merged_adapters() const { return merged_; }
    // For a quantized base: what a merge makes of it (set before merging), and what the last
    // Requantize merge cost against the exact sum (zero otherwise).
    QuantMerge quant_merge = QuantMerge::Dequantize;
    const RequantizeError& requantize_error() const { return requantize_error_; }

    // The trainable tensors of one adapter by their saved (peft) local names: "lora_A.weight" ->
    // tensor (parameters only; buffers are frozen).
    std::map<std::string, Tensor> adapter_tensors(const std::string& name) const;
    // What the adapter file holds for this layer, under the full saved keys ("base_model.model."
    // + key + "." + local name). By default adapter_tensors(); a method that saves more or less
    // (VeRA's shared projections, AdaLoRA's kept ranks) says so here. Loading copies the file
    // into these tensors, so they share data with the layer's where they are loaded.
    virtual void add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const;
    // Writes into the saved config what training taught this layer (AdaLoRA's rank_pattern).
    virtual void describe(const std::string& /*adapter*/, const std::string& /*key*/, PeftConfig& /*saved*/) const {}

    std::shared_ptr<nn::LinearBase> base_layer;

protected:
    // base_layer(x) plus the change of every active adapter this layer holds.
    virtual Tensor forward_adapters(const Tensor& x) = 0;
    // Folds adapter `name` into W (out, in) and b (out, or undefined), both fresh f32/f64 copies
    // the method may overwrite. Runs under NoGradGuard.
    virtual void merge_into(const std::string& name, Tensor& W, Tensor& b) const = 0;
    // The base that replaces a quantized base_layer once `names` are merged. W and b are the
    // dequantized weight and the bias with merge_into applied for each name. By default what
    // quant_merge says (above).
    virtual std::shared_ptr<nn::LinearBase> merged_quantized_base(const std::vector<std::string>& names,
                                                                  const Tensor& W, const Tensor& b);
    // Adapter names held here that are active, in activation order.
    std::vector<std::string> active_here() const;
    void add_name(const std::string& name);

    std::vector<std::string> names_, active_, merged_;
    bool disabled_ = false;
    Tensor original_weight_, original_bias_;  // kept while merged (a dense base)
    std::shared_ptr<nn::LinearBase> original_base_;  // kept while merged (a quantized base)
    RequantizeError requantize_error_;

};

}  // namespace peft
}  // namespace ember
