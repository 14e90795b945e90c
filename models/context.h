// Context extension of a LLaMA-style models::GPT: its RoPE angles are rescaled so that a model
// trained on `context` positions reads a window factor = ceil(new_context / context) times
// longer (LongLoRA's fine-tune.py rounds up the same way), then it is fine-tuned at the new
// length. Two ways (nn/rope.h):
//   Linear  position interpolation (Chen et al., 2023, "Extending context window of large
//           language models via positional interpolation"): every angle divided by the factor,
//           LongLoRA's choice. It also squeezes the distance between neighbouring tokens by the
//           factor.
//   Yarn    YaRN's "NTK-by-parts" (Peng et al., 2023): the fast-turning pairs, which tell
//           neighbouring tokens apart, keep their angles; only the slow ones are interpolated.
//           examples/longctx.cpp shows why a byte-level model needs it: after linear
//           interpolation the small model there no longer copies a 5-digit passkey at any
//           length, after YaRN it does at 4x its trained length.
#pragma once

#include <cstdint>

#include "models/gpt.h"

namespace ember {
namespace models {

// Raises gpt's context to new_context and scales its RoPE (the config's and every attention
// layer's) by the factor, which it returns. A model already extended the same way extends
// further (the factors multiply; YaRN keeps the first trained context); mixing the two ways, and
// GPT-2's learned positions, are refused.
double interpolate_positions(GPT& gpt, int64_t new_context,
                             nn::RopeScaling::Type how = nn::RopeScaling::Type::Linear);

}  // namespace models
}  // namespace ember
