// LoRA and DoRA on a Linear: forward and merge side by side. See lora.h for the math.
#include "peft/lora.h"

#include <cmath>

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"
#include "peft/qalora.h"
#include "peft/targets.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

// ---- config ----

std::string LoraConfig::to_json() const {
    json j = common_json(*this);
    j["r"] = r;
    j["lora_alpha"] = whole_or_real(lora_alpha);  // an int in peft's LoraConfig
    j["lora_dropout"] = lora_dropout;
    j["bias"] = bias;
    j["use_rslora"] = use_rslora;
    if (init_lora_weights == "true") j["init_lora_weights"] = true;
    else if (init_lora_weights == "false") j["init_lora_weights"] = false;
    else j["init_lora_weights"] = init_lora_weights;
    j["rank_pattern"] = json(rank_pattern);
    j["alpha_pattern"] = json(alpha_pattern);
    j["use_dora"] = use_dora;
    // peft's other LoraConfig keys, at their defaults (Ember does not implement these options).
    for (const char* k : {"megatron_config", "trainable_token_indices", "loftq_config", "eva_config",
                          "corda_config", "lora_ga_config", "velora_config", "alora_invocation_tokens",
                          "monteclora_config", "layer_replication", "target_parameters",
                          "arrow_config", "kasa_config"})
        j[k] = nullptr;
    j["loftq_config"] = json::object();
    j["megatron_core"] = "megatron.core";
    j["use_qalora"] = false;
    j["qalora_group_size"] = 16;
    j["lora_bias"] = false;
    j["use_bdlora"] = nullptr;
    j["ensure_weight_tying"] = false;
    return j.dump(2);
}

LoraConfig LoraConfig::from_json(const std::string& text) {
    json j = parse_config(text, "LORA");
    LoraConfig c;
    read_common(j, c);
    c.r = j.value("r", int64_t(8));
    c.lora_alpha = j.value("lora_alpha", 8.0);
    c.lora_dropout = j.value("lora_dropout", 0.0);
    c.bias = j.value("bias", std::string("none"));
    c.use_rslora = j.value("use_rslora", false);
    c.use_dora = j.value("use_dora", false);
    if (j.contains("init_lora_weights")) {
        const json& w = j["init_lora_weights"];
        c.init_lora_weights = w.is_boolean() ? (w.get<bool>() ? "true" : "false") : w.get<std::string>();
    }
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
        c.rank_pattern = j["rank_pattern"].get<std::map<std::string, int64_t>>();
    if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
        c.alpha_pattern = j["alpha_pattern"].get<std::map<std::string, double>>();
    EMBER_CHECK(!j.value("lora_bias", false) && !j.value("use_qalora", false) &&
                    (!j.contains("layer_replication") || j["layer_replication"].is_null()),
                "adapter_config.json: this LoRA adapter uses lora_bias, use_qalora or layer_replication, "
                "which Ember does not implement");
    return c;
}


void LoraConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) target_modules = lora_default_targets(model_type);
}

static bool is_bias(const std::string& name) {
    return name == "bias" || (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
}

bool LoraConfig::trains_base_parameter(const std::string& name, const nn::Module& /*owner*/, bool in_target) const {
    if (bias == "all") return is_bias(name);
    if (bias == "lora_only") return in_target && is_bias(name);
    return false;
}

std::shared_ptr<PeftConfig> lora_from_json(const std::string& text) {
    // peft keeps QA-LoRA in LoraConfig (use_qalora); Ember's QALoraConfig reads those files.
    json j = parse_config(text, "LORA");
    if (j.value("use_qalora", false)) return qalora_from_json(text);
    return std::make_shared<LoraConfig>(LoraConfig::from_json(text));
}

// The examples' LoRA: alpha = 2 r; on ViT (peft has no default there) query and value.
std::shared_ptr<PeftConfig> lora_preset(const PresetOptions& o) {
    auto c = std::make_shared<LoraConfig>();
    c->r = o.rank, c->lora_alpha = 2.0 * double(o.rank);
    if (o.model_type == "vit") c->target_modules = ModuleSelector{"query", "value"};
    return c;
}

std::shared_ptr<PeftConfig> dora_preset(const PresetOptions& o) {
    auto c = std::static_pointer_cast<LoraConfig>(lora_preset(o));
    c->use_dora = true;
    return c;
}

std::shared_ptr<TunerLayer> LoraConfig::make_layer(std::shared_ptr<nn::LinearBase> base) const {
    return std::make_shared<LoraLayer>(std::move(base));
}
std::string LoraConfig::layer_type() const { return "LoraLinear"; }

LoraConfig::LayerRank LoraConfig::rank_at(const std::string& key, const char* method) const {
    std::string rk = pattern_key(rank_pattern, key), ak = pattern_key(alpha_pattern, key);
    LayerRank out;
    out.r = rk.empty() ? r : rank_pattern.at(rk);
    out.alpha = ak.empty() ? lora_alpha : alpha_pattern.at(ak);
    EMBER_CHECK(out.r > 0, method, " on ", key, ": r must be positive, got ", out.r);
    out.scaling = use_rslora ? out.alpha / std::sqrt(double(out.r)) : out.alpha / double(out.r);
    return out;
}

LoraLayer::LoraLayer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    lora_A = std::make_shared<ModuleDict>();
    lora_B = std::make_shared<ModuleDict>();
    lora_magnitude_vector = std::make_shared<ParameterDict>();
    register_module("lora_A", lora_A);
    register_module("lora_B", lora_B);
    register_module("lora_magnitude_vector", lora_magnitude_vector);
}

void LoraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                            AdapterContext& ctx) {
    const auto* c = dynamic_cast<const LoraConfig*>(&config);
    EMBER_CHECK(c, "LoraLayer.add_adapter('", name, "'): needs a LoraConfig, got ", config.peft_type());
    Settings s;
    const LoraConfig::LayerRank rank = c->rank_at(key, "LoRA");
    s.r = rank.r, s.alpha = rank.alpha, s.scaling = rank.scaling;
    s.dropout = c->lora_dropout;
    s.use_dora = c->use_dora;
    rng = ctx.rng;

    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    NoGradGuard no_grad;
    auto A = std::make_shared<nn::Linear>(in, s.r, false, ctx.init_gen);
    auto B = std::make_shared<nn::Linear>(s.r, out, false, ctx.init_gen);
    const DType dt = base_layer->dtype();
    A->to(dt);
    B->to(dt);
    A->to(base_layer->device());
    B->to(base_layer->device());
    if (c->init_lora_weights == "gaussian") {
        nn::normal_(A->weight, 0, 1 / double(s.r), ctx.init_gen);  // peft: std = 1 / r
        nn::zeros_(B->weight);
    } else if (c->init_lora_weights == "false") {
        nn::kaiming_uniform_(A->weight, std::sqrt(5.0), ctx.init_gen);  // B keeps Linear's random init
    } else {
        EMBER_CHECK(c->init_lora_weights == "true", "LoraConfig: init_lora_weights '", c->init_lora_weights,
                    "' is not one Ember implements (true, false, gaussian)");
        nn::kaiming_uniform_(A->weight, std::sqrt(5.0), ctx.init_gen);
        nn::zeros_(B->weight);
    }
    lora_A->set(name, A);
    lora_B->set(name, B);
    settings_[name] = s;
    add_name(name);
    if (s.use_dora) {
        // m = ||W0 + s B A||_row, which is ||W0||_row when B starts at zero (no product needed).
        const Tensor W0 = base_layer->dense_weight();
        Tensor m = c->init_lora_weights == "false" ? dora_weight_norm(name)
                                                    : raw::pow_scalar(raw::sum(raw::mul(W0, W0), {1}), 0.5);
        lora_magnitude_vector->set(name, m);
    }
}

const LoraLayer::Settings& LoraLayer::settings(const std::string& name) const {
    auto it = settings_.find(name);
    EMBER_CHECK(it != settings_.end(), "LoraLinear: no adapter named '", name, "'");
    return it->second;
}

Tensor LoraLayer::delta_weight(const std::string& name) const {
    NoGradGuard no_grad;
    const Tensor& A = lora_A->get_as<nn::Linear>(name)->weight;  // (r, in)
    const Tensor& B = lora_B->get_as<nn::Linear>(name)->weight;  // (out, r)
    return raw::mul_scalar(raw::matmul(B, A), settings(name).scaling);  // (out, in)
}

// ||W + s B A|| over the input dim, for the weight currently in base_layer.
Tensor LoraLayer::dora_weight_norm(const std::string& name) const {
    NoGradGuard no_grad;
    Tensor W = raw::add(base_layer->dense_weight(), delta_weight(name));  // (out, in)
    return raw::pow_scalar(raw::sum(raw::mul(W, W), {1}), 0.5);   // (out)
}

Tensor LoraLayer::forward_adapters(const Tensor& x) {
    Tensor result = base_layer->forward(x);  // (..., out)
    for (const std::string& name : active_here()) {
        const Settings& s = settings_.at(name);
        const Tensor& A = lora_A->get_as<nn::Linear>(name)->weight;
        const Tensor& B = lora_B->get_as<nn::Linear>(name)->weight;
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor lora = nn::linear(nn::linear(xd, A, Tensor()), B, Tensor());  // (..., out)
        if (!s.use_dora) {
            result = result + lora * s.scaling;
            continue;
        }
        // DoRA: scale = m / n per output channel; n detached unless dora_detach_norm is off.
        Tensor m = lora_magnitude_vector->get(name);  // (out)
        Tensor n;
        if (dora_detach_norm) {
            n = dora_weight_norm(name);
        } else {
            Tensor W = base_layer->dense_weight() + matmul(B, A) * s.scaling;
            n = sqrt(sum(W * W, {1}));
        }
        Tensor scale = m / n;                                          // (out)
        Tensor base_part = nn::linear(xd, base_layer->dense_weight(), Tensor());  // W0 dropout(x), no bias
        result = result + (scale - 1.0) * base_part + scale * (lora * s.scaling);
    }
    return result;
}

void LoraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    const Settings& s = settings(name);
    Tensor merged = raw::add(W, delta_weight(name));  // W + s B A
    if (s.use_dora) {
        // W' = m / ||W + s B A||_row * (W + s B A), the norm of the weight being merged into.
        Tensor norm = raw::pow_scalar(raw::sum(raw::mul(merged, merged), {1}, true), 0.5);  // (out, 1)
        Tensor m = lora_magnitude_vector->get(name).detach().reshape({-1, 1});             // (out, 1)
        merged = raw::mul(merged, raw::div(m, norm));
    }
    W = merged;
}

void LoraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    settings_.erase(name);
}

}  // namespace peft
}  // namespace ember
