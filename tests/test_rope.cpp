// RoPE's scalings for a longer window (nn/rope.h): linear position interpolation and YaRN's
// "NTK-by-parts", whose per-pair multipliers are pinned here at values worked out by hand from
// the YaRN paper's ramp, as HF's _compute_yarn_parameters bounds it.
#include <cmath>

#include "models/context.h"
#include "models/gpt.h"
#include "nn/rope.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;
using Inputs = const std::vector<Tensor>&;

TEST_CASE("RopeScaling: YaRN's per-pair multipliers and attention factor") {
    // Head size 32, theta 1e4, trained on 256, factor 4. Pair j turns 256 * 1e4^(-j/16) / (2 pi)
    // times in 256 positions: 32 turns at j = 0.42 and 1 turn at j = 6.44, so the ramp runs from
    // floor(0.42) = 0 to ceil(6.44) = 7: m_j = (j/7)/4 + (1 - j/7) up to 7, then 1/4.
    nn::RopeScaling y = nn::RopeScaling::yarn(4, 256);
    std::vector<double> m = y.frequency_multipliers(32, 1e4);
    REQUIRE(m.size() == 16);
    CHECK(m[0] == 1);  // the fastest pair keeps its angle: neighbours stay one radian apart
    CHECK(m[3] == doctest::Approx(3.0 / 28 + 4.0 / 7).epsilon(1e-15));
    for (int j = 7; j < 16; ++j) CHECK(m[size_t(j)] == doctest::Approx(0.25).epsilon(1e-15));
    CHECK(y.cos_sin_factor() == doctest::Approx(0.1 * std::log(4.0) + 1));
    // LLaMA-2's head of 128 on 4096 positions: the ramp runs over pairs 20 (20.94 floored) to 46
    // (45.02 rounded up), as the YaRN paper's Llama 2 setting has it.
    nn::RopeScaling l2 = nn::RopeScaling::yarn(8, 4096);
    std::vector<double> m2 = l2.frequency_multipliers(128, 1e4);
    CHECK(m2[19] == 1);
    CHECK(m2[20] == 1);
    CHECK(m2[21] < 1);
    CHECK(m2[33] == doctest::Approx(0.5 / 8 + 0.5).epsilon(1e-15));
    CHECK(m2[46] == doctest::Approx(1.0 / 8).epsilon(1e-15));
    CHECK(m2[45] > 1.0 / 8);
    // an explicit attention factor replaces 0.1 ln(factor) + 1; linear and none have none
    l2.attention_factor = 1.5;
    CHECK(l2.cos_sin_factor() == 1.5);
    CHECK(nn::RopeScaling::linear(4).cos_sin_factor() == 1);
    CHECK(nn::RopeScaling::linear(4).frequency_multipliers(8, 1e4) == std::vector<double>(4, 0.25));
}

TEST_CASE("apply_rope with YaRN: the fast pair keeps its angles, the slow ones are linear's; gradcheck") {
    Tensor x = leaf({1, 2, 6, 32}, 4);
    nn::RopeScaling y = nn::RopeScaling::yarn(4, 256);
    nn::RopeTables yt = nn::rope_tables(6, 32, 100, 1e4, y, DType::F64, Device::cpu());
    nn::RopeTables none = nn::rope_tables(6, 32, 100, 1e4, {}, DType::F64, Device::cpu());
    nn::RopeTables lin = nn::rope_tables(6, 32, 100, 1e4, nn::RopeScaling::linear(4), DType::F64, Device::cpu());
    const double c = y.cos_sin_factor();
    for (int64_t dim : {0, 16}) {  // pair 0: dims 0 and 16
        CHECK(max_abs_diff(yt.cos.slice(1, dim, dim + 1), none.cos.slice(1, dim, dim + 1) * c) < 1e-12);
        CHECK(max_abs_diff(yt.sin.slice(1, dim, dim + 1), none.sin.slice(1, dim, dim + 1) * c) < 1e-12);
    }
    for (int64_t dim : {7, 15, 23, 31}) {  // pairs 7 and 15
        CHECK(max_abs_diff(yt.cos.slice(1, dim, dim + 1), lin.cos.slice(1, dim, dim + 1) * c) < 1e-12);
        CHECK(max_abs_diff(yt.sin.slice(1, dim, dim + 1), lin.sin.slice(1, dim, dim + 1) * c) < 1e-12);
    }
    expect_gradcheck([&](Inputs in) { return nn::apply_rope(in[0], 3, 1e4, y); }, {x});
}

TEST_CASE("RopeScaling: config.json round trip, HF's fallbacks, and refusals") {
    models::GPTConfig c = models::GPTConfig::llama(50, 64, 32, 1, 2, 2, 48);
    c.rope_scaling = nn::RopeScaling::yarn(4, 16);
    c.rope_scaling.beta_fast = 16;
    c.rope_scaling.attention_factor = 1.25;
    CHECK(models::GPTConfig::from_hf_json(c.to_hf_json()).rope_scaling == c.rope_scaling);
    c.rope_scaling.attention_factor = 0;  // the default is not written, and reads back as the default
    CHECK(models::GPTConfig::from_hf_json(c.to_hf_json()).rope_scaling == c.rope_scaling);

    const std::string head = R"({"model_type": "llama", "vocab_size": 50, "max_position_embeddings": 64,
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48, "rope_scaling": )";
    // the older key "type"; without original_max_position_embeddings HF takes max_position_embeddings
    nn::RopeScaling r = models::GPTConfig::from_hf_json(head + R"({"type": "yarn", "factor": 2.0}})").rope_scaling;
    CHECK(r == nn::RopeScaling::yarn(2, 64));
    CHECK(models::GPTConfig::from_hf_json(head + R"({"rope_type": "default"}})").rope_scaling == nn::RopeScaling{});
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(head + R"({"rope_type": "dynamic", "factor": 2.0}})"); }),
                   "rope_scaling type \"dynamic\" is not supported"));
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(head + R"({"rope_type": "yarn", "factor": 2.0, "beta_fast": 0.5}})"); }),
                   "0 < beta_slow < beta_fast"));
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(head + R"({"rope_type": "linear", "factor": -2.0}})"); }),
                   "factor must be positive"));
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(head + R"({"rope_type": "yarn", "factor": 2.0, "mscale": 1.0}})"); }),
                   "\"mscale\" (DeepSeek's attention factor) is not supported"));
}

TEST_CASE("interpolate_positions: YaRN keeps the first trained context, and the two ways do not mix") {
    models::GPTConfig c = models::GPTConfig::llama(37, 16, 16, 2, 2, 2, 24);
    auto gpt = std::make_shared<models::GPT>(c, 3);
    CHECK(models::interpolate_positions(*gpt, 40, nn::RopeScaling::Type::Yarn) == 3);
    CHECK(gpt->config.context == 40);
    CHECK(gpt->config.rope_scaling == nn::RopeScaling::yarn(3, 16));
    for (size_t i = 0; i < gpt->num_blocks(); ++i) CHECK(gpt->block(i).attn->config.rope_scaling == gpt->config.rope_scaling);
    CHECK(models::interpolate_positions(*gpt, 80, nn::RopeScaling::Type::Yarn) == 2);
    CHECK(gpt->config.rope_scaling == nn::RopeScaling::yarn(6, 16));
    CHECK(contains(error_of([&] { models::interpolate_positions(*gpt, 160); }), "already YaRN-scaled"));
    gpt->eval();
    Generator gen(5);
    CHECK(gpt->forward_ids(randint(0, 37, {1, 80}, gen)).size(1) == 80);
}
