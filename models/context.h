// Context extension of a LLaMA-style models::GPT by linear position interpolation (Chen et al.,
// 2023, "Extending context window of large language models via positional interpolation"):
// RoPE positions are divided by factor = ceil(new_context / context), so a model trained on
// `context` positions sees the longer window inside the angles it learned (LongLoRA's
// fine-tune.py, HF rope_scaling {"type": "linear", "factor": factor}).
#pragma once

#include <cstdint>

#include "models/gpt.h"

namespace ember {
namespace models {

// Raises gpt's context to new_context and multiplies its RoPE scale (the config's and every
// attention layer's) by the factor, which it returns. Refused for GPT-2's learned positions.
double interpolate_positions(GPT& gpt, int64_t new_context);

}  // namespace models
}  // namespace ember
