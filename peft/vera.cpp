// VeRA: frozen shared random projections, two learned scaling vectors per layer.
#include "peft/vera.h"

#include <algorithm>

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"
#include "peft/targets.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

// ---- config ----

std::string VeraConfig::to_json() const {
    json j = common_json(*this);
    j["r"] = r;
    j["vera_dropout"] = vera_dropout;
    j["d_initial"] = d_initial;
    j["projection_prng_key"] = projection_prng_key;
    j["save_projection"] = save_projection;
    j["bias"] = bias;
    j["init_weights"] = true;
    return j.dump(2);
}

VeraConfig VeraConfig::from_json(const std::string& text) {
    json j = parse_config(text, "VERA");
    VeraConfig c;
    read_common(j, c);
    c.r = j.value("r", int64_t(256));
    c.vera_dropout = j.value("vera_dropout", 0.0);
    c.d_initial = j.value("d_initial", 0.1);
    c.projection_prng_key = j.value("projection_prng_key", uint64_t(0));
    c.save_projection = j.value("save_projection", true);
    c.bias = j.value("bias", std::string("none"));
    return c;
}


void VeraConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) target_modules = lora_default_targets(model_type);  // peft reuses LoRA's
}

std::shared_ptr<PeftConfig> vera_from_json(const std::string& text) {
    return std::make_shared<VeraConfig>(VeraConfig::from_json(text));
}

// The examples' VeRA: peft's r = 256 unless --rank asks for another; ViT: query and value.
std::shared_ptr<PeftConfig> vera_preset(const PresetOptions& o) {
    auto c = std::make_shared<VeraConfig>();
    if (o.rank > 0 && o.rank != 8) c->r = o.rank;
    if (o.model_type == "vit") c->target_modules = ModuleSelector{"query", "value"};
    return c;
}

std::shared_ptr<TunerLayer> VeraConfig::make_layer(std::shared_ptr<nn::LinearBase> base) const {
    return std::make_shared<VeraLayer>(std::move(base));
}
std::string VeraConfig::layer_type() const { return "VeraLinear"; }

// ---- the layer ----

// The adapter's shared projections, sized to the largest targeted layer, made once per adapter.
static void make_projections(const VeraConfig& c, AdapterContext& ctx) {
    EMBER_CHECK(c.r > 0, "VeraConfig: r must be positive, got ", c.r);
    int64_t in_max = 0, out_max = 0;
    for (const auto& b : ctx.targets) in_max = std::max(in_max, b->in_features), out_max = std::max(out_max, b->out_features);
    const DType dt = ctx.targets.front()->dtype();
    const Device dev = ctx.targets.front()->device();
    Generator gen(c.projection_prng_key);
    NoGradGuard no_grad;
    Tensor A = empty({c.r, in_max}, dt, dev);   // (r, in_max)
    Tensor B = empty({out_max, c.r}, dt, dev);  // (out_max, r)
    nn::kaiming_uniform_(A, 0, gen);  // bound sqrt(6 / in_max)
    nn::kaiming_uniform_(B, 0, gen);  // bound sqrt(6 / r)
    ctx.shared["vera_A"] = A;
    ctx.shared["vera_B"] = B;
}

VeraLayer::VeraLayer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    vera_lambda_b = std::make_shared<ParameterDict>();
    vera_lambda_d = std::make_shared<ParameterDict>();
    vera_A = std::make_shared<BufferDict>();
    vera_B = std::make_shared<BufferDict>();
    register_module("vera_lambda_b", vera_lambda_b);
    register_module("vera_lambda_d", vera_lambda_d);
    register_module("vera_A", vera_A);
    register_module("vera_B", vera_B);
}

void VeraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                            AdapterContext& ctx) {
    const auto* c = dynamic_cast<const VeraConfig*>(&config);
    EMBER_CHECK(c, "VeraLinear.add_adapter('", name, "'): needs a VeraConfig, got ", config.peft_type());
    if (!ctx.shared.count("vera_A")) make_projections(*c, ctx);
    auto a = ctx.shared.find("vera_A"), b = ctx.shared.find("vera_B");
    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    EMBER_CHECK(a->second.size(1) >= in && b->second.size(0) >= out, "VeRA on ", key, ": the shared projections ",
                a->second.shape(), " / ", b->second.shape(), " are smaller than this layer (in ", in, ", out ", out,
                "); they are sized to the largest targeted layer when the adapter is added");
    const DType dt = base_layer->dtype();
    const Device dev = base_layer->device();
    vera_A->set(name, a->second);
    vera_B->set(name, b->second);
    settings_[name] = {c->vera_dropout, c->save_projection};
    vera_lambda_b->set(name, zeros({out}, dt, dev));
    vera_lambda_d->set(name, full({c->r}, c->d_initial, dt, dev));
    rng = ctx.rng;
    add_name(name);
}

void VeraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    settings_.erase(name);
}

Tensor VeraLayer::sliced_A(const std::string& name) const {
    return vera_A->get(name).slice(1, 0, base_layer->in_features);
}
Tensor VeraLayer::sliced_B(const std::string& name) const {
    return vera_B->get(name).slice(0, 0, base_layer->out_features);
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
        const Settings& s = settings_.at(name);
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor h = nn::linear(xd, sliced_A(name), Tensor()) * vera_lambda_d->get(name);  // (..., r)
        result = result + nn::linear(h, sliced_B(name), Tensor()) * vera_lambda_b->get(name);
    }
    return result;
}

// peft's files hold the shared projections once, as "base_model.vera_A" / "base_model.vera_B"
// (with save_projection); every layer names the same tensors, so the key is written once.
void VeraLayer::add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const {
    TunerLayer::add_to_state_dict(adapter, key, sd);
    if (!settings_.at(adapter).save_projection) return;
    sd["base_model.vera_A"] = vera_A->get(adapter).detach();
    sd["base_model.vera_B"] = vera_B->get(adapter).detach();
}

void VeraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    W = raw::add(W, delta_weight(name));
}

}  // namespace peft
}  // namespace ember
