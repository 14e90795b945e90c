// Houlsby (and Pfeiffer) bottleneck adapters: the module, its placement and its file. See houlsby.h.
#include "peft/houlsby.h"

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"

namespace ember {
namespace peft {

std::string HoulsbyConfig::to_json() const {
    nlohmann::json j = common_json(*this);
    j["adapter_size"] = adapter_size;
    j["mh_adapter"] = mh_adapter;
    j["output_adapter"] = output_adapter;
    j["non_linearity"] = non_linearity;
    j["init_scale"] = init_scale;
    j["train_layernorms"] = train_layernorms;
    return j.dump(2);
}

HoulsbyConfig HoulsbyConfig::from_json(const std::string& text) {
    nlohmann::json j = parse_config(text, "HOULSBY");
    HoulsbyConfig c;
    read_common(j, c);
    c.adapter_size = j.value("adapter_size", c.adapter_size);
    c.mh_adapter = j.value("mh_adapter", c.mh_adapter);
    c.output_adapter = j.value("output_adapter", c.output_adapter);
    c.non_linearity = j.value("non_linearity", c.non_linearity);
    c.init_scale = j.value("init_scale", c.init_scale);
    c.train_layernorms = j.value("train_layernorms", c.train_layernorms);
    return c;
}

void HoulsbyConfig::fill_defaults(const std::string& /*model_type*/) {
    EMBER_CHECK(adapter_size > 0, "HoulsbyConfig: adapter_size must be positive, got ", adapter_size);
    EMBER_CHECK(mh_adapter || output_adapter, "HoulsbyConfig: mh_adapter and output_adapter are both off, so "
                "nothing would be added; turn on at least one");
    EMBER_CHECK(non_linearity == "gelu" || non_linearity == "relu" || non_linearity == "swish",
                "HoulsbyConfig: non_linearity \"", non_linearity, "\" is not one of gelu, relu, swish");
    EMBER_CHECK(init_scale >= 0, "HoulsbyConfig: init_scale must be >= 0, got ", init_scale);
}

std::shared_ptr<nn::SiteModule> HoulsbyConfig::make_site_module(const std::string& site, int64_t dim,
                                                                Generator& init_gen) const {
    const bool here = (site == "adapter_attn_post" && mh_adapter) || (site == "adapter_mlp_post" && output_adapter);
    if (!here) return nullptr;
    return std::make_shared<BottleneckAdapter>(dim, adapter_size, non_linearity, init_scale, init_gen);
}

bool HoulsbyConfig::trains_base_parameter(const std::string& /*name*/, const nn::Module& owner,
                                          bool /*in_target*/) const {
    return train_layernorms && dynamic_cast<const nn::LayerNorm*>(&owner) != nullptr;
}

BottleneckAdapter::BottleneckAdapter(int64_t dim, int64_t size, const std::string& act, double init_scale,
                                     Generator& init_gen)
    : non_linearity(act) {
    adapter_down = std::make_shared<nn::Linear>(dim, size, true, init_gen);
    adapter_up = std::make_shared<nn::Linear>(size, dim, true, init_gen);
    NoGradGuard no_grad;
    for (auto* l : {adapter_down.get(), adapter_up.get()}) {
        nn::trunc_normal_(l->weight, 0, init_scale, init_gen, -2 * init_scale, 2 * init_scale);
        nn::zeros_(l->bias);
    }
    register_module("adapter_down", adapter_down);
    register_module("adapter_up", adapter_up);
}

Tensor BottleneckAdapter::forward_site(const nn::SiteInputs& in) {
    Tensor h = adapter_down->forward(in.output);  // (B, T, m)
    h = non_linearity == "relu" ? relu(h) : non_linearity == "swish" ? silu(h) : gelu(h, GeluApprox::Tanh);
    return in.output + adapter_up->forward(h);  // (B, T, d)
}

std::shared_ptr<PeftConfig> houlsby_from_json(const std::string& text) {
    return std::make_shared<HoulsbyConfig>(HoulsbyConfig::from_json(text));
}

// The examples' Houlsby adapter: bottleneck m = --rank (the models are small), LayerNorms trained.
std::shared_ptr<PeftConfig> houlsby_preset(const PresetOptions& o) {
    auto c = std::make_shared<HoulsbyConfig>();
    if (o.rank > 0) c->adapter_size = o.rank;
    return c;
}

}  // namespace peft
}  // namespace ember
