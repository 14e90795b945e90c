// Attention: scaled_dot_product_attention against loops, float64 gradchecks (causal, padding,
// prefix keys, grouped-query heads, RoPE), RoPE offsets, KV-cache decoding against the full
// causal forward, and the transformer block's order and adapter sites.
#include <cmath>

#include "nn/attention.h"
#include "nn/transformer.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;
using Inputs = const std::vector<Tensor>&;

namespace {

// Attention by loops over plain vectors: q (B,H,Tq,D), k/v (B,Hkv,Tk,D), pad (B,Tk) or empty.
std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                  const std::vector<double>& pad) {
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2), G = H / Hkv;
    auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
    std::vector<double> out(size_t(B * H * Tq * D));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < Tq; ++i) {
                const int64_t kh = h / G;
                std::vector<double> s(static_cast<size_t>(Tk));
                std::vector<bool> ok(static_cast<size_t>(Tk));
                double mx = -1e300;
                for (int64_t j = 0; j < Tk; ++j) {
                    ok[size_t(j)] = !(causal && j > i + Tk - Tq) && (pad.empty() || pad[size_t(b * Tk + j)] != 0);
                    double d = 0;
                    for (int64_t c = 0; c < D; ++c)
                        d += qv[size_t(((b * H + h) * Tq + i) * D + c)] * kv[size_t(((b * Hkv + kh) * Tk + j) * D + c)];
                    s[size_t(j)] = d / std::sqrt(double(D));
                    if (ok[size_t(j)]) mx = std::max(mx, s[size_t(j)]);
                }
                double z = 0;
                for (int64_t j = 0; j < Tk; ++j) z += ok[size_t(j)] ? std::exp(s[size_t(j)] - mx) : 0;
                for (int64_t c = 0; c < D; ++c) {
                    double acc = 0;
                    for (int64_t j = 0; j < Tk; ++j)
                        if (ok[size_t(j)])
                            acc += std::exp(s[size_t(j)] - mx) / z * vv[size_t(((b * Hkv + kh) * Tk + j) * D + c)];
                    out[size_t(((b * H + h) * Tq + i) * D + c)] = acc;
                }
            }
    return out;
}

// Returns 0 * x: a site that cancels its branch, to check where the block applies it.
struct Zero : nn::Module {
    std::string type_name() const override { return "Zero"; }
    Tensor forward(const Tensor& x) override { return x * 0.0; }
};

nn::BlockConfig llama_block(int64_t dim, int64_t heads, int64_t kv_heads) {
    nn::BlockConfig c;
    c.norm = nn::NormKind::RMSNorm;
    c.norm_eps = 1e-6;
    c.attn.dim = dim;
    c.attn.heads = heads;
    c.attn.kv_heads = kv_heads;
    c.attn.fused_qkv = false;
    c.attn.bias = false;
    c.attn.rope = true;
    c.attn.names.out = "o_proj";
    c.mlp = nn::MlpKind::SwiGLU;
    c.hidden = 2 * dim;
    c.mlp_bias = false;
    c.names = {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"};
    return c;
}

nn::BlockConfig gpt2_block(int64_t dim, int64_t heads) {
    nn::BlockConfig c;
    c.attn.dim = dim;
    c.attn.heads = heads;
    c.mlp_names = {"c_fc", "c_proj"};
    return c;
}

}  // namespace

TEST_CASE("attention: matches loops with causal, padding, longer keys and grouped heads") {
    Generator gen(1);
    Tensor q = randn({2, 4, 3, 4}, gen, DType::F64), k = randn({2, 2, 5, 4}, gen, DType::F64),
           v = randn({2, 2, 5, 4}, gen, DType::F64);
    std::vector<double> pad = {1, 1, 1, 1, 1, 1, 0, 1, 1, 0};
    for (bool causal : {false, true})
        for (bool padded : {false, true}) {
            CAPTURE(causal);
            CAPTURE(padded);
            nn::AttentionMask mask{causal, padded ? from_vector(pad, {2, 5}) : Tensor()};
            Tensor out = nn::scaled_dot_product_attention(q, k, v, mask, 0, nullptr, false);
            CHECK(out.shape() == Shape{2, 4, 3, 4});
            auto ref = attention_ref(q, k, v, causal, padded ? pad : std::vector<double>{});
            auto got = out.to_vector<double>();
            double m = 0;
            for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::abs(ref[i] - got[i]));
            CHECK(m < 1e-12);
        }
    std::string e = error_of([&] {
        Tensor k3 = randn({2, 3, 5, 4}, gen, DType::F64);
        nn::scaled_dot_product_attention(q, k3, k3, {}, 0, nullptr, false);
    });
    CHECK(contains(e, "shared evenly"));
}

