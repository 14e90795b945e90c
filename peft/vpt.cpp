// VPT: the shallow and deep visual prompts, their init and Ember's VPT file. See vpt.h.
#include "peft/vpt.h"

#include <cmath>

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"

namespace ember {
namespace peft {

std::string VptConfig::to_json() const {
    nlohmann::json j = prompt_learning_json();
    j["deep"] = deep;
    j["prompt_dropout"] = prompt_dropout;
    return j.dump(2);
}

VptConfig VptConfig::from_json(const std::string& text) {
    nlohmann::json j = parse_config(text, "VPT");
    VptConfig c;
    c.read_prompt_learning(j);
    c.deep = j.value("deep", false);
    c.prompt_dropout = j.contains("prompt_dropout") && j["prompt_dropout"].is_number() ? j["prompt_dropout"].get<double>()
                                                                                      : 0.0;
    return c;
}

std::shared_ptr<PromptModule> VptConfig::make_forward_inputs(const nn::ForwardShape& shape, Generator& init_gen) const {
    EMBER_CHECK(shape.patch_fan_in > 0, "VptConfig: VPT puts prompts among a vision model's patch tokens, and this "
                "model has no patches (for a GPT use prompt or prefix tuning)");
    EMBER_CHECK(num_virtual_tokens > 0, "VptConfig: num_virtual_tokens must be set (> 0)");
    EMBER_CHECK(prompt_dropout >= 0 && prompt_dropout < 1, "VptConfig: prompt_dropout must lie in [0, 1), got ",
                prompt_dropout);
    EMBER_CHECK(prompt_dropout == 0 || shape.dropout_rng, "VptConfig: prompt_dropout ", prompt_dropout,
                " needs the model's dropout generator, and this model offers none");
    // Xavier-uniform over the patch projection's fan-in and the prompt width (vit.py: val =
    // sqrt(6 / (3 * patch_h * patch_w + prompt_dim))).
    const double bound = std::sqrt(6.0 / double(shape.patch_fan_in + shape.dim));
    return std::make_shared<VisualPrompts>(num_virtual_tokens, shape.dim, deep ? shape.layers : 1, prompt_dropout,
                                           bound, init_gen, shape.dropout_rng);
}

VisualPrompts::VisualPrompts(int64_t n, int64_t dim, int64_t layers, double dropout, double bound, Generator& init_gen,
                             std::shared_ptr<Generator> rng)
    : dropout_(dropout), rng_(std::move(rng)) {
    prompt_embeddings = zeros({1, n, dim});
    nn::uniform_(prompt_embeddings, -bound, bound, init_gen);
    register_parameter("prompt_embeddings", prompt_embeddings);
    if (layers > 1) {
        deep_prompt_embeddings = zeros({layers - 1, n, dim});
        nn::uniform_(deep_prompt_embeddings, -bound, bound, init_gen);
        register_parameter("deep_prompt_embeddings", deep_prompt_embeddings);
    }
}

void VisualPrompts::supply(nn::ForwardContext& ctx) {
    EMBER_CHECK(!ctx.virtual_tokens.defined() && ctx.layer_tokens.empty(), "VisualPrompts: another adapter already "
                "supplies virtual tokens; VPT must be the only active prompt adapter");
    auto drop = [&](const Tensor& t) { return dropout_ > 0 ? dropout(t, dropout_, *rng_, is_training()) : t; };
    ctx.virtual_tokens = drop(prompt_embeddings);
    if (deep_prompt_embeddings.defined())
        for (int64_t l = 0; l < deep_prompt_embeddings.size(0); ++l)
            ctx.layer_tokens.push_back(drop(deep_prompt_embeddings.slice(0, l, l + 1)));  // (1, p, d)
}

nn::StateDict VisualPrompts::saved_tensors() const {
    nn::StateDict sd = {{"prompt_embeddings", prompt_embeddings}};
    if (deep_prompt_embeddings.defined()) sd["deep_prompt_embeddings"] = deep_prompt_embeddings;
    return sd;
}

std::shared_ptr<PeftConfig> vpt_from_json(const std::string& text) {
    return std::make_shared<VptConfig>(VptConfig::from_json(text));
}

// The examples' VPT: --rank prompt tokens, deep (the variant the paper reports best on most
// VTAB tasks), no dropout.
std::shared_ptr<PeftConfig> vpt_preset(const PresetOptions& o) {
    auto c = std::make_shared<VptConfig>();
    c->num_virtual_tokens = o.rank > 0 ? o.rank : 5;
    c->deep = true;
    return c;
}

}  // namespace peft
}  // namespace ember
