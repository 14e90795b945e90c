// (IA)^3: one learned scale per output (or, for feedforward layers, per input) channel.
#include "peft/ia3.h"

#include "peft/regex.h"

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

// ---- config ----

// peft's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and ..._FEEDFORWARD_MODULES_MAPPING
// (utils/constants.py).
static ModuleSelector default_targets(const std::string& model_type) {
    if (model_type == "gpt2") return ModuleSelector{"c_attn", "mlp.c_proj"};
    if (model_type == "llama") return ModuleSelector{"k_proj", "v_proj", "down_proj"};
    return {};
}

static ModuleSelector default_feedforward(const std::string& model_type) {
    if (model_type == "gpt2") return ModuleSelector{"mlp.c_proj"};
    if (model_type == "llama") return ModuleSelector{"down_proj"};
    return {};
}

void IA3Config::fill_defaults(const std::string& model_type) {
    bool had_targets = target_modules.is_set;
    if (!target_modules.is_set) target_modules = default_targets(model_type);
    // peft takes both from its mappings when target_modules is None.
    if (!feedforward_modules.is_set && !had_targets) feedforward_modules = default_feedforward(model_type);
    // peft's __post_init__: with both given as lists, every feedforward entry must be a target.
    if (feedforward_modules.is_set && !feedforward_modules.is_regex && target_modules.is_set &&
        !target_modules.is_regex)
        for (const std::string& f : feedforward_modules.names) {
            bool in = false;
            for (const std::string& t : target_modules.names) in = in || t == f;
            EMBER_CHECK(in, "IA3Config: feedforward_modules should be a subset of target_modules; \"", f,
                        "\" is not in ", target_modules.describe());
        }
}

// ---- IA3 ----

std::string IA3Config::to_json() const {
    json j = common_json(*this);
    j["feedforward_modules"] = selector_json(feedforward_modules);
    j["init_ia3_weights"] = init_ia3_weights;
    // peft's IA3Config has no layer selection: leave the keys out unless used.
    if (layers_to_transform.empty()) j.erase("layers_to_transform");
    if (layers_pattern.empty()) j.erase("layers_pattern");
    return j.dump(2);
}

IA3Config IA3Config::from_json(const std::string& text) {
    json j = parse_config(text, "IA3");
    IA3Config c;
    read_common(j, c);
    if (j.contains("feedforward_modules")) c.feedforward_modules = selector_from(j["feedforward_modules"]);
    c.init_ia3_weights = j.value("init_ia3_weights", true);
    return c;
}


std::shared_ptr<PeftConfig> ia3_from_json(const std::string& text) {
    return std::make_shared<IA3Config>(IA3Config::from_json(text));
}

// The examples' IA3: peft's defaults; on ViT (no peft default) keys, values and the MLP's output
// matrix, which is the feedforward one.
std::shared_ptr<PeftConfig> ia3_preset(const PresetOptions& o) {
    auto c = std::make_shared<IA3Config>();
    if (o.model_type == "vit") {
        c->target_modules = ModuleSelector(R"(.*\.(key|value)|.*layer\.\d+\.output\.dense)");
        c->feedforward_modules = ModuleSelector(R"(.*layer\.\d+\.output\.dense)");
    }
    return c;
}

std::shared_ptr<TunerLayer> IA3Config::make_layer(std::shared_ptr<nn::LinearBase> base) const {
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

IA3Layer::IA3Layer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    ia3_l = std::make_shared<ParameterDict>();
    register_module("ia3_l", ia3_l);
}

void IA3Layer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                           AdapterContext& ctx) {
    const auto* c = dynamic_cast<const IA3Config*>(&config);
    EMBER_CHECK(c, "IA3Linear.add_adapter('", name, "'): needs an IA3Config, got ", config.peft_type());
    bool ff = is_feedforward_module(c->feedforward_modules, key);
    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    const DType dt = base_layer->dtype();
    const Device dev = base_layer->device();
    Tensor l = ff ? ones({1, in}, dt, dev) : ones({out, 1}, dt, dev);
    if (!c->init_ia3_weights) {  // peft leaves torch.randn values; here N(1, 0.5) keeps signs mostly positive
        NoGradGuard g;
        l = raw::add_scalar(raw::mul_scalar(randn(l.shape(), ctx.init_gen, dt, dev), 0.5), 1.0);
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