TEST_CASE("attention: float64 gradcheck (causal, padding, prefix-length keys, GQA)") {
    Tensor q = leaf({2, 4, 3, 4}, 1), k = leaf({2, 2, 5, 4}, 2), v = leaf({2, 2, 5, 4}, 3);
    Tensor pad = tensor({1, 1, 1, 1, 1, 1, 0, 1, 1, 0}, {2, 5}, DType::F64);
    for (bool causal : {false, true}) {
        CAPTURE(causal);
        expect_gradcheck([&](Inputs x) {
            return nn::scaled_dot_product_attention(x[0], x[1], x[2], {causal, pad}, 0, nullptr, false);
        }, {q, k, v});
    }
    Tensor q1 = leaf({1, 2, 4, 3}, 4), k1 = leaf({1, 2, 4, 3}, 5), v1 = leaf({1, 2, 4, 3}, 6);
    expect_gradcheck([&](Inputs x) {
        return nn::scaled_dot_product_attention(x[0], x[1], x[2], {true, Tensor()}, 0, nullptr, false);
    }, {q1, k1, v1});
}

TEST_CASE("attention: dropout on the probabilities is reproducible and off in eval") {
    Generator seed(2);
    Tensor q = randn({1, 2, 4, 4}, seed), k = randn({1, 2, 4, 4}, seed), v = randn({1, 2, 4, 4}, seed);
    Tensor plain = nn::scaled_dot_product_attention(q, k, v, {}, 0.5, nullptr, false);
    Generator g1(7), g2(7);
    Tensor a = nn::scaled_dot_product_attention(q, k, v, {}, 0.5, &g1, true);
    Tensor b = nn::scaled_dot_product_attention(q, k, v, {}, 0.5, &g2, true);
    CHECK(max_abs_diff(a, b) == 0);
    CHECK(max_abs_diff(a, plain) > 1e-3);
    CHECK(contains(error_of([&] { nn::scaled_dot_product_attention(q, k, v, {}, 0.5, nullptr, true); }),
                   "generator"));
}

TEST_CASE("apply_rope: gradcheck, offset equals the full sequence, relative positions") {
    Tensor x = leaf({1, 2, 5, 6}, 3);
    expect_gradcheck([](Inputs in) { return nn::apply_rope(in[0], 3, 10000, nn::RopeScaling::linear(2)); }, {x});

    // rope(x)[t0:t0+n] == rope(x[t0:t0+n], offset t0)
    Tensor full = nn::apply_rope(x, 0, 500, nn::RopeScaling::linear(1.5));
    Tensor part = nn::apply_rope(x.slice(2, 2, 5), 2, 500, nn::RopeScaling::linear(1.5));
    CHECK(max_abs_diff(full.slice(2, 2, 5), part) < 1e-14);
    // scale s: position p behaves like position p / s without scaling
    Tensor scaled = nn::apply_rope(x.slice(2, 0, 1), 4, 500, nn::RopeScaling::linear(2));
    Tensor unscaled = nn::apply_rope(x.slice(2, 0, 1), 2, 500);
    CHECK(max_abs_diff(scaled, unscaled) < 1e-14);
    // the same vector at positions (m, n) and (m + 5, n + 5): equal dot products
    Tensor a = x.slice(2, 0, 1), b = x.slice(2, 1, 2);
    auto dot = [](const Tensor& u, const Tensor& w) { return sum(u * w).item<double>(); };
    double d1 = dot(nn::apply_rope(a, 1, 100), nn::apply_rope(b, 3, 100));
    double d2 = dot(nn::apply_rope(a, 6, 100), nn::apply_rope(b, 8, 100));
    CHECK(std::abs(d1 - d2) < 1e-12);
    // position 0 is the identity, and rotate-half pairs dim j with j + D/2
    CHECK(max_abs_diff(nn::apply_rope(a, 0, 100), a) < 1e-15);
    Tensor e0 = zeros({1, 1, 1, 4}, DType::F64);
    raw::fill_(raw::slice(e0, 3, 0, 1), 1.0);
    auto r = nn::apply_rope(e0, 1, 10000).to_vector<double>();  // angle 1 for pair (0, 2)
    CHECK(r[0] == doctest::Approx(std::cos(1.0)));
    CHECK(r[2] == doctest::Approx(std::sin(1.0)));
    CHECK(r[1] == 0);
}

