// Linear position interpolation; see context.h.
#include "models/context.h"

namespace ember {
namespace models {

double interpolate_positions(GPT& gpt, int64_t new_context) {
    GPTConfig& c = gpt.config;
    EMBER_CHECK(c.style == GPTConfig::Style::Llama, "interpolate_positions: GPT-2's positions are a learned table "
                "of ", c.context, " rows, not RoPE; interpolation needs a LLaMA-style model (rotary positions)");
    EMBER_CHECK(new_context >= c.context, "interpolate_positions: the new context ", new_context,
                " is shorter than the model's ", c.context, "; it only extends");
    const double factor = double((new_context + c.context - 1) / c.context);  // ceil, as fine-tune.py
    c.context = new_context;
    c.rope_scale *= factor;
    for (size_t i = 0; i < gpt.num_blocks(); ++i) gpt.block(i).attn->config.rope_scale = c.rope_scale;
    return factor;
}

}  // namespace models
}  // namespace ember
