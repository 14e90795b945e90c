// GPT and ViT: Hugging Face files load and give the logits of an independent loop-by-loop
// reference, round-trip byte for byte; gradchecks through whole tiny models; generation with
// and without the KV cache agree; a resumed training run equals an uninterrupted one.
#include <cmath>
#include <fstream>
#include <sstream>

#include "tests/helpers.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/vit.h"
#include "nn/safetensors.h"
#include "nn/trainer.h"

using namespace ember;
using namespace ember::testing;
using Vec = std::vector<double>;

namespace {

// ---- a plain reference transformer over row-major vectors, written from the papers' formulas ----

Vec values(const nn::StateDict& sd, const std::string& name) {
    auto it = sd.find(name);
    REQUIRE_MESSAGE(it != sd.end(), "missing " << name);
    return it->second.to(DType::F64).to_vector<double>();
}

// y (T, out) = x (T, in) @ W where W is stored (in, out) (GPT-2 Conv1D) or (out, in) (Linear).
Vec project(const Vec& x, int64_t T, const Vec& W, int64_t in, int64_t out, bool w_is_in_out, const Vec& b = {}) {
    Vec y(size_t(T * out), 0.0);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t o = 0; o < out; ++o) {
            double s = b.empty() ? 0 : b[size_t(o)];
            for (int64_t i = 0; i < in; ++i)
                s += x[size_t(t * in + i)] * (w_is_in_out ? W[size_t(i * out + o)] : W[size_t(o * in + i)]);
            y[size_t(t * out + o)] = s;
        }
    return y;
}

Vec layer_norm_ref(const Vec& x, int64_t T, int64_t C, const Vec& w, const Vec& b, double eps, bool rms) {
    Vec y(x.size());
    for (int64_t t = 0; t < T; ++t) {
        double mean = 0, sq = 0;
        for (int64_t c = 0; c < C; ++c) mean += x[size_t(t * C + c)] / double(C);
        if (rms) mean = 0;
        for (int64_t c = 0; c < C; ++c) sq += std::pow(x[size_t(t * C + c)] - mean, 2) / double(C);
        for (int64_t c = 0; c < C; ++c)
            y[size_t(t * C + c)] = (x[size_t(t * C + c)] - mean) / std::sqrt(sq + eps) * w[size_t(c)] +
                                   (b.empty() ? 0 : b[size_t(c)]);
    }
    return y;
}

// Causal attention of q (T, H*D) over k, v (T, Hkv*D); query head h reads kv head h / (H / Hkv).
Vec attention_ref(const Vec& q, const Vec& k, const Vec& v, int64_t T, int64_t H, int64_t Hkv, int64_t D) {
    Vec out(size_t(T * H * D), 0.0);
    for (int64_t h = 0; h < H; ++h) {
        int64_t g = h / (H / Hkv);
        for (int64_t i = 0; i < T; ++i) {
            Vec p(size_t(i + 1));
            double top = -1e300, total = 0;
            for (int64_t j = 0; j <= i; ++j) {
                double s = 0;
                for (int64_t d = 0; d < D; ++d) s += q[size_t(i * H * D + h * D + d)] * k[size_t(j * Hkv * D + g * D + d)];
                p[size_t(j)] = s / std::sqrt(double(D));
                top = std::max(top, p[size_t(j)]);
            }
            for (double& e : p) total += e = std::exp(e - top);
            for (int64_t j = 0; j <= i; ++j)
                for (int64_t d = 0; d < D; ++d)
                    out[size_t(i * H * D + h * D + d)] += p[size_t(j)] / total * v[size_t(j * Hkv * D + g * D + d)];
        }
    }
    return out;
}

// Rotate-half RoPE on x (T, heads*D) at positions 0..T-1.
void rope_ref(Vec& x, int64_t T, int64_t heads, int64_t D, double theta) {
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < heads; ++h)
            for (int64_t j = 0; j < D / 2; ++j) {
                double angle = double(t) * std::pow(theta, -2.0 * double(j) / double(D));
                double& a = x[size_t(t * heads * D + h * D + j)];
                double& b = x[size_t(t * heads * D + h * D + j + D / 2)];
                double a0 = a, b0 = b;
                a = a0 * std::cos(angle) - b0 * std::sin(angle);
                b = b0 * std::cos(angle) + a0 * std::sin(angle);
            }
}

