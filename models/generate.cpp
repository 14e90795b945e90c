#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ember {
namespace models {

int64_t sample_token(const std::vector<float>& logits, const GenerateOptions& o, double uniform) {
    EMBER_CHECK(!logits.empty(), "sample_token: no logits");
    int64_t V = int64_t(logits.size());
    if (o.temperature <= 0) return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

    // Candidates by falling logit; top-k cuts the list, then softmax at the temperature.
    std::vector<int64_t> order(size_t(V), 0);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
    if (o.top_k > 0 && o.top_k < V) order.resize(size_t(o.top_k));
    std::vector<double> probs(order.size());
    double top = logits[size_t(order[0])], total = 0;
    for (size_t i = 0; i < order.size(); ++i) total += probs[i] = std::exp((logits[size_t(order[i])] - top) / o.temperature);
    for (double& p : probs) p /= total;

    // Top-p keeps the shortest head of the list whose mass reaches p (at least one token).
    if (o.top_p < 1) {
        double mass = 0;
        size_t keep = 0;
        while (keep < probs.size() && mass < o.top_p) mass += probs[keep++];
        probs.resize(std::max<size_t>(keep, 1));
        total = std::accumulate(probs.begin(), probs.end(), 0.0);
        for (double& p : probs) p /= total;
    }
    double cumulative = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
        cumulative += probs[i];
        if (uniform < cumulative) return order[i];
    }
    return order[probs.size() - 1];
}

void GenerateOptions::validate() const {
    EMBER_CHECK(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, not ", max_new_tokens);
    EMBER_CHECK(std::isfinite(temperature) && temperature >= 0, "generate: temperature must be a number >= 0 "
                "(0: greedy), not ", temperature);
    EMBER_CHECK(top_k >= 0, "generate: top_k must be >= 0 (0: all tokens), not ", top_k);
    EMBER_CHECK(top_p > 0 && top_p <= 1, "generate: top_p must be in (0, 1] (1: off), not ", top_p);
}

std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt, const GenerateOptions& o) {
    o.validate();
    EMBER_CHECK(!prompt.empty(), "generate: the prompt needs at least one token");
    bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    Device device = model.lm_head_weight().device();
    Generator gen(o.seed);
    std::vector<nn::KVCache> caches(model.num_blocks());
    std::vector<int64_t> tokens = prompt, out;
    int64_t fed = 0;  // tokens already in the cache

    const int64_t context = model.token_context();  // less the prompt encoder's virtual tokens
    for (int64_t step = 0; step < o.max_new_tokens; ++step) {
        GPTInputs in;
        std::vector<int64_t> window;
        if (o.use_cache) {
            // A full cache starts over from the last half-context of tokens (a sliding window
            // that re-reads its start only every context/2 tokens).
            int64_t pending = int64_t(tokens.size()) - fed;
            if (caches[0].length() + pending > model.config.context) {  // the cache holds the virtual tokens too
                caches.assign(model.num_blocks(), nn::KVCache{});
                int64_t keep = std::min<int64_t>(int64_t(tokens.size()), std::max<int64_t>(1, context / 2));
                window.assign(tokens.end() - keep, tokens.end());
            } else {
                window.assign(tokens.begin() + fed, tokens.end());
            }
            in.caches = &caches;
            in.position_offset = caches[0].length();
        } else {
            // The last `context` tokens.
            size_t start = tokens.size() > size_t(context) ? tokens.size() - size_t(context) : 0;
            window.assign(tokens.begin() + int64_t(start), tokens.end());
        }
        Tensor ids = from_vector(window, {1, int64_t(window.size())}).to(device);
        Tensor logits = model.forward_ids(ids, in);  // (1, T, V)
        fed = int64_t(tokens.size());
        std::vector<float> last = logits.select(1, logits.size(1) - 1).to(DType::F32).to(Device::cpu()).to_vector<float>();
        double u = rand({1}, gen, DType::F64).item<double>();
        int64_t next = sample_token(last, o, std::min(u, 1.0 - 1e-12));
        tokens.push_back(next);
        out.push_back(next);
        if (next == o.stop_token) break;
    }
    model.train(was_training);
    return out;
}

}  // namespace models
}  // namespace ember
