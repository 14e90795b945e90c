#include "nn/forward_inputs.h"

namespace ember {
namespace nn {

// Batch sizes 1 and B combine by expanding the 1.
static std::pair<Tensor, Tensor> same_batch(const Tensor& a, const Tensor& b) {
    if (a.size(0) == b.size(0)) return {a, b};
    Shape sa = a.shape(), sb = b.shape();
    const int64_t B = std::max(a.size(0), b.size(0));
    sa[0] = sb[0] = B;
    return {a.expand(sa), b.expand(sb)};
}

void ForwardContext::add_virtual_tokens(const Tensor& t) {
    if (!virtual_tokens.defined()) {
        virtual_tokens = t;
        return;
    }
    auto [a, b] = same_batch(virtual_tokens, t);
    virtual_tokens = cat({a, b}, 1);
}

void ForwardContext::add_layer_prefixes(const std::vector<std::pair<Tensor, Tensor>>& prefixes) {
    if (layer_prefixes.empty()) {
        layer_prefixes = prefixes;
        return;
    }
    EMBER_CHECK(prefixes.size() == layer_prefixes.size(), "ForwardContext: ", prefixes.size(),
                " layer prefixes added to ", layer_prefixes.size());
    for (size_t l = 0; l < prefixes.size(); ++l) {
        auto [k0, k1] = same_batch(layer_prefixes[l].first, prefixes[l].first);
        auto [v0, v1] = same_batch(layer_prefixes[l].second, prefixes[l].second);
        layer_prefixes[l] = {cat({k0, k1}, 2), cat({v0, v1}, 2)};
    }
}

}  // namespace nn
}  // namespace ember