double gelu_tanh_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

Vec reference_logits(const nn::StateDict& sd, const models::GPTConfig& c, const std::vector<int64_t>& ids) {
    const bool gpt2 = c.style == models::GPTConfig::Style::GPT2;
    const int64_t T = int64_t(ids.size()), C = c.dim, H = c.heads, Hkv = c.kv_heads ? c.kv_heads : H, D = C / H;
    const int64_t F = c.mlp_hidden(), V = c.vocab_size;
    Vec emb = values(sd, gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight");
    Vec x(size_t(T * C));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < C; ++j) x[size_t(t * C + j)] = emb[size_t(ids[size_t(t)] * C + j)];
    if (gpt2) {
        Vec wpe = values(sd, "transformer.wpe.weight");
        for (int64_t i = 0; i < T * C; ++i) x[size_t(i)] += wpe[size_t(i)];
    }
    for (int64_t l = 0; l < c.layers; ++l) {
        std::string p = (gpt2 ? "transformer.h." : "model.layers.") + std::to_string(l) + ".";
        auto norm = [&](const std::string& n) {
            return gpt2 ? layer_norm_ref(x, T, C, values(sd, p + n + ".weight"), values(sd, p + n + ".bias"), c.norm_eps, false)
                        : layer_norm_ref(x, T, C, values(sd, p + n + ".weight"), {}, c.norm_eps, true);
        };
        Vec h = norm(gpt2 ? "ln_1" : "input_layernorm"), q, k, v, a;
        if (gpt2) {
            Vec qkv = project(h, T, values(sd, p + "attn.c_attn.weight"), C, 3 * C, true, values(sd, p + "attn.c_attn.bias"));
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < C; ++j) {
                    q.push_back(qkv[size_t(t * 3 * C + j)]);
                    k.push_back(qkv[size_t(t * 3 * C + C + j)]);
                    v.push_back(qkv[size_t(t * 3 * C + 2 * C + j)]);
                }
            a = project(attention_ref(q, k, v, T, H, H, D), T, values(sd, p + "attn.c_proj.weight"), C, C, true,
                        values(sd, p + "attn.c_proj.bias"));
        } else {
            q = project(h, T, values(sd, p + "self_attn.q_proj.weight"), C, H * D, false);
            k = project(h, T, values(sd, p + "self_attn.k_proj.weight"), C, Hkv * D, false);
            v = project(h, T, values(sd, p + "self_attn.v_proj.weight"), C, Hkv * D, false);
            rope_ref(q, T, H, D, c.rope_theta);
            rope_ref(k, T, Hkv, D, c.rope_theta);
            a = project(attention_ref(q, k, v, T, H, Hkv, D), T, values(sd, p + "self_attn.o_proj.weight"), C, C, false);
        }
        for (size_t i = 0; i < x.size(); ++i) x[i] += a[i];
        h = norm(gpt2 ? "ln_2" : "post_attention_layernorm");
        Vec m;
        if (gpt2) {
            Vec f = project(h, T, values(sd, p + "mlp.c_fc.weight"), C, F, true, values(sd, p + "mlp.c_fc.bias"));
            for (double& e : f) e = gelu_tanh_ref(e);
            m = project(f, T, values(sd, p + "mlp.c_proj.weight"), F, C, true, values(sd, p + "mlp.c_proj.bias"));
        } else {
            Vec g = project(h, T, values(sd, p + "mlp.gate_proj.weight"), C, F, false);
            Vec u = project(h, T, values(sd, p + "mlp.up_proj.weight"), C, F, false);
            for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
            m = project(g, T, values(sd, p + "mlp.down_proj.weight"), F, C, false);
        }
        for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
    }
    x = gpt2 ? layer_norm_ref(x, T, C, values(sd, "transformer.ln_f.weight"), values(sd, "transformer.ln_f.bias"), c.norm_eps, false)
             : layer_norm_ref(x, T, C, values(sd, "model.norm.weight"), {}, c.norm_eps, true);
    Vec head = c.tie_embeddings ? emb : values(sd, "lm_head.weight");
    return project(x, T, head, C, V, false);
}

