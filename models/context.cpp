// Context extension by rescaled RoPE angles; see context.h.
#include "models/context.h"

namespace ember {
namespace models {

double interpolate_positions(GPT& gpt, int64_t new_context, nn::RopeScaling::Type how) {
    using Type = nn::RopeScaling::Type;
    GPTConfig& c = gpt.config;
    EMBER_CHECK(c.style == GPTConfig::Style::Llama, "interpolate_positions: GPT-2's positions are a learned table "
                "of ", c.context, " rows, not RoPE; interpolation needs a LLaMA-style model (rotary positions)");
    EMBER_CHECK(how != Type::None, "interpolate_positions: choose Linear or Yarn");
    EMBER_CHECK(new_context >= c.context, "interpolate_positions: the new context ", new_context,
                " is shorter than the model's ", c.context, "; it only extends");
    nn::RopeScaling& r = c.rope_scaling;
    EMBER_CHECK(r.type == Type::None || r.type == how, "interpolate_positions: the model's positions are already ",
                r.type == Type::Linear ? "linearly interpolated" : "YaRN-scaled", "; extend it the same way again");
    const double factor = double((new_context + c.context - 1) / c.context);  // ceil, as fine-tune.py
    if (r.type == Type::None) {
        r = how == Type::Linear ? nn::RopeScaling::linear(1) : nn::RopeScaling::yarn(1, c.context);
    }
    r.factor *= factor;
    c.context = new_context;
    for (size_t i = 0; i < gpt.num_blocks(); ++i) gpt.block(i).attn->config.rope_scaling = r;
    return factor;
}

}  // namespace models
}  // namespace ember
