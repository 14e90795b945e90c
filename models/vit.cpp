#include "models/vit.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "models/config_json.h"
#include "models/memory_check.h"
#include "nn/atomic_file.h"
#include "nn/init.h"
#include "nn/linear_base.h"
#include "nn/safetensors.h"

namespace ember {
namespace models {

// ---- config ----

ViTConfig ViTConfig::from_hf_json(const std::string& json_text) {
    namespace cj = config_json;
    const char* op = "ViTConfig::from_hf_json";
    cj::json j = cj::parse(json_text, op);
    std::string type = cj::text(j, "model_type", "vit", op);
    EMBER_CHECK(type == "vit", op, ": model_type \"", type, "\" is not a Hugging Face ViT (\"vit\")");
    ViTConfig c;
    c.dim = cj::integer(j, "hidden_size", c.dim, op);
    c.layers = cj::integer(j, "num_hidden_layers", c.layers, op);
    c.heads = cj::integer(j, "num_attention_heads", c.heads, op);
    c.hidden = cj::integer(j, "intermediate_size", 0, op);
    c.norm_eps = cj::real(j, "layer_norm_eps", c.norm_eps, op);
    c.image_size = cj::integer(j, "image_size", c.image_size, op);
    c.patch = cj::integer(j, "patch_size", c.patch, op);
    c.channels = cj::integer(j, "num_channels", c.channels, op);
    c.dropout = cj::real(j, "hidden_dropout_prob", 0.0, op);
    if (j.contains("id2label") && j["id2label"].is_object()) c.num_labels = int64_t(j["id2label"].size());
    EMBER_CHECK(cj::boolean(j, "qkv_bias", true, op), op, ": qkv_bias false is not supported");
    std::string act = cj::text(j, "hidden_act", "gelu", op);
    EMBER_CHECK(act == "gelu", op, ": \"hidden_act\" \"", act, "\" is not supported; Ember's ViT uses \"gelu\"");
    c.validate();
    return c;
}

void ViTConfig::validate() const {
    // Sizes up to 2^31 keep every product of two of them inside int64.
    auto positive = [](const char* name, int64_t v) {
        EMBER_CHECK(v > 0, "ViTConfig: ", name, " must be positive, not ", v);
        EMBER_CHECK(v <= (int64_t(1) << 31), "ViTConfig: ", name, " must be at most 2^31, not ", v);
    };
    positive("image_size", image_size), positive("patch (patch_size)", patch), positive("channels", channels);
    positive("dim (hidden_size)", dim), positive("layers (num_hidden_layers)", layers);
    positive("heads (num_attention_heads)", heads), positive("num_labels", num_labels);
    EMBER_CHECK(image_size % patch == 0, "ViTConfig: image size ", image_size, " is not a multiple of the patch size ",
                patch, "; pick a patch that divides it");
    EMBER_CHECK(dim % heads == 0, "ViTConfig: dim ", dim, " is not a multiple of heads ", heads,
                "; pick heads that divide the width");
    EMBER_CHECK(hidden >= 0 && hidden <= (int64_t(1) << 31), "ViTConfig: hidden (the MLP width) must be positive "
                "and at most 2^31, or 0 for 4 * dim; not ", hidden);
    EMBER_CHECK(dropout >= 0 && dropout < 1, "ViTConfig: dropout must be in [0, 1), not ", dropout);
    EMBER_CHECK(std::isfinite(norm_eps) && norm_eps > 0, "ViTConfig: layer_norm_eps must be a positive number, not ",
                norm_eps);
}

double ViTConfig::parameter_count() const {
    double C = double(dim), H = double(mlp_hidden()), P = double(patch);
    double per_layer = 4 * C * C + 2 * C * H + 9 * C + H;
    double embeddings = (double(channels) * P * P + 1) * C + (double(num_patches()) + 2) * C;
    return embeddings + double(layers) * per_layer + 2 * C + (C + 1) * double(num_labels);
}

std::string ViTConfig::to_hf_json() const {
    nlohmann::json labels = nlohmann::json::object();
    for (int64_t i = 0; i < num_labels; ++i) labels[std::to_string(i)] = "LABEL_" + std::to_string(i);
    nlohmann::json j = {{"model_type", "vit"},          {"architectures", {"ViTForImageClassification"}},
                        {"hidden_size", dim},            {"num_hidden_layers", layers},
                        {"num_attention_heads", heads},  {"intermediate_size", mlp_hidden()},
                        {"hidden_act", "gelu"},          {"layer_norm_eps", norm_eps},
                        {"image_size", image_size},      {"patch_size", patch},
                        {"num_channels", channels},      {"qkv_bias", true},
                        {"hidden_dropout_prob", dropout}, {"attention_probs_dropout_prob", dropout},
                        {"id2label", labels}};
    return j.dump(2);
}

// ---- one layer ----

nn::BlockConfig vit_block_config(const ViTConfig& c) {
    nn::BlockConfig b;
    b.norm = nn::NormKind::LayerNorm;
    b.norm_eps = c.norm_eps;
    b.attn.dim = c.dim, b.attn.heads = c.heads;
    b.attn.fused_qkv = false, b.attn.bias = true, b.attn.causal = false;
    b.attn.dropout = c.dropout;  // attention_probs_dropout_prob
    b.attn.names.q = "attention.query", b.attn.names.k = "attention.key", b.attn.names.v = "attention.value";
    b.attn.names.out = "output.dense";
    b.mlp = nn::MlpKind::Mlp;
    b.hidden = c.mlp_hidden();
    b.act = nn::Activation::GeluErf;  // hidden_act "gelu" is the exact GELU
    b.dropout = c.dropout;            // hidden_dropout_prob, after attention and after the MLP
    b.names.ln1 = "layernorm_before", b.names.attn = "attention", b.names.ln2 = "layernorm_after";
    b.names.mlp = "";  // inlined: Hugging Face's MLP Linears sit beside the attention, not under a module
    b.mlp_names.fc = "intermediate.dense", b.mlp_names.proj = "output.dense";
    return b;
}

// ---- the model ----

// Patch projection: a stride-P convolution written as one matrix product over flattened patches.
class PatchProjection : public nn::Module {
public:
    PatchProjection(const ViTConfig& c)
        : weight(zeros({c.dim, c.channels, c.patch, c.patch})), bias(zeros({c.dim})) {
        register_parameter("weight", weight);
        register_parameter("bias", bias);
    }
    std::string type_name() const override { return "PatchProjection"; }
    // patches (B, N, C * P * P) -> (B, N, dim)
    Tensor forward(const Tensor& patches) override {
        return matmul(patches, weight.reshape({weight.size(0), -1}).t()) + bias;
    }
    Tensor weight, bias;  // (dim, C, P, P), (dim): a Conv2d's layout
};

class ViT::Embeddings : public nn::Module {
public:
    explicit Embeddings(const ViTConfig& c)
        : cls_token(zeros({1, 1, c.dim})), position_embeddings(zeros({1, c.num_patches() + 1, c.dim})) {
        register_parameter("cls_token", cls_token);
        register_parameter("position_embeddings", position_embeddings);
        projection = std::make_shared<PatchProjection>(c);
        patch_embeddings = std::make_shared<Holder>();
        patch_embeddings->hold("projection", projection);
        register_module("patch_embeddings", patch_embeddings);
    }
    std::string type_name() const override { return "ViTEmbeddings"; }

