#include "models/gpt.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

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
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(json_text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(make_message("GPTConfig::from_hf_json: not valid JSON (", e.what(), ")"));
    }
    EMBER_CHECK(j.is_object(), "GPTConfig::from_hf_json: expected a JSON object");
    std::string type = j.value("model_type", "gpt2");
    auto need = [&](const char* key) -> const nlohmann::json& {
        EMBER_CHECK(j.contains(key) && j[key].is_number_integer(), "GPTConfig::from_hf_json: a ", type,
                    " config needs an integer \"", key, "\"");
        return j[key];
    };
    GPTConfig c;
    if (type == "gpt2") {
        c = gpt2(need("vocab_size"), need("n_positions"), need("n_embd"), need("n_layer"), need("n_head"));
        if (j.contains("n_inner") && j["n_inner"].is_number_integer()) c.hidden = j["n_inner"];
        c.norm_eps = j.value("layer_norm_epsilon", 1e-5);
        c.dropout = j.value("resid_pdrop", 0.0);
        c.tie_embeddings = j.value("tie_word_embeddings", true);
    } else if (type == "llama") {
        int64_t heads = need("num_attention_heads");
        c = llama(need("vocab_size"), need("max_position_embeddings"), need("hidden_size"),
                  need("num_hidden_layers"), heads, j.value("num_key_value_heads", heads),
                  need("intermediate_size"));
        c.norm_eps = j.value("rms_norm_eps", 1e-6);
        c.rope_theta = j.value("rope_theta", 10000.0);
        c.tie_embeddings = j.value("tie_word_embeddings", false);
        c.dropout = j.value("attention_dropout", 0.0);
        if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
            const auto& s = j["rope_scaling"];
            std::string kind = s.value("type", s.value("rope_type", std::string("linear")));
            EMBER_CHECK(kind == "linear", "GPTConfig::from_hf_json: rope_scaling type \"", kind,
                        "\" is not supported; Ember implements linear position interpolation");
            c.rope_scale = s.value("factor", 1.0);
        }
    } else {
        throw Error(make_message("GPTConfig::from_hf_json: model_type \"", type,
                                 "\" is not a GPT Ember knows; use \"gpt2\" or \"llama\""));
    }
    return c;
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
        if (rope_scale != 1) j["rope_scaling"] = {{"type", "linear"}, {"factor", rope_scale}};
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
        b.attn.rope_scale = c.rope_scale;
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
    EMBER_CHECK(c.dim % c.heads == 0, "GPT: dim ", c.dim, " is not a multiple of heads ", c.heads);
    EMBER_CHECK(c.vocab_size > 0 && c.context > 0 && c.layers > 0, "GPT: vocab_size, context and layers must be positive");
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
    return matmul(h, lm_head_weight().t());
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
    nn::save_safetensors(dir + "/model.safetensors", hf_state_dict(), {{"format", "pt"}});
    std::string tmp = dir + "/config.json.tmp";
    {
        std::ofstream out(tmp);
        EMBER_CHECK(out.good(), "GPT::save_pretrained: cannot write ", tmp);
        out << config.to_hf_json() << "\n";
        EMBER_CHECK(out.good(), "GPT::save_pretrained: writing ", tmp, " failed");
    }
    EMBER_CHECK(std::rename(tmp.c_str(), (dir + "/config.json").c_str()) == 0,
                "GPT::save_pretrained: cannot move ", tmp, " into place");
}

std::shared_ptr<GPT> GPT::from_pretrained(const std::string& dir, uint64_t seed) {
    std::ifstream in(dir + "/config.json");
    EMBER_CHECK(in.good(), "GPT::from_pretrained: cannot open ", dir, "/config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto model = std::make_shared<GPT>(GPTConfig::from_hf_json(text), seed);
    model->load_hf_state_dict(nn::load_safetensors(dir + "/model.safetensors").tensors);
    return model;
}

}  // namespace models
}  // namespace ember
