// Helpers the PEFT tests share: tiny GPT-2 and ViT models, a few AdamW steps on a PEFT model,
// and bit-exact tensor comparison.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "models/vit.h"
#include "nn/optim.h"
#include "peft/peft_model.h"
#include "tests/helpers.h"

namespace ember {
namespace testing {

// GPT-2 style: vocab 37, context 16, dim 16, `layers` layers, 2 heads.
inline std::shared_ptr<models::GPT> tiny_gpt2(int64_t layers = 2, uint64_t seed = 3) {
    return std::make_shared<models::GPT>(models::GPTConfig::gpt2(37, 16, 16, layers, 2), seed);
}

inline std::shared_ptr<models::ViT> tiny_vit(uint64_t seed = 4) {
    models::ViTConfig c;
    c.image_size = 8, c.patch = 4, c.channels = 1, c.dim = 16, c.layers = 2, c.heads = 2, c.num_labels = 3;
    return std::make_shared<models::ViT>(c, seed);
}

inline Tensor tiny_ids(uint64_t seed = 7, int64_t B = 2, int64_t T = 6) {
    Generator gen(seed);
    return randint(0, 37, {B, T}, gen);
}

// |a - b| <= atol + rtol |b| everywhere.
inline bool all_close(const Tensor& a, const Tensor& b, double rtol, double atol = 0) {
    if (a.shape() != b.shape()) return false;
    std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    for (size_t i = 0; i < x.size(); ++i)
        if (!(std::abs(x[i] - y[i]) <= atol + rtol * std::abs(y[i]))) return false;
    return true;
}

// Clones of every parameter, by name.
inline std::map<std::string, Tensor> snapshot(const nn::Module& m) {
    std::map<std::string, Tensor> out;
    for (auto& [n, t] : m.named_parameters()) out[n] = raw::clone(t.detach());
    return out;
}

inline std::vector<Tensor> trainable(const nn::Module& m) {
    std::vector<Tensor> out;
    for (const Tensor& t : m.parameters())
        if (t.requires_grad()) out.push_back(t);
    return out;
}

// `steps` AdamW steps of next-token loss on fixed random ids; returns the trainable tensors.
inline std::vector<Tensor> train_gpt_steps(models::GPT& gpt, int steps, double lr = 1e-2) {
    std::vector<Tensor> params = trainable(gpt);
    REQUIRE(!params.empty());
    nn::AdamWOptions o;
    o.lr = lr;
    nn::AdamW opt(params, o);
    Tensor ids = tiny_ids(11, 2, 7);
    Tensor inp = ids.slice(1, 0, 6).contiguous(), tgt = ids.slice(1, 1, 7).contiguous();
    gpt.train();
    for (int s = 0; s < steps; ++s) {
        opt.zero_grad();
        Tensor loss = cross_entropy(gpt.forward_ids(inp), tgt);
        loss.backward();
        opt.step();
    }
    return params;
}

}  // namespace testing
}  // namespace ember
