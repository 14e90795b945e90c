// (IA)^3: one learned scale per output (or, for feedforward layers, per input) channel.
#include "peft/ia3.h"

#include "peft/regex.h"

#include "nn/init.h"
#include "peft/peft_model.h"

namespace ember {
namespace peft {

std::shared_ptr<TunerLayer> IA3Config::make_layer(std::shared_ptr<nn::Linear> base) const {
    return std::make_shared<IA3Layer>(std::move(base));
}
std::string IA3Config::layer_type() const { return "IA3Linear"; }

bool is_feedforward_module(const ModuleSelector& ff, const std::string& name) {
    if (!ff.is_set) return false;
    if (ff.is_regex) return std::regex_match(name, std::regex(ff.regex));
    for (const std::string& t : ff.names)
        if (name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0) return true;
    return false;
}

IA3Layer::IA3Layer(std::shared_ptr<nn::Linear> base) : TunerLayer(std::move(base)) {
    ia3_l = std::make_shared<ParameterDict>();
    register_module("ia3_l", ia3_l);
}

void IA3Layer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                           AdapterContext& ctx) {
    const auto* c = dynamic_cast<const IA3Config*>(&config);
    EMBER_CHECK(c, "IA3Linear.add_adapter('", name, "'): needs an IA3Config, got ", config.peft_type());
    bool ff = is_feedforward_module(c->feedforward_modules, key);
    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    const Tensor& W = base_layer->weight;
    Tensor l = ff ? ones({1, in}, W.dtype(), W.device()) : ones({out, 1}, W.dtype(), W.device());
    if (!c->init_ia3_weights) {  // peft leaves torch.randn values; here N(1, 0.5) keeps signs mostly positive
        NoGradGuard g;
        l = raw::add_scalar(raw::mul_scalar(randn(l.shape(), ctx.init_gen, W.dtype(), W.device()), 0.5), 1.0);
    }
    ia3_l->set(name, l);
    feedforward_[name] = ff;
    add_name(name);
}

void IA3Layer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    feedforward_.erase(name);
}

bool IA3Layer::is_feedforward(const std::string& name) const {
    auto it = feedforward_.find(name);
    EMBER_CHECK(it != feedforward_.end(), "IA3Linear: no adapter named '", name, "'");
    return it->second;
}

Tensor IA3Layer::forward_adapters(const Tensor& x) {
    // The product of the active adapters' scales, on each side.
    Tensor in_scale, out_scale;  // (in), (out)
    for (const std::string& name : active_here()) {
        Tensor l = ia3_l->get(name).flatten();
        Tensor& s = feedforward_.at(name) ? in_scale : out_scale;
        s = s.defined() ? s * l : l;
    }
    Tensor h = in_scale.defined() ? x * in_scale : x;  // (..., in)
    Tensor y = base_layer->forward(h);                  // (..., out)
    return out_scale.defined() ? y * out_scale : y;
}

void IA3Layer::merge_into(const std::string& name, Tensor& W, Tensor& b) const {
    Tensor l = ia3_l->get(name).detach();
    if (feedforward_.at(name)) {
        W = raw::mul(W, l);  // (out, in) * (1, in): W diag(l)
        return;
    }
    W = raw::mul(W, l);  // (out, in) * (out, 1): diag(l) W
    if (b.defined()) b = raw::mul(b, l.flatten());
}

}  // namespace peft
}  // namespace ember
