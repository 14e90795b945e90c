// VeRA: frozen shared random projections, two learned scaling vectors per layer.
#include "peft/vera.h"

#include <algorithm>

#include "nn/init.h"
#include "peft/peft_model.h"

namespace ember {
namespace peft {

std::shared_ptr<TunerLayer> VeraConfig::make_layer(std::shared_ptr<nn::Linear> base) const {
    return std::make_shared<VeraLayer>(std::move(base));
}
std::string VeraConfig::layer_type() const { return "VeraLinear"; }

void VeraConfig::prepare_shared(const std::vector<std::shared_ptr<nn::Linear>>& bases, AdapterContext& ctx) const {
    EMBER_CHECK(r > 0, "VeraConfig: r must be positive, got ", r);
    int64_t in_max = 0, out_max = 0;
    for (const auto& b : bases) in_max = std::max(in_max, b->in_features), out_max = std::max(out_max, b->out_features);
    const Tensor& w = bases.front()->weight;
    Generator gen(projection_prng_key);
    NoGradGuard no_grad;
    Tensor A = empty({r, in_max}, w.dtype(), w.device());   // (r, in_max)
    Tensor B = empty({out_max, r}, w.dtype(), w.device());  // (out_max, r)
    nn::kaiming_uniform_(A, 0, gen);  // bound sqrt(6 / in_max)
    nn::kaiming_uniform_(B, 0, gen);  // bound sqrt(6 / r)
    ctx.shared["vera_A"] = A;
    ctx.shared["vera_B"] = B;
}

VeraLayer::VeraLayer(std::shared_ptr<nn::Linear> base) : TunerLayer(std::move(base)) {
    vera_lambda_b = std::make_shared<ParameterDict>();
    vera_lambda_d = std::make_shared<ParameterDict>();
    register_module("vera_lambda_b", vera_lambda_b);
    register_module("vera_lambda_d", vera_lambda_d);
}

void VeraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                            AdapterContext& ctx) {
    const auto* c = dynamic_cast<const VeraConfig*>(&config);
    EMBER_CHECK(c, "VeraLinear.add_adapter('", name, "'): needs a VeraConfig, got ", config.peft_type());
    auto a = ctx.shared.find("vera_A"), b = ctx.shared.find("vera_B");
    EMBER_CHECK(a != ctx.shared.end() && b != ctx.shared.end(), "VeraLinear.add_adapter('", name, "') on ", key,
                ": the shared vera_A / vera_B are missing (VeraConfig::prepare_shared makes them)");
    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    EMBER_CHECK(a->second.size(1) >= in && b->second.size(0) >= out, "VeRA on ", key, ": the shared projections ",
                a->second.shape(), " / ", b->second.shape(), " are smaller than this layer (in ", in, ", out ", out,
                "); they are sized to the largest targeted layer when the adapter is added");
    const Tensor& W = base_layer->weight;
    shared_[name] = {a->second, b->second, c->vera_dropout};
    vera_lambda_b->set(name, zeros({out}, W.dtype(), W.device()));
    vera_lambda_d->set(name, full({c->r}, c->d_initial, W.dtype(), W.device()));
    rng = ctx.rng;
    add_name(name);
}

void VeraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    shared_.erase(name);
}

Tensor VeraLayer::sliced_A(const std::string& name) const {
    return shared_.at(name).A.slice(1, 0, base_layer->in_features);
}
Tensor VeraLayer::sliced_B(const std::string& name) const {
    return shared_.at(name).B.slice(0, 0, base_layer->out_features);
}

Tensor VeraLayer::delta_weight(const std::string& name) const {
    NoGradGuard no_grad;
    Tensor b = vera_lambda_b->get(name).detach().reshape({-1, 1});  // (out, 1)
    Tensor d = vera_lambda_d->get(name).detach().reshape({-1, 1});  // (r, 1)
    return raw::matmul(raw::mul(b, sliced_B(name)), raw::mul(d, sliced_A(name)));  // (out, in)
}

Tensor VeraLayer::forward_adapters(const Tensor& x) {
    Tensor result = base_layer->forward(x);  // (..., out)
    for (const std::string& name : active_here()) {
        const Shared& s = shared_.at(name);
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor h = nn::linear(xd, sliced_A(name), Tensor()) * vera_lambda_d->get(name);  // (..., r)
        result = result + nn::linear(h, sliced_B(name), Tensor()) * vera_lambda_b->get(name);
    }
    return result;
}

void VeraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    W = raw::add(W, delta_weight(name));
}

}  // namespace peft
}  // namespace ember
