// Shape twins: modules with a real model's parameter names and shapes over never-initialised
// storage, so parameter counts of full-size models (GPT-2 small, ViT-B) cost nothing to check.
// tests/test_peft_counts.cpp checks the twins against models::GPT and models::ViT name for name.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/forward_inputs.h"
#include "nn/transformer.h"

namespace ember {
namespace testing {

// A module with any named children and parameters, for building shape twins.
struct ShapeNode : nn::Module {
    std::deque<std::shared_ptr<nn::Module>> kids;
    std::deque<Tensor> params;
    std::map<std::string, ShapeNode*> nodes;
    std::string type_name() const override { return "ShapeNode"; }

    // The node at a dotted path, made (as `fresh` for the last part, if given) when missing.
    ShapeNode& at(const std::string& dotted, std::shared_ptr<ShapeNode> fresh = nullptr) {
        size_t dot = dotted.find('.');
        std::string head = dotted.substr(0, dot);
        auto it = nodes.find(head);
        if (it == nodes.end()) {
            auto n = dot == std::string::npos && fresh ? fresh : std::make_shared<ShapeNode>();
            it = nodes.emplace(head, n.get()).first;
            kids.push_back(n);
            register_module(head, kids.back());
        }
        return dot == std::string::npos ? *it->second : it->second->at(dotted.substr(dot + 1), fresh);
    }
    void child(const std::string& name, std::shared_ptr<nn::Module> m) {
        kids.push_back(std::move(m));
        register_module(name, kids.back());
    }
    void param(const std::string& name, const Shape& shape) {
        params.push_back(empty(shape));
        register_parameter(name, params.back());
    }
    // A Linear (out, in) whose tensors are never initialised.
    void linear(const std::string& name, int64_t in, int64_t out, bool bias = true) {
        Generator g;
        auto lin = std::make_shared<nn::Linear>(1, 1, bias, g);
        lin->weight = empty({out, in});
        lin->weight.set_requires_grad(true);
        if (bias) {
            lin->bias = empty({out});
            lin->bias.set_requires_grad(true);
        }
        lin->in_features = in, lin->out_features = out;
        kids.push_back(lin);
        register_module(name, kids.back());
    }
};

// A transformer block's twin: the five adapter sites of nn::TransformerBlock (empty slots), so
// site methods (bottleneck adapters) attach to twins as to the real models.
struct BlockTwin : ShapeNode, nn::HasAdapterSites {
    int64_t dim;
    std::shared_ptr<nn::Module> sites[5];
    explicit BlockTwin(int64_t d) : dim(d) {
        for (size_t i = 0; i < 5; ++i) register_module(nn::site_names()[i], sites[i]);
    }
    int64_t site_dim() const override { return dim; }
};

// A whole model's twin that takes per-forward inputs (nn/forward_inputs.h), as models::GPT and
// models::ViT do, so prompt methods attach to twins too.
struct ModelTwin : ShapeNode, nn::TakesForwardInputs {
    nn::ForwardShape shape;
    std::shared_ptr<nn::ForwardInputs> prompt_encoder;
    explicit ModelTwin(nn::ForwardShape s) : shape(std::move(s)) { register_module("prompt_encoder", prompt_encoder); }
    nn::ForwardShape forward_shape() const override { return shape; }
};

// Splits "a.b.c" into ("a.b", "c").
inline std::pair<std::string, std::string> parent_leaf(const std::string& dotted) {
    size_t dot = dotted.rfind('.');
    return {dotted.substr(0, dot), dotted.substr(dot + 1)};
}

inline void linear_at(ShapeNode& root, const std::string& dotted, int64_t in, int64_t out) {
    if (dotted.find('.') == std::string::npos) return root.linear(dotted, in, out);
    auto [parent, leaf] = parent_leaf(dotted);
    root.at(parent).linear(leaf, in, out);
}

// A real nn::LayerNorm (2 d values), so methods that train LayerNorms find them.
inline void layernorm_at(ShapeNode& root, const std::string& dotted, int64_t d) {
    auto ln = std::make_shared<nn::LayerNorm>(d);
    if (dotted.find('.') == std::string::npos) return root.child(dotted, ln);
    auto [parent, leaf] = parent_leaf(dotted);
    root.at(parent).child(leaf, ln);
}

// GPT2LMHeadModel's tree (lm_head tied, so not a module of its own).
inline std::shared_ptr<ShapeNode> gpt2_twin(int64_t V, int64_t P, int64_t d, int64_t L, int64_t heads = 12) {
    nn::ForwardShape shape;
    shape.dim = d, shape.layers = L, shape.heads = shape.kv_heads = heads, shape.head_dim = d / heads;
    auto root = std::make_shared<ModelTwin>(shape);
    root->at("transformer.wte").param("weight", {V, d});
    root->shape.word_embeddings = root->at("transformer.wte").params.back();
    root->at("transformer.wpe").param("weight", {P, d});
    for (int64_t i = 0; i < L; ++i) {
        std::string h = "transformer.h." + std::to_string(i) + ".";
        root->at(h.substr(0, h.size() - 1), std::make_shared<BlockTwin>(d));
        layernorm_at(*root, h + "ln_1", d);
        linear_at(*root, h + "attn.c_attn", d, 3 * d);
        linear_at(*root, h + "attn.c_proj", d, d);
        layernorm_at(*root, h + "ln_2", d);
        linear_at(*root, h + "mlp.c_fc", d, 4 * d);
        linear_at(*root, h + "mlp.c_proj", 4 * d, d);
    }
    layernorm_at(*root, "transformer.ln_f", d);
    return root;
}

// A real nn::RMSNorm (d values), LLaMA's norm.
inline void rmsnorm_at(ShapeNode& root, const std::string& dotted, int64_t d) {
    auto [parent, leaf] = parent_leaf(dotted);
    root.at(parent).child(leaf, std::make_shared<nn::RMSNorm>(d));
}

// LlamaForCausalLM's tree (lm_head untied, no biases, no position table).
inline std::shared_ptr<ShapeNode> llama_twin(int64_t V, int64_t d, int64_t L, int64_t ff, int64_t heads = 32) {
    nn::ForwardShape shape;
    shape.dim = d, shape.layers = L, shape.heads = shape.kv_heads = heads, shape.head_dim = d / heads;
    auto root = std::make_shared<ModelTwin>(shape);
    root->at("model.embed_tokens").param("weight", {V, d});
    root->shape.word_embeddings = root->at("model.embed_tokens").params.back();
    auto linear = [&](const std::string& dotted, int64_t in, int64_t out) {
        auto [parent, leaf] = parent_leaf(dotted);
        root->at(parent).linear(leaf, in, out, false);
    };
    for (int64_t i = 0; i < L; ++i) {
        std::string h = "model.layers." + std::to_string(i) + ".";
        root->at(h.substr(0, h.size() - 1), std::make_shared<BlockTwin>(d));
        rmsnorm_at(*root, h + "input_layernorm", d);
        for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) linear(h + "self_attn." + p, d, d);
        rmsnorm_at(*root, h + "post_attention_layernorm", d);
        linear(h + "mlp.gate_proj", d, ff);
        linear(h + "mlp.up_proj", d, ff);
        linear(h + "mlp.down_proj", ff, d);
    }
    rmsnorm_at(*root, "model.norm", d);
    root->linear("lm_head", d, V, false);
    return root;
}

// ViTForImageClassification's tree.
inline std::shared_ptr<ShapeNode> vit_twin(int64_t image, int64_t patch, int64_t C, int64_t d, int64_t L, int64_t labels,
                                           int64_t heads = 12) {
    nn::ForwardShape shape;
    shape.dim = d, shape.layers = L, shape.heads = shape.kv_heads = heads, shape.head_dim = d / heads;
    shape.patch_fan_in = C * patch * patch;
    auto root = std::make_shared<ModelTwin>(shape);
    int64_t n = (image / patch) * (image / patch);
    root->at("vit.embeddings").param("cls_token", {1, 1, d});
    root->at("vit.embeddings").param("position_embeddings", {1, n + 1, d});
    root->at("vit.embeddings.patch_embeddings.projection").param("weight", {d, C, patch, patch});
    root->at("vit.embeddings.patch_embeddings.projection").param("bias", {d});
    for (int64_t i = 0; i < L; ++i) {
        std::string l = "vit.encoder.layer." + std::to_string(i) + ".";
        root->at(l.substr(0, l.size() - 1), std::make_shared<BlockTwin>(d));
        for (const char* q : {"query", "key", "value"}) linear_at(*root, l + "attention.attention." + q, d, d);
        linear_at(*root, l + "attention.output.dense", d, d);
        linear_at(*root, l + "intermediate.dense", d, 4 * d);
        linear_at(*root, l + "output.dense", 4 * d, d);
        layernorm_at(*root, l + "layernorm_before", d);
        layernorm_at(*root, l + "layernorm_after", d);
    }
    layernorm_at(*root, "vit.layernorm", d);
    linear_at(*root, "classifier", d, labels);
    return root;
}

}  // namespace testing
}  // namespace ember