// A checkpoint in Hugging Face's names and layouts with seeded random values (norm weights near 1).
nn::StateDict hf_file_tensors(const models::GPTConfig& c, uint64_t seed) {
    models::GPT shapes_from(c, 0);
    nn::StateDict sd = shapes_from.hf_state_dict();
    Generator gen(seed);
    for (auto& [name, t] : sd) {
        bool norm = name.find("ln_") != std::string::npos || name.find("layernorm") != std::string::npos ||
                    name.find("norm.weight") != std::string::npos;
        t = randn(t.shape(), gen, DType::F32) * (norm ? 0.1 : 0.3) + (norm && name.find("weight") != std::string::npos ? 1.0 : 0.0);
    }
    return sd;
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void check_loads_and_round_trips(const models::GPTConfig& c, const std::string& dir) {
    std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/in " + dir + "/out").c_str());
    nn::StateDict file = hf_file_tensors(c, 7);
    nn::save_safetensors(dir + "/in/model.safetensors", file, {{"format", "pt"}});
    std::ofstream(dir + "/in/config.json") << c.to_hf_json();

    auto model = models::GPT::from_pretrained(dir + "/in");
    std::vector<int64_t> ids = {3, 1, 4, 1, 5};
    Tensor logits = model->forward_ids(from_vector(ids, {1, 5}));
    Vec want = reference_logits(file, c, ids), got = logits.to(DType::F64).to_vector<double>();
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    CHECK(worst < 1e-4);

    model->save_pretrained(dir + "/out");
    CHECK(file_bytes(dir + "/in/model.safetensors") == file_bytes(dir + "/out/model.safetensors"));
}

}  // namespace

TEST_CASE("GPT: a GPT-2-named file loads, matches a loop-by-loop reference, and round-trips byte for byte") {
    models::GPTConfig c = models::GPTConfig::gpt2(11, 8, 8, 2, 2);
    check_loads_and_round_trips(c, "/tmp/ember_test_gpt2_file");
    // Conv1D weights are (in, out) in the file and (out, in) in memory.
    models::GPT m(c, 0);
    CHECK(m.state_dict().at("transformer.h.0.mlp.c_fc.weight").shape() == Shape{32, 8});
    CHECK(m.hf_state_dict().at("transformer.h.0.mlp.c_fc.weight").shape() == Shape{8, 32});
    CHECK(m.state_dict().count("lm_head.weight") == 0);  // tied to transformer.wte.weight
}

TEST_CASE("GPT: a LLaMA-named file (RoPE, RMSNorm, SwiGLU, grouped-query) loads and round-trips") {
    models::GPTConfig c = models::GPTConfig::llama(13, 8, 8, 2, 4, 2, 12);
    check_loads_and_round_trips(c, "/tmp/ember_test_llama_file");
    models::GPT m(c, 0);
    CHECK(m.state_dict().at("model.layers.1.self_attn.k_proj.weight").shape() == Shape{4, 8});
    CHECK(m.state_dict().count("lm_head.weight") == 1);
}

TEST_CASE("GPT: config.json round trip and clear errors") {
    models::GPTConfig c = models::GPTConfig::llama(100, 64, 32, 3, 4, 2, 80);
    c.rope_scaling = nn::RopeScaling::linear(4);
    models::GPTConfig back = models::GPTConfig::from_hf_json(c.to_hf_json());
    CHECK(back.style == c.style);
    CHECK(back.kv_heads == 2);
    CHECK(back.hidden == 80);
    CHECK(back.rope_scaling == c.rope_scaling);
    CHECK(contains(error_of([] { models::GPTConfig::from_hf_json(R"({"model_type": "bert"})"); }), "bert"));
    CHECK(contains(error_of([] { models::GPTConfig::from_hf_json(R"({"model_type": "gpt2"})"); }), "needs an integer"));
    models::GPT m(models::GPTConfig::gpt2(10, 4, 8, 1, 2), 0);
    CHECK(contains(error_of([&] { m.forward_ids(zeros({1, 5}, DType::I64)); }), "context of 4"));
}

