// Text generation from a GPT: greedy decoding or sampling with temperature, top-k and top-p
// (nucleus), with or without the KV cache (the two give the same tokens; the cache is faster).
#pragma once

#include <cstdint>
#include <vector>

#include "models/gpt.h"

namespace ember {
namespace models {

struct GenerateOptions {
    int64_t max_new_tokens = 100;
    double temperature = 1.0;  // 0: greedy (always the most likely token)
    int64_t top_k = 0;         // keep the k most likely tokens; 0: all
    double top_p = 1.0;        // keep the smallest set whose probability reaches p; 1: all
    bool use_cache = true;
    int64_t stop_token = -1;   // stop after emitting it; -1: never
    uint64_t seed = 0;
    void validate() const;  // throws unless every setting is in its range (generate() calls it)
};

// Continues `prompt` (token ids, at least one); returns only the new tokens. Runs in eval mode
// and without gradients; the model's mode is restored afterwards. Past the model's context the
// model sees a sliding window of the latest tokens (without the cache: the last `context`; with
// it: the cache restarts from the last context/2 tokens when full), so the two modes agree only
// within the context.
std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt, const GenerateOptions& options);

// Picks the next token from one row of logits (V) by the rules above; `uniform` in [0, 1).
int64_t sample_token(const std::vector<float>& logits, const GenerateOptions& options, double uniform);

}  // namespace models
}  // namespace ember
