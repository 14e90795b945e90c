#include "models/gpt.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/config_json.h"
#include "models/memory_check.h"
#include "nn/atomic_file.h"
#include "nn/bf16_linear.h"
#include "nn/init.h"
#include "nn/safetensors.h"

namespace ember {
namespace models {

using Style = GPTConfig::Style;

// ---- config ----

GPTConfig GPTConfig::gpt2(int64_t vocab, int64_t context, int64_t dim, int64_t layers, int64_t heads) {
    GPTConfig c;
    c.vocab_size = vocab, c.context = context, c.dim = dim, c.layers = layers, c.heads = heads;
    return c;
}

GPTConfig GPTConfig::llama(int64_t vocab, int64_t context, int64_t dim, int64_t layers, int64_t heads,
                           int64_t kv_heads, int64_t hidden) {
    GPTConfig c = gpt2(vocab, context, dim, layers, heads);
    c.style = Style::Llama;
    c.kv_heads = kv_heads, c.hidden = hidden;
    c.norm_eps = 1e-6;
    c.tie_embeddings = false;
    return c;
}

GPTConfig GPTConfig::from_hf_json(const std::string& json_text) {
    namespace cj = config_json;
    const char* op = "GPTConfig::from_hf_json";
    cj::json j = cj::parse(json_text, op);
    std::string type = cj::text(j, "model_type", "gpt2", op);
    auto need = [&](const char* key) { return cj::required_integer(j, key, type, op); };
    GPTConfig c;
    if (type == "gpt2") {
        c = gpt2(need("vocab_size"), need("n_positions"), need("n_embd"), need("n_layer"), need("n_head"));
        c.hidden = cj::integer(j, "n_inner", 0, op);
        c.norm_eps = cj::real(j, "layer_norm_epsilon", 1e-5, op);
        c.dropout = cj::real(j, "resid_pdrop", 0.0, op);
        c.tie_embeddings = cj::boolean(j, "tie_word_embeddings", true, op);
        // Ember's GPT-2 MLP is the tanh approximation of GELU, which is what these names mean.
        std::string act = cj::text(j, "activation_function", "gelu_new", op);
        EMBER_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", op, ": \"activation_function\" \"", act,
                    "\" is not supported; Ember's GPT-2 uses \"gelu_new\" (tanh-approximated GELU)");
    } else if (type == "llama") {
        int64_t heads = need("num_attention_heads");
        c = llama(need("vocab_size"), need("max_position_embeddings"), need("hidden_size"),
                  need("num_hidden_layers"), heads, cj::integer(j, "num_key_value_heads", heads, op),
                  need("intermediate_size"));
        c.norm_eps = cj::real(j, "rms_norm_eps", 1e-6, op);
        c.rope_theta = cj::real(j, "rope_theta", 10000.0, op);
        c.tie_embeddings = cj::boolean(j, "tie_word_embeddings", false, op);
        c.dropout = cj::real(j, "attention_dropout", 0.0, op);
        std::string act = cj::text(j, "hidden_act", "silu", op);
        EMBER_CHECK(act == "silu", op, ": \"hidden_act\" \"", act,
                    "\" is not supported; Ember's LLaMA MLP is SwiGLU (\"silu\")");
        if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
            const auto& s = j["rope_scaling"];
            std::string kind = cj::text(s, "rope_type", cj::text(s, "type", "linear", op), op);
            nn::RopeScaling& r = c.rope_scaling;
            if (kind == "linear") {
                r.type = nn::RopeScaling::Type::Linear;
                r.factor = cj::real(s, "factor", 1.0, op);
            } else if (kind == "yarn") {
                r.type = nn::RopeScaling::Type::Yarn;
                r.factor = cj::real(s, "factor", 1.0, op);
                // HF: without original_max_position_embeddings, max_position_embeddings is the trained context
                r.original_context = cj::integer(s, "original_max_position_embeddings", c.context, op);
                r.beta_fast = cj::real(s, "beta_fast", 32.0, op);
                r.beta_slow = cj::real(s, "beta_slow", 1.0, op);
                r.attention_factor = cj::real(s, "attention_factor", 0.0, op);
                for (const char* key : {"mscale", "mscale_all_dim"})
                    EMBER_CHECK(!s.contains(key), op, ": yarn rope_scaling's \"", key, "\" (DeepSeek's attention "
                                "factor) is not supported; give \"attention_factor\" instead");
                EMBER_CHECK(!s.contains("truncate") || s["truncate"] == true, op, ": yarn rope_scaling with "
                            "\"truncate\": false is not supported; Ember rounds the ramp's ends, as HF by default");
            } else if (kind != "default") {
                throw Error(make_message(op, ": rope_scaling type \"", kind, "\" is not supported; Ember "
                                         "implements \"linear\" (position interpolation) and \"yarn\""));
            }
        }
    } else {
        throw Error(make_message(op, ": model_type \"", type,
                                 "\" is not a GPT Ember knows; use \"gpt2\" or \"llama\""));
    }
    c.validate();
    return c;
}