TEST_CASE("GPT and ViT: float64 gradcheck through a whole tiny model") {
    for (auto style : {models::GPTConfig::Style::GPT2, models::GPTConfig::Style::Llama}) {
        models::GPTConfig c = style == models::GPTConfig::Style::GPT2 ? models::GPTConfig::gpt2(7, 6, 4, 1, 2)
                                                                      : models::GPTConfig::llama(7, 6, 4, 1, 2, 1, 6);
        models::GPT gpt(c, 3);
        gpt.to(DType::F64);
        Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
        std::vector<Tensor> params = gpt.parameters();
        expect_gradcheck([&](const std::vector<Tensor>&) { return gpt.forward_ids(ids); }, params);
    }
    models::ViTConfig vc;
    vc.image_size = 4, vc.patch = 2, vc.dim = 4, vc.layers = 1, vc.heads = 2, vc.num_labels = 3;
    models::ViT vit(vc, 5);
    vit.to(DType::F64);
    Generator gen(1);
    Tensor images = randn({2, 4, 4}, gen, DType::F64).set_requires_grad();
    std::vector<Tensor> inputs = vit.parameters();
    inputs.push_back(images);
    expect_gradcheck([&](const std::vector<Tensor>&) { return vit.forward(images); }, inputs);
}

TEST_CASE("ViT: Hugging Face names, patches in (C, P, P) order, parameter count") {
    models::ViTConfig c;
    c.image_size = 4, c.patch = 2, c.dim = 8, c.layers = 2, c.heads = 2, c.num_labels = 5;
    models::ViT vit(c, 0);
    nn::StateDict sd = vit.state_dict();
    for (const char* name : {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
                             "vit.embeddings.patch_embeddings.projection.weight",
                             "vit.encoder.layer.1.attention.attention.query.weight",
                             "vit.encoder.layer.0.attention.output.dense.bias", "vit.encoder.layer.0.intermediate.dense.weight",
                             "vit.encoder.layer.0.output.dense.weight", "vit.encoder.layer.0.layernorm_before.weight",
                             "vit.layernorm.bias", "classifier.weight"})
        CHECK_MESSAGE(sd.count(name) == 1, name);
    CHECK(sd.at("vit.embeddings.position_embeddings").shape() == Shape{1, 5, 8});
    // 4x4 image of 0..15: the first patch is rows 0-1, cols 0-1; the second cols 2-3.
    Tensor img = arange(0, 16).reshape({1, 1, 4, 4});
    CHECK(vit.patchify(img).select(1, 1).to_vector<float>() == std::vector<float>{2, 3, 6, 7});
    // embeddings 8 + 40 + (32 + 8); per layer: 4 * (64 + 8) + 2 * 16 + (8 * 32 + 32) + (32 * 8 + 8); head 45 + norm 16
    int64_t per_layer = 4 * 72 + 32 + 288 + 264;
    CHECK(vit.num_parameters() == 8 + 40 + 40 + 2 * per_layer + 16 + 45);
    CHECK(vit.forward(randn({3, 4, 4}, *vit.rng)).shape() == Shape{3, 5});
}

TEST_CASE("generate: greedy decoding gives the same tokens with and without the KV cache") {
    for (auto style : {models::GPTConfig::Style::GPT2, models::GPTConfig::Style::Llama}) {
        models::GPTConfig c = style == models::GPTConfig::Style::GPT2 ? models::GPTConfig::gpt2(17, 32, 16, 2, 2)
                                                                      : models::GPTConfig::llama(17, 32, 16, 2, 4, 2, 24);
        models::GPT gpt(c, 11);
        models::GenerateOptions o;
        o.max_new_tokens = 20, o.temperature = 0;
        o.use_cache = true;
        auto cached = models::generate(gpt, {1, 2, 3}, o);
        o.use_cache = false;
        auto plain = models::generate(gpt, {1, 2, 3}, o);
        CHECK(cached.size() == 20);
        CHECK(cached == plain);
        // sampling is a function of the seed too
        o.temperature = 1, o.top_k = 5, o.top_p = 0.9, o.seed = 4;
        auto s1 = models::generate(gpt, {1}, o);
        o.use_cache = true;
        CHECK(models::generate(gpt, {1}, o) == s1);
    }
}