TEST_CASE("MultiHeadAttention: float64 gradcheck with RoPE, GQA, padding and prefix keys") {
    Generator gen(4);
    nn::AttentionConfig cfg;
    cfg.dim = 8, cfg.heads = 4, cfg.kv_heads = 2, cfg.fused_qkv = false, cfg.rope = true;
    auto mha = std::make_shared<nn::MultiHeadAttention>(cfg, gen);
    mha->to(DType::F64);
    Tensor x = leaf({2, 3, 8}, 5), pk = leaf({1, 2, 2, 2}, 6), pv = leaf({1, 2, 2, 2}, 7);
    Tensor pad = tensor({1, 1, 1, 1, 0, 1}, {2, 3}, DType::F64);
    std::vector<Tensor> inputs = {x, pk, pv};
    for (Tensor& p : mha->parameters()) inputs.push_back(p);
    expect_gradcheck([&](Inputs in) {
        nn::AttentionInputs ai;
        ai.key_padding = pad;
        ai.prefix_k = in[1];
        ai.prefix_v = in[2];
        ai.position_offset = 2;
        return mha->forward(in[0], ai);
    }, inputs);
}

TEST_CASE("MultiHeadAttention: prefix keys are always attended; padding hides keys") {
    Generator gen(5);
    nn::AttentionConfig cfg;
    cfg.dim = 8, cfg.heads = 2, cfg.causal = false;
    auto mha = std::make_shared<nn::MultiHeadAttention>(cfg, gen);
    Tensor x = randn({1, 4, 8}, gen);
    // Right padding: the real tokens' outputs equal a run over the real tokens alone.
    nn::AttentionInputs padded;
    padded.key_padding = tensor({1, 1, 1, 0}, {1, 4});
    Tensor y_pad = mha->forward(x, padded);
    Tensor y_short = mha->forward(x.slice(1, 0, 3));
    CHECK(max_abs_diff(y_pad.slice(1, 0, 3), y_short) < 1e-5);
    // Prefix keys change every output, even with all current tokens padded but one.
    nn::AttentionInputs with_prefix = padded;
    with_prefix.prefix_k = randn({1, 2, 3, 4}, gen);
    with_prefix.prefix_v = randn({1, 2, 3, 4}, gen);
    Tensor y_pre = mha->forward(x, with_prefix);
    CHECK(max_abs_diff(y_pre.slice(1, 0, 3), y_short) > 1e-3);
    CHECK(contains(error_of([&] {
        nn::AttentionInputs bad;
        bad.prefix_k = randn({1, 3, 3, 4}, gen);
        bad.prefix_v = bad.prefix_k;
        mha->forward(x, bad);
    }), "prefix_k"));
}

TEST_CASE("KV cache: step-by-step decoding equals the full causal forward") {
    Generator gen(6);
    for (bool llama : {false, true}) {
        CAPTURE(llama);
        nn::BlockConfig cfg = llama ? llama_block(8, 4, 2) : gpt2_block(8, 2);
        auto block = std::make_shared<nn::TransformerBlock>(cfg, gen);
        block->eval();
        Tensor x = randn({2, 5, 8}, gen);
        Tensor prefix_k = randn({1, block->attn->kv_heads, 2, block->attn->head_dim}, gen);
        Tensor prefix_v = randn(prefix_k.shape(), gen);
        for (bool with_prefix : {false, true}) {
            CAPTURE(with_prefix);
            NoGradGuard no_grad;
            nn::AttentionInputs full_in;
            if (with_prefix) full_in.prefix_k = prefix_k, full_in.prefix_v = prefix_v;
            Tensor full = block->forward(x, full_in);
            nn::KVCache cache;
            // a prompt of 2 tokens, then one token at a time
            std::vector<Tensor> steps;
            for (int64_t t = 0; t < 5; t += (t == 0 ? 2 : 1)) {
                int64_t n = t == 0 ? 2 : 1;
                nn::AttentionInputs in = full_in;
                in.cache = &cache;
                in.position_offset = cache.length();
                steps.push_back(block->forward(x.slice(1, t, t + n), in));
            }
            CHECK(cache.length() == 5);
            CHECK(max_abs_diff(cat(steps, 1), full) < 1e-5);
        }
    }
}

