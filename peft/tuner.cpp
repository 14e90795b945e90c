// TunerLayer: adapter bookkeeping, the disabled / merged / active forward switch, and merging
// with an exact unmerge. The methods' own math is in lora.cpp, ia3.cpp, vera.cpp.
#include "peft/tuner.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ember {
namespace peft {

// ---- the dicts ----

void ModuleDict::set(const std::string& name, std::shared_ptr<nn::Module> m) {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
        if (!m) return;
        it = slots_.emplace(name, nullptr).first;
        register_module(name, it->second);
    }
    it->second = std::move(m);
}

std::shared_ptr<nn::Module> ModuleDict::get(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? nullptr : it->second;
}

void ParameterDict::set(const std::string& name, const Tensor& value) {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
        it = slots_.emplace(name, value).first;
        register_parameter(name, it->second);
    } else {
        it->second = value;
        it->second.set_requires_grad(true);
    }
}

Tensor ParameterDict::get(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? Tensor() : it->second;
}

std::shared_ptr<ParameterDict> ParameterDict::erased(const std::string& name) const {
    auto out = std::make_shared<ParameterDict>();
    for (const auto& [n, t] : slots_)
        if (n != name) {
            bool requires = t.requires_grad();
            out->set(n, t);
            out->slots_[n].set_requires_grad(requires);
        }
    return out;
}

void BufferDict::set(const std::string& name, const Tensor& value) {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
        it = slots_.emplace(name, value).first;
        register_buffer(name, it->second);
    } else {
        it->second = value;
    }
}

Tensor BufferDict::get(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? Tensor() : it->second;
}

std::shared_ptr<BufferDict> BufferDict::erased(const std::string& name) const {
    auto out = std::make_shared<BufferDict>();
    for (const auto& [n, t] : slots_)
        if (n != name) out->set(n, t);
    return out;
}

// ---- TunerLayer ----

TunerLayer::TunerLayer(std::shared_ptr<nn::LinearBase> base) : base_layer(std::move(base)) {
    EMBER_CHECK(base_layer, "TunerLayer: needs a Linear to wrap, got null");
    register_module("base_layer", base_layer);
}

bool TunerLayer::has_adapter(const std::string& name) const {
    return std::find(names_.begin(), names_.end(), name) != names_.end();
}

void TunerLayer::add_name(const std::string& name) {
    if (!has_adapter(name)) names_.push_back(name);
}

std::vector<std::string> TunerLayer::active_here() const {
    std::vector<std::string> out;
    for (const std::string& a : active_)
        if (has_adapter(a)) out.push_back(a);
    return out;
}

void TunerLayer::delete_adapter(const std::string& name) {
    EMBER_CHECK(has_adapter(name), type_name(), ".delete_adapter: no adapter named '", name, "' here");
    EMBER_CHECK(std::find(merged_.begin(), merged_.end(), name) == merged_.end(), type_name(),
                ".delete_adapter('", name, "'): the adapter is merged; unmerge first");
    for (auto& [child, m] : named_children()) {
        if (auto md = std::dynamic_pointer_cast<ModuleDict>(m)) md->erase(name);
        else if (auto pd = std::dynamic_pointer_cast<ParameterDict>(m)) replace_submodule(child, pd->erased(name));
        else if (auto bd = std::dynamic_pointer_cast<BufferDict>(m)) replace_submodule(child, bd->erased(name));
    }
    names_.erase(std::find(names_.begin(), names_.end(), name));
    active_.erase(std::remove(active_.begin(), active_.end(), name), active_.end());
}

Tensor TunerLayer::forward(const Tensor& x) {
    if (disabled_) {
        if (merged()) unmerge();
        return base_layer->forward(x);
    }
    if (merged()) return base_layer->forward(x);
    return forward_adapters(x);
}