void GPTConfig::validate() const {
    // Sizes up to 2^31 keep every product of two of them inside int64.
    auto positive = [](const char* name, int64_t v) {
        EMBER_CHECK(v > 0, "GPTConfig: ", name, " must be positive, not ", v);
        EMBER_CHECK(v <= (int64_t(1) << 31), "GPTConfig: ", name, " must be at most 2^31, not ", v);
    };
    positive("vocab_size", vocab_size), positive("context (n_positions)", context);
    positive("dim (n_embd)", dim), positive("layers (n_layer)", layers), positive("heads (n_head)", heads);
    EMBER_CHECK(dim % heads == 0, "GPTConfig: dim ", dim, " is not a multiple of heads ", heads,
                "; pick heads that divide the width");
    EMBER_CHECK(kv_heads >= 0 && (kv_heads == 0 || heads % kv_heads == 0), "GPTConfig: kv_heads ", kv_heads,
                " must divide heads ", heads, " (0: as many as heads)");
    EMBER_CHECK(style == Style::GPT2 || (dim / heads) % 2 == 0, "GPTConfig: RoPE needs an even head size, not ",
                dim / heads, " (dim ", dim, " / heads ", heads, ")");
    EMBER_CHECK(hidden >= 0 && hidden <= (int64_t(1) << 31), "GPTConfig: hidden (the MLP width) must be positive "
                "and at most 2^31, or 0 for 4 * dim; not ", hidden);
    EMBER_CHECK(dropout >= 0 && dropout < 1, "GPTConfig: dropout must be in [0, 1), not ", dropout);
    EMBER_CHECK(std::isfinite(norm_eps) && norm_eps > 0, "GPTConfig: the norm epsilon must be a positive number, not ",
                norm_eps);
    EMBER_CHECK(std::isfinite(rope_theta) && rope_theta > 0, "GPTConfig: rope_theta must be positive, not ", rope_theta);
    rope_scaling.validate("GPTConfig");
}

double GPTConfig::parameter_count() const {
    double C = double(dim), H = double(mlp_hidden()), V = double(vocab_size), kv = double(kv_heads > 0 ? kv_heads : heads);
    double per_layer = style == Style::GPT2 ? 4 * C * C + 2 * C * H + 9 * C + H
                                            : 2 * C * C + 2 * C * (C * kv / double(heads)) + 3 * C * H + 2 * C;
    double embeddings = V * C + (style == Style::GPT2 ? double(context) * C : 0) + (tie_embeddings ? 0 : V * C);
    return embeddings + double(layers) * per_layer + 2 * C;
}

std::string GPTConfig::to_hf_json() const {
    nlohmann::json j;
    if (style == Style::GPT2) {
        j = {{"model_type", "gpt2"},      {"architectures", {"GPT2LMHeadModel"}},
             {"vocab_size", vocab_size},  {"n_positions", context},
             {"n_embd", dim},             {"n_layer", layers},
             {"n_head", heads},           {"layer_norm_epsilon", norm_eps},
             {"activation_function", "gelu_new"},
             {"resid_pdrop", dropout},    {"embd_pdrop", dropout},
             {"attn_pdrop", dropout},     {"tie_word_embeddings", tie_embeddings}};
        j["n_inner"] = hidden > 0 ? nlohmann::json(hidden) : nlohmann::json(nullptr);
    } else {
        j = {{"model_type", "llama"},
             {"architectures", {"LlamaForCausalLM"}},
             {"vocab_size", vocab_size},
             {"max_position_embeddings", context},
             {"hidden_size", dim},
             {"intermediate_size", mlp_hidden()},
             {"num_hidden_layers", layers},
             {"num_attention_heads", heads},
             {"num_key_value_heads", kv_heads > 0 ? kv_heads : heads},
             {"rms_norm_eps", norm_eps},
             {"rope_theta", rope_theta},
             {"hidden_act", "silu"},
             {"attention_bias", false},
             {"attention_dropout", dropout},
             {"tie_word_embeddings", tie_embeddings}};
        const nn::RopeScaling& r = rope_scaling;
        // linear keeps the older key "type" that Ember's earlier files carry; HF reads both keys
        if (r.type == nn::RopeScaling::Type::Linear) j["rope_scaling"] = {{"type", "linear"}, {"factor", r.factor}};
        if (r.type == nn::RopeScaling::Type::Yarn) {
            j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", r.factor},
                                 {"original_max_position_embeddings", r.original_context},
                                 {"beta_fast", r.beta_fast}, {"beta_slow", r.beta_slow}};
            if (r.attention_factor > 0) j["rope_scaling"]["attention_factor"] = r.attention_factor;
        }
    }
    return j.dump(2);
}