TEST_CASE("sample_token: greedy, top-k and top-p keep the right candidates") {
    std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f};
    models::GenerateOptions o;
    o.temperature = 0;
    CHECK(models::sample_token(logits, o, 0.99) == 1);
    o.temperature = 1, o.top_k = 2;
    for (double u : {0.0, 0.3, 0.6, 0.999}) {
        int64_t t = models::sample_token(logits, o, u);
        CHECK((t == 1 || t == 3));
    }
    o.top_k = 0, o.top_p = 0.3;  // token 1 alone holds more than 30%
    CHECK(models::sample_token(logits, o, 0.999) == 1);
}

TEST_CASE("Trainer: 10 steps, a checkpoint, then 10 more equal 20 uninterrupted steps bit for bit") {
    auto run = [](int64_t stop_at, bool resume, const std::string& ckpt) {
        models::GPTConfig c = models::GPTConfig::gpt2(13, 8, 8, 2, 2);
        c.dropout = 0.1;  // the dropout generator's counter must resume too
        models::GPT model(c, 5);
        nn::TrainerOptions o;
        o.steps = 20, o.stop_at = stop_at, o.resume = resume, o.checkpoint = ckpt;
        o.lr = 1e-2, o.warmup = 3, o.accumulate = 2;
        nn::Trainer trainer(model, o, {model.rng});
        trainer.run([&](int64_t step, int64_t micro) {
            Generator g(step * 10 + micro);
            Tensor ids = randint(0, 13, {2, 8}, g);
            Tensor logits = model.forward_ids(ids.narrow(1, 0, 7));
            return nn::MicroBatch{cross_entropy(logits, ids.narrow(1, 1, 7)), 14};
        });
        return model.state_dict();
    };
    std::remove("/tmp/ember_resume_a.safetensors");
    nn::StateDict straight = run(0, false, "/tmp/ember_resume_a.safetensors");
    std::remove("/tmp/ember_resume_b.safetensors");
    run(10, false, "/tmp/ember_resume_b.safetensors");
    nn::StateDict resumed = run(0, true, "/tmp/ember_resume_b.safetensors");
    for (const auto& [name, t] : straight) CHECK_MESSAGE(max_abs_diff(t, resumed.at(name)) == 0, name);
    // and the run really moved the weights
    models::GPT fresh(models::GPTConfig::gpt2(13, 8, 8, 2, 2), 5);
    CHECK(max_abs_diff(fresh.state_dict().at("transformer.wte.weight"), straight.at("transformer.wte.weight")) > 1e-3);
}

TEST_CASE("generate: runs past the context with a sliding window, with and without the cache") {
    models::GPT gpt(models::GPTConfig::gpt2(11, 8, 8, 1, 2), 2);
    models::GenerateOptions o;
    o.max_new_tokens = 30, o.temperature = 0;
    for (bool cache : {true, false}) {
        o.use_cache = cache;
        auto out = models::generate(gpt, {1, 2, 3}, o);
        CHECK(out.size() == 30);
        for (int64_t t : out) CHECK((t >= 0 && t < 11));
    }
}

TEST_CASE("GPT: prompt embeddings come first (with their padding), and layer prefixes are attended") {
    models::GPT gpt(models::GPTConfig::gpt2(11, 8, 8, 2, 2), 4);
    Tensor ids = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
    Generator gen(3);
    models::GPTInputs in;
    in.prefix_embeds = randn({1, 2, 8}, gen);
    in.key_padding = ones({2, 3}, DType::I64);
    Tensor with_prompt = gpt.forward_ids(ids, in);
    CHECK(with_prompt.shape() == Shape{2, 5, 11});
    // The prompt changes what the tokens see.
    CHECK(max_abs_diff(with_prompt.narrow(1, 2, 3), gpt.forward_ids(ids)) > 1e-4);
    models::GPTInputs pre;
    for (size_t l = 0; l < gpt.num_blocks(); ++l)
        pre.layer_prefixes.push_back({randn({1, 2, 3, 4}, gen), randn({1, 2, 3, 4}, gen)});
    Tensor with_prefix = gpt.forward_ids(ids, pre);
    CHECK(with_prefix.shape() == Shape{2, 3, 11});
    CHECK(max_abs_diff(with_prefix, gpt.forward_ids(ids)) > 1e-4);
}