TEST_CASE("TransformerBlock: names, null adapter sites, and the documented order") {
    Generator gen(7);
    auto gpt = std::make_shared<nn::TransformerBlock>(gpt2_block(8, 2), gen);
    std::vector<std::string> names;
    for (auto& [n, p] : gpt->named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{
                       "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                       "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                       "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"});
    auto llama = std::make_shared<nn::TransformerBlock>(llama_block(8, 4, 2), gen);
    names.clear();
    for (auto& [n, p] : llama->named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{
                       "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                       "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                       "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                       "mlp.up_proj.weight", "mlp.down_proj.weight"});
    CHECK(llama->get_submodule("self_attn.k_proj").get()->named_parameters()[0].second.shape() ==
          Shape{4, 8});  // 2 kv heads of size 2

    // Order: a Zero at adapter_attn_post removes the attention branch entirely, so the block is
    // x + mlp(ln_2(x)); a Zero at adapter_mlp_post then leaves x + parallel(ln_2(x)).
    Tensor x = randn({1, 3, 8}, gen);
    gpt->replace_submodule("adapter_attn_post", std::make_shared<Zero>());
    Tensor expect = x + gpt->mlp->forward(gpt->ln2->forward(x));
    CHECK(max_abs_diff(gpt->forward(x), expect) < 1e-6);
    auto parallel = std::make_shared<nn::Linear>(8, 8, false, gen);
    gpt->replace_submodule("adapter_mlp_post", std::make_shared<Zero>());
    gpt->replace_submodule("adapter_mlp_parallel", parallel);
    CHECK(max_abs_diff(gpt->forward(x), x + parallel->forward(gpt->ln2->forward(x))) < 1e-6);
    // the typed attention slot refuses a plain module
    CHECK(contains(error_of([&] { gpt->replace_submodule("attn", std::make_shared<Zero>()); }),
                   "MultiHeadAttention"));
}

TEST_CASE("TransformerBlock: float64 gradcheck of a whole block with adapters at every site") {
    Generator gen(8);
    for (bool llama : {false, true}) {
        CAPTURE(llama);
        nn::BlockConfig cfg = llama ? llama_block(4, 2, 1) : gpt2_block(4, 2);
        cfg.hidden = 6;
        auto block = std::make_shared<nn::TransformerBlock>(cfg, gen);
        for (const char* site : {"adapter_attn_pre", "adapter_attn_post", "adapter_mlp_pre",
                                 "adapter_mlp_post", "adapter_mlp_parallel"})
            block->replace_submodule(site, std::make_shared<nn::Linear>(4, 4, true, gen));
        block->to(DType::F64);
        Tensor x = leaf({1, 3, 4}, 9);
        std::vector<Tensor> inputs = {x};
        for (Tensor& p : block->parameters()) inputs.push_back(p);
        expect_gradcheck([&](Inputs in) { return block->forward(in[0]); }, inputs);
    }
}

TEST_CASE("attention: a query with every key masked gives finite values, not NaN") {
    Generator gen(9);
    Tensor q = randn({2, 1, 3, 4}, gen), k = randn({2, 1, 3, 4}, gen), v = randn({2, 1, 3, 4}, gen);
    // left padding with a causal mask: row 1's first query sees only a padded key
    Tensor pad = tensor({1, 1, 1, 0, 1, 1}, {2, 3});
    Tensor out = nn::scaled_dot_product_attention(q, k, v, {true, pad}, 0, nullptr, false);
    for (double x : out.to_vector<double>()) CHECK(std::isfinite(x));
    // the real queries of row 1 match a run without the padded key
    Tensor short_out = nn::scaled_dot_product_attention(q.slice(0, 1, 2).slice(2, 1, 3),
                                                        k.slice(0, 1, 2).slice(2, 1, 3),
                                                        v.slice(0, 1, 2).slice(2, 1, 3),
                                                        {true, Tensor()}, 0, nullptr, false);
    CHECK(max_abs_diff(out.slice(0, 1, 2).slice(2, 1, 3), short_out) < 1e-6);
}

TEST_CASE("TransformerBlock: residual dropout in training only") {
    Generator gen(10);
    nn::BlockConfig cfg = gpt2_block(8, 2);
    cfg.dropout = 0.3;
    CHECK(contains(error_of([&] { nn::TransformerBlock(cfg, gen); }), "rng"));
    auto block = std::make_shared<nn::TransformerBlock>(cfg, gen, std::make_shared<Generator>(11));
    Tensor x = randn({1, 4, 8}, gen);
    Tensor a = block->forward(x), b = block->forward(x);
    CHECK(max_abs_diff(a, b) > 1e-4);  // fresh masks each call
    block->eval();
    CHECK(max_abs_diff(block->forward(x), block->forward(x)) == 0);
    // the seed-only constructor is deterministic
    cfg.dropout = 0;
    cfg.init_seed = 42;
    nn::TransformerBlock p(cfg), r(cfg);
    CHECK(max_abs_diff(p.forward(x), r.forward(x)) == 0);
}