// ---- the body: embeddings, blocks, final norm ----

class GPT::Body : public nn::Module {
public:
    Body(const GPTConfig& c, Generator& init_gen, std::shared_ptr<Generator> rng) {
        bool gpt2 = c.style == Style::GPT2;
        token_embedding = std::make_shared<nn::Embedding>(c.vocab_size, c.dim, init_gen);
        register_module(gpt2 ? "wte" : "embed_tokens", token_embedding);
        if (gpt2) {
            position_embedding = std::make_shared<nn::Embedding>(c.context, c.dim, init_gen);
            register_module("wpe", position_embedding);
        }
        dropout = std::make_shared<nn::Dropout>(c.dropout, rng);

        nn::BlockConfig b;
        b.attn.dim = c.dim;
        b.attn.heads = c.heads;
        b.attn.kv_heads = c.kv_heads;
        b.attn.fused_qkv = gpt2;
        b.attn.bias = gpt2;
        b.attn.causal = true;
        b.attn.dropout = c.dropout;
        b.attn.rope = !gpt2;
        b.attn.rope_theta = c.rope_theta;
        b.attn.rope_scaling = c.rope_scaling;
        if (!gpt2) b.attn.names.out = "o_proj";
        b.norm = gpt2 ? nn::NormKind::LayerNorm : nn::NormKind::RMSNorm;
        b.norm_eps = c.norm_eps;
        b.mlp = gpt2 ? nn::MlpKind::Mlp : nn::MlpKind::SwiGLU;
        b.act = nn::Activation::GeluTanh;  // GPT-2's "gelu_new"
        b.hidden = c.mlp_hidden();
        b.mlp_bias = gpt2;
        b.mlp_names = {"c_fc", "c_proj"};
        b.dropout = c.dropout;
        if (!gpt2) b.names = {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"};
        blocks = std::make_shared<nn::ModuleList<nn::TransformerBlock>>();
        for (int64_t i = 0; i < c.layers; ++i)
            blocks->push_back(std::make_shared<nn::TransformerBlock>(b, init_gen, rng));
        register_module(gpt2 ? "h" : "layers", blocks);

        if (gpt2) {
            final_norm = std::make_shared<nn::LayerNorm>(c.dim, c.norm_eps);
        } else {
            final_norm = std::make_shared<nn::RMSNorm>(c.dim, c.norm_eps);
        }
        register_module(gpt2 ? "ln_f" : "norm", final_norm);
    }
    std::string type_name() const override { return "GPTBody"; }

    std::shared_ptr<nn::Embedding> token_embedding, position_embedding;
    std::shared_ptr<nn::Dropout> dropout;
    std::shared_ptr<nn::ModuleList<nn::TransformerBlock>> blocks;
    std::shared_ptr<nn::Module> final_norm;
};

// GPT-2's init (its paper and nanoGPT's reading of it): weights N(0, 0.02), biases zero, norms
// one, and the projections back into the residual stream N(0, 0.02 / sqrt(2 * layers)) so that
// the stream's variance does not grow with depth.
static void init_gpt_weights(nn::Module& model, int64_t layers, Generator& gen) {
    const double std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * double(layers));
    auto ends_with = [](const std::string& s, const std::string& tail) {
        return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
    };
    for (auto& [name, p] : model.named_parameters()) {
        Tensor& slot = model.parameter(name);
        if (p.dim() == 1) continue;  // biases zero and norm weights one, as their layers made them
        bool residual = ends_with(name, "attn.c_proj.weight") || ends_with(name, "mlp.c_proj.weight") ||
                        ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight");
        nn::normal_(slot, 0, residual ? residual_std : std, gen);
    }
    for (auto& [name, p] : model.named_parameters())
        if (p.dim() == 1 && ends_with(name, ".bias")) nn::zeros_(model.parameter(name));
}