    // A container that only adds the name "patch_embeddings" above the projection.
    class Holder : public nn::Module {
    public:
        std::string type_name() const override { return "ViTPatchEmbeddings"; }
        void hold(const std::string& name, std::shared_ptr<PatchProjection>& slot) { register_module(name, slot); }
    };

    Tensor cls_token, position_embeddings;  // (1, 1, C), (1, N + 1, C)
    std::shared_ptr<PatchProjection> projection;
    std::shared_ptr<Holder> patch_embeddings;
};

class ViT::Encoder : public nn::Module {
public:
    explicit Encoder(std::shared_ptr<nn::ModuleList<nn::TransformerBlock>>& layers) { register_module("layer", layers); }
    std::string type_name() const override { return "ViTEncoder"; }
};

class ViT::Body : public nn::Module {
public:
    Body(const ViTConfig& c, std::shared_ptr<nn::ModuleList<nn::TransformerBlock>>& layers)
        : embeddings(std::make_shared<Embeddings>(c)), encoder(std::make_shared<Encoder>(layers)),
          layernorm(std::make_shared<nn::LayerNorm>(c.dim, c.norm_eps)) {
        register_module("embeddings", embeddings);
        register_module("encoder", encoder);
        register_module("layernorm", layernorm);
    }
    std::string type_name() const override { return "ViTModel"; }
    std::shared_ptr<Embeddings> embeddings;
    std::shared_ptr<Encoder> encoder;
    std::shared_ptr<nn::LayerNorm> layernorm;
};

ViT::ViT(const ViTConfig& c, uint64_t seed) : config(c), rng(std::make_shared<Generator>(seed + 1)) {
    c.validate();
    check_fits_in_memory(make_message("ViT: this config (", c.layers, " layers of width ", c.dim, ") has ~",
                                      c.parameter_count(), " f32 parameters, which"),
                         4 * c.parameter_count(), "Use fewer layers or a smaller width");
    Generator init_gen(seed);
    layers = std::make_shared<nn::ModuleList<nn::TransformerBlock>>();
    const nn::BlockConfig block = vit_block_config(c);
    for (int64_t i = 0; i < c.layers; ++i)
        layers->push_back(std::make_shared<nn::TransformerBlock>(block, init_gen, rng));
    body = std::make_shared<Body>(c, layers);
    classifier = std::make_shared<nn::Linear>(c.dim, c.num_labels, true, init_gen);
    register_module("vit", body);
    register_module("classifier", classifier);
    register_module("prompt_encoder", prompt_encoder);

    // Hugging Face ViT's init: truncated normal (std 0.02) for every matrix and for the [CLS] and
    // position embeddings; biases zero; norms one.
    for (auto& [name, p] : named_parameters()) {
        Tensor& slot = parameter(name);
        if (p.dim() >= 2) {
            nn::trunc_normal_(slot, 0, 0.02, init_gen);
        } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
            nn::zeros_(slot);
        }
    }
}

Tensor ViT::patchify(const Tensor& images) const {
    Tensor x = images.dim() == 3 ? images.unsqueeze(1) : images;
    const int64_t P = config.patch;
    EMBER_CHECK(x.dim() == 4 && x.size(1) == config.channels && x.size(2) == config.image_size &&
                    x.size(3) == config.image_size,
                "ViT: images must be (B, ", config.channels, ", ", config.image_size, ", ", config.image_size,
                ") or (B, H, W) for one channel, got ", images.shape());
    int64_t B = x.size(0), C = x.size(1), G = config.image_size / P;
    // (B, C, G, P, G, P) -> (B, G, G, C, P, P) -> (B, G*G, C*P*P)
    return x.reshape({B, C, G, P, G, P}).permute({0, 2, 4, 1, 3, 5}).reshape({B, G * G, C * P * P});
}

Tensor ViT::features(const Tensor& images) {
    Embeddings& e = *body->embeddings;
    Tensor patches = e.projection->forward(patchify(images));  // (B, N, C)
    int64_t B = patches.size(0);
    Tensor cls = e.cls_token.expand({B, 1, config.dim});
    Tensor x = cat({cls, patches}, 1) + e.position_embeddings;
    if (config.dropout > 0) x = dropout(x, config.dropout, *rng, is_training());
    nn::ForwardContext ctx;
    ctx.batch = B;
    if (prompt_encoder) prompt_encoder->supply(ctx);
    EMBER_CHECK(ctx.layer_prefixes.empty() || ctx.layer_prefixes.size() == num_layers(), "ViT: ",
                ctx.layer_prefixes.size(), " layer prefixes for ", num_layers(), " layers");
    // Virtual tokens go after [CLS], without position embeddings: [CLS ; P ; patches] (VPT's
    // "prepend", KMnP/vpt src/models/vit_prompt/vit.py incorporate_prompt).
    const int64_t P = ctx.virtual_tokens.defined() ? ctx.virtual_tokens.size(1) : 0;
    // h (B, 1 [+ P] + N, C): puts `prompts` after [CLS], in place of the P slots there if `replace`.
    auto with_prompts = [&](const Tensor& h, const Tensor& prompts, bool replace) {
        const int64_t skip = replace ? 1 + P : 1;
        Tensor p = prompts.size(0) == B ? prompts : prompts.expand({B, P, config.dim});
        return cat({h.slice(1, 0, 1), p, h.slice(1, skip, h.size(1))}, 1);
    };
    if (P > 0) {
        EMBER_CHECK(ctx.virtual_tokens.dim() == 3 && ctx.virtual_tokens.size(2) == config.dim, "ViT: virtual tokens "
                    "must be (1 or B, P, ", config.dim, "), got ", ctx.virtual_tokens.shape());
        x = with_prompts(x, ctx.virtual_tokens, false);
    }
    EMBER_CHECK(ctx.layer_tokens.empty() || (P > 0 && ctx.layer_tokens.size() + 1 == num_layers()), "ViT: ",
                ctx.layer_tokens.size(), " deep prompts for ", num_layers(), " layers (one per layer after the "
                "first, with virtual tokens for the first)");
    for (size_t i = 0; i < num_layers(); ++i) {
        if (i > 0 && !ctx.layer_tokens.empty()) {
            const Tensor& deep = ctx.layer_tokens[i - 1];
            EMBER_CHECK(deep.dim() == 3 && deep.size(1) == P && deep.size(2) == config.dim, "ViT: deep prompts of layer ",
                        i, " must be (1 or B, ", P, ", ", config.dim, "), got ", deep.shape());
            x = with_prompts(x, deep, true);
        }
        nn::AttentionInputs in;  // every token sees every token, and every prefix slot
        if (!ctx.layer_prefixes.empty()) in.prefix_k = ctx.layer_prefixes[i].first, in.prefix_v = ctx.layer_prefixes[i].second;
        x = layer(i).forward(x, in);
    }
    return body->layernorm->forward(x.select(1, 0));
}

Tensor ViT::forward(const Tensor& images) { return classifier->forward(features(images)); }

nn::ForwardShape ViT::forward_shape() const {
    nn::ForwardShape s;
    s.dim = config.dim, s.layers = config.layers, s.heads = s.kv_heads = config.heads;
    s.head_dim = config.dim / config.heads;
    s.patch_fan_in = config.channels * config.patch * config.patch;
    s.dropout_rng = rng;
    return s;
}

// ---- Hugging Face folders ----

void ViT::save_pretrained(const std::string& dir) const {
    nn::require_dense_weights(*this, "ViT::save_pretrained");
    nn::make_folders(dir, "ViT::save_pretrained");
    nn::save_safetensors(dir + "/model.safetensors", state_dict(), {{"format", "pt"}});
    nn::write_file_atomically(dir + "/config.json", config.to_hf_json() + "\n");
}

std::shared_ptr<ViT> ViT::from_pretrained(const std::string& dir, uint64_t seed) {
    ViTConfig c = config_json::from_file(dir + "/config.json", "ViT::from_pretrained", ViTConfig::from_hf_json);
    auto model = std::make_shared<ViT>(c, seed);
    model->load_state_dict(nn::load_safetensors(dir + "/model.safetensors").tensors);
    return model;
}

}  // namespace models
}  // namespace ember