void TunerLayer::merge(const std::vector<std::string>& names_in, bool safe) {
    std::vector<std::string> names = names_in.empty() ? active_here() : names_in;
    NoGradGuard no_grad;
    const bool dense = base_layer->stores_dense_weight();
    // A dense base's weight is copied (the original stays for unmerge); a quantized one's
    // dense_weight() is a fresh dequantized tensor already.
    Tensor W = dense ? raw::clone(base_layer->dense_weight()) : base_layer->dense_weight();
    Tensor b = base_layer->bias.defined() ? raw::clone(base_layer->bias) : Tensor();
    std::vector<std::string> done;
    for (const std::string& name : names) {
        EMBER_CHECK(has_adapter(name), type_name(), ".merge: no adapter named '", name, "' here (it has ",
                    names_.size(), " adapters)");
        if (std::find(merged_.begin(), merged_.end(), name) != merged_.end()) continue;  // already in
        merge_into(name, W, b);
        done.push_back(name);
    }
    if (done.empty()) return;
    if (safe) {
        for (double v : W.to_vector<double>())
            EMBER_CHECK(std::isfinite(v), type_name(), ".merge (safe_merge): merging ", done.front(),
                        " gives a non-finite weight; the adapter is broken, the base was left as it was");
    }
    if (!dense) {
        // A quantized base is replaced as a whole; merging more adapters later starts from the
        // merged base, and unmerge returns to the first.
        std::shared_ptr<nn::LinearBase> merged_base = merged_quantized_base(done, W, b);
        if (!merged()) original_base_ = base_layer;
        if (merged_base->bias.defined()) merged_base->bias.set_requires_grad(base_layer->bias.requires_grad());
        replace_submodule("base_layer", merged_base);
        for (const std::string& n : done) merged_.push_back(n);
        return;
    }
    auto linear = std::dynamic_pointer_cast<nn::Linear>(base_layer);
    EMBER_CHECK(linear, type_name(), ".merge: the base ", base_layer->type_name(), " says it stores its weight "
                "densely but is not an nn::Linear; merging cannot put the weight back");
    if (!merged()) {
        original_weight_ = linear->weight;
        original_bias_ = linear->bias;
    }
    // Fresh frozen tensors in the slots: the originals stay untouched for unmerge().
    linear->weight = W;
    linear->weight.set_requires_grad(false);
    if (b.defined()) {
        linear->bias = b;
        linear->bias.set_requires_grad(original_bias_.requires_grad());
    }
    for (const std::string& n : done) merged_.push_back(n);
}

std::shared_ptr<nn::LinearBase> TunerLayer::merged_quantized_base(const std::vector<std::string>& /*names*/,
                                                                  const Tensor& W, const Tensor& b) {
    if (quant_merge == QuantMerge::Dequantize) {
        requantize_error_ = {};
        auto linear = std::make_shared<nn::Linear>(W, b);
        linear->weight.set_requires_grad(false);
        return linear;
    }
    auto q = std::dynamic_pointer_cast<nn::QuantLinear>(base_layer);
    EMBER_CHECK(q, type_name(), ".merge (Requantize): the base is a ", base_layer->type_name(),
                ", not a QuantLinear; only a quantized weight can be requantized");
    Tensor W32 = W.dtype() == DType::F32 ? W : raw::to_dtype(W, DType::F32);
    Tensor delta = raw::sub(W32, dequantize(q->weight));  // (out, in): what the adapters change
    QuantizedWeight requantized = requantize_merge(q->weight, delta, &requantize_error_);
    return std::make_shared<nn::QuantLinear>(std::move(requantized), b, q->input_dtype);
}

void TunerLayer::unmerge() {
    if (!merged()) return;
    if (original_base_) {
        replace_submodule("base_layer", original_base_);
        original_base_ = nullptr;
    } else {
        auto linear = std::static_pointer_cast<nn::Linear>(base_layer);
        linear->weight = original_weight_;
        linear->bias = original_bias_;
        original_weight_ = Tensor();
        original_bias_ = Tensor();
    }
    merged_.clear();
}

std::map<std::string, Tensor> TunerLayer::adapter_tensors(const std::string& name) const {
    std::map<std::string, Tensor> out;
    for (const auto& [full, t] : named_parameters()) {
        // "<kind>.<adapter>[.<rest>]" -> "<kind>[.<rest>]"
        size_t dot = full.find('.');
        if (dot == std::string::npos) continue;
        size_t dot2 = full.find('.', dot + 1);
        std::string second = full.substr(dot + 1, dot2 == std::string::npos ? std::string::npos : dot2 - dot - 1);
        if (second != name || full.compare(0, dot, "base_layer") == 0) continue;
        out[full.substr(0, dot) + (dot2 == std::string::npos ? "" : full.substr(dot2))] = t;
    }
    return out;
}

void TunerLayer::add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const {
    for (auto& [local, t] : adapter_tensors(adapter)) sd["base_model.model." + key + "." + local] = t.detach();
}

}  // namespace peft
}  // namespace ember