GPT::GPT(const GPTConfig& c, uint64_t seed) : config(c), rng(std::make_shared<Generator>(seed + 1)) {
    c.validate();
    check_fits_in_memory(make_message("GPT: this config (", c.layers, " layers of width ", c.dim, ") has ~",
                                      c.parameter_count(), " f32 parameters, which"),
                         4 * c.parameter_count(), "Use fewer layers or a smaller width");
    Generator init_gen(seed);
    body = std::make_shared<Body>(c, init_gen, rng);
    blocks = body->blocks;
    register_module(c.style == Style::GPT2 ? "transformer" : "model", body);
    if (!c.tie_embeddings) {
        lm_head = std::make_shared<nn::Linear>(c.dim, c.vocab_size, false, init_gen);
        register_module("lm_head", lm_head);
    }
    register_module("prompt_encoder", prompt_encoder);
    init_gpt_weights(*this, c.layers, init_gen);
}

nn::ForwardShape GPT::forward_shape() const {
    nn::ForwardShape s;
    s.dim = config.dim, s.layers = config.layers, s.heads = config.heads;
    s.kv_heads = config.kv_heads > 0 ? config.kv_heads : config.heads;
    s.head_dim = config.dim / config.heads;
    s.word_embeddings = body->token_embedding->weight;
    return s;
}

int64_t GPT::token_context() const {
    return config.context - (prompt_encoder ? prompt_encoder->virtual_token_count() : 0);
}

Tensor GPT::embed(const Tensor& ids) { return body->token_embedding->forward_ids(ids); }

Tensor GPT::lm_head_weight() const { return lm_head ? lm_head->weight : body->token_embedding->weight; }

Tensor GPT::hidden_states(const Tensor& ids, const GPTInputs& in) {
    int64_t virtual_tokens = 0;
    Tensor h = hidden(ids, in, virtual_tokens);
    return virtual_tokens > 0 ? h.slice(1, virtual_tokens, h.size(1)) : h;
}

Tensor GPT::hidden(const Tensor& ids, const GPTInputs& in_given, int64_t& virtual_tokens) {
    EMBER_CHECK(ids.dim() == 2, "GPT: ids must be (batch, time), got ", ids.shape());
    GPTInputs in = in_given;
    virtual_tokens = 0;
    if (prompt_encoder) {
        nn::ForwardContext ctx;
        ctx.batch = ids.size(0);
        prompt_encoder->supply(ctx);
        EMBER_CHECK(ctx.layer_tokens.empty(), "GPT: the prompt encoder supplies deep prompts (VPT-deep), which "
                    "GPT does not take; use prefix tuning for per-layer prompts");
        // Virtual tokens go before the first chunk only: a continuing KV cache already holds them.
        const bool continuing = in.caches && !in.caches->empty() && (*in.caches)[0].length() > 0;
        if (ctx.virtual_tokens.defined() && !continuing) {
            EMBER_CHECK(!in.prefix_embeds.defined(), "GPT: prefix_embeds given while the prompt encoder supplies "
                        "virtual tokens; use one or the other");
            in.prefix_embeds = ctx.virtual_tokens;
            virtual_tokens = ctx.virtual_tokens.size(1);
        }
        if (!ctx.layer_prefixes.empty()) {
            EMBER_CHECK(in.layer_prefixes.empty(), "GPT: layer_prefixes given while the prompt encoder supplies "
                        "them; use one or the other");
            in.layer_prefixes = ctx.layer_prefixes;
        }
    }
    Tensor x = embed(ids);
    nn::AttentionInputs attn_in;
    attn_in.key_padding = in.key_padding;
    if (in.prefix_embeds.defined()) {
        Tensor prefix = in.prefix_embeds;
        if (prefix.size(0) != x.size(0)) prefix = prefix.expand({x.size(0), prefix.size(1), prefix.size(2)});
        x = cat({prefix, x}, 1);
        if (in.key_padding.defined() && in.key_padding.size(1) == ids.size(1))
            attn_in.key_padding = cat({ones({ids.size(0), prefix.size(1)}, in.key_padding.dtype(), in.key_padding.device()), in.key_padding}, 1);
    }
    int64_t T = x.size(1);
    EMBER_CHECK(in.position_offset + T <= config.context, "GPT: positions ", in.position_offset, "..",
                in.position_offset + T - 1, " exceed the context of ", config.context,
                "; shorten the input or raise the model's context");
    if (body->position_embedding) {
        Tensor positions = arange(double(in.position_offset), double(in.position_offset + T), 1, DType::I64);
        x = x + body->position_embedding->forward_ids(positions.to(ids.device()));
    }
    x = body->dropout->forward(x);
    EMBER_CHECK(!in.caches || in.caches->size() == num_blocks(), "GPT: ", in.caches ? in.caches->size() : 0,
                " KV caches for ", num_blocks(), " layers");
    EMBER_CHECK(in.layer_prefixes.empty() || in.layer_prefixes.size() == num_blocks(), "GPT: ",
                in.layer_prefixes.size(), " layer prefixes for ", num_blocks(), " layers");
    for (size_t i = 0; i < num_blocks(); ++i) {
        attn_in.cache = in.caches ? &(*in.caches)[i] : nullptr;
        attn_in.position_offset = in.position_offset;
        if (!in.layer_prefixes.empty()) {
            attn_in.prefix_k = in.layer_prefixes[i].first;
            attn_in.prefix_v = in.layer_prefixes[i].second;
        }
        x = block(i).forward(x, attn_in);
    }
    return body->final_norm->forward(x);
}

Tensor GPT::forward_ids(const Tensor& ids, const GPTInputs& in) {
    int64_t virtual_tokens = 0;
    Tensor h = hidden(ids, in, virtual_tokens);
    if (virtual_tokens > 0) h = h.slice(1, virtual_tokens, h.size(1));  // the real tokens' logits only
    if (head_bf16_) {
        // Only a forward that records a graph could train the weight away from its copy.
        EMBER_CHECK(!(lm_head_weight().requires_grad() && GradMode::is_enabled()),
                    "GPT: the head runs on a bf16 copy of its weight "
                    "(cast_to_bf16), but that weight (", lm_head ? "lm_head" : "the tied token embedding",
                    ") now trains and the copy would not follow it; freeze it, or train without cast_to_bf16");
        return nn::bf16_linear(h, *head_bf16_, Tensor());
    }
    return nn::linear(h, lm_head_weight(), Tensor());
}

int GPT::cast_to_bf16() {
    int cast = nn::cast_linears_to_bf16(*this, [](const std::string& name) { return name == "lm_head"; });
    head_bf16_ = std::make_shared<const Bf16Weight>(to_bf16(lm_head_weight().detach()));
    return cast;
}

// ---- Hugging Face files ----

bool is_gpt2_conv1d_weight(const std::string& name) {
    for (const char* tail : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"}) {
        std::string t = tail;
        if (name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0) return true;
    }
    return false;
}

nn::StateDict GPT::hf_state_dict() const {
    nn::StateDict sd = state_dict();
    if (config.style == Style::GPT2)
        for (auto& [name, t] : sd)
            if (is_gpt2_conv1d_weight(name)) t = t.t().contiguous();
    return sd;
}

void GPT::load_hf_state_dict(const nn::StateDict& sd, bool strict) {
    nn::StateDict ours;
    for (const auto& [name, t] : sd) {
        // A tied head is the token embedding: some files still carry a copy of it.
        if (config.tie_embeddings && name == "lm_head.weight") continue;
        bool conv1d = config.style == Style::GPT2 && is_gpt2_conv1d_weight(name);
        EMBER_CHECK(!conv1d || t.dim() == 2, "GPT::load_hf_state_dict: ", name, " should be 2-D (in, out), got ",
                    t.shape());
        ours[name] = conv1d ? t.t() : t;
    }
    load_state_dict(ours, strict);
}

void GPT::save_pretrained(const std::string& dir) const {
    nn::require_dense_weights(*this, "GPT::save_pretrained");
    nn::make_folders(dir, "GPT::save_pretrained");
    nn::save_safetensors(dir + "/model.safetensors", hf_state_dict(), {{"format", "pt"}});
    nn::write_file_atomically(dir + "/config.json", config.to_hf_json() + "\n");
}

std::shared_ptr<GPT> GPT::from_pretrained(const std::string& dir, uint64_t seed) {
    GPTConfig c = config_json::from_file(dir + "/config.json", "GPT::from_pretrained", GPTConfig::from_hf_json);
    auto model = std::make_shared<GPT>(c, seed);
    model->load_hf_state_dict(nn::load_safetensors(dir + "/model.safetensors").tensors);
    return model;
}

}  // namespace models
}  // namespace ember
