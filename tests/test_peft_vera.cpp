// VeRA: shared frozen projections sized to the largest target and sliced per layer, seeded by
// projection_prng_key, lambda_d = d_initial and lambda_b = 0 at init (a no-op), a float64
// gradcheck, merges, a frozen base, save_projection on and off.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "peft/vera.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::PeftModel;
using peft::VeraConfig;

namespace {

VeraConfig vera(int64_t r, peft::ModuleSelector targets) {
    VeraConfig c;
    c.r = r;
    c.target_modules = std::move(targets);
    return c;
}

void randomize_lambda_b(nn::Module& m, uint64_t seed = 6) {
    Generator gen(seed);
    NoGradGuard g;
    for (auto& [n, t] : m.named_parameters())
        if (n.find("vera_lambda_b") != std::string::npos) raw::copy_(t, randn(t.shape(), gen, t.dtype()));
}

std::string tmp_dir(const std::string& name) {
    auto p = std::filesystem::temp_directory_path() / ("ember_peft_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    return p.string();
}

}  // namespace

// VeRA's shared projections, as the first VeRA layer holds them (every layer holds the same two).
static std::map<std::string, Tensor> shared_of(const peft::PeftModel& pm, const std::string& adapter = "default") {
    for (auto& [key, tl] : pm.tuner_layers())
        if (auto v = std::dynamic_pointer_cast<peft::VeraLayer>(tl))
            return {{"vera_A", v->vera_A->get(adapter)}, {"vera_B", v->vera_B->get(adapter)}};
    return {};
}

TEST_CASE("VeRA: shared projections at the largest shapes, sliced per layer; init d = 0.1, b = 0") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    PeftModel pm(gpt, vera(8, {"c_attn", "mlp.c_proj"}));  // in 16 / 64, out 48 / 16
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    const auto shared = shared_of(pm);
    Tensor A = shared.at("vera_A"), B = shared.at("vera_B");
    CHECK(A.shape() == Shape{8, 64});  // (r, in_max)
    CHECK(B.shape() == Shape{48, 8});  // (out_max, r)
    CHECK_FALSE(A.requires_grad());
    // kaiming-uniform, a = 0: bounds sqrt(6 / 64) and sqrt(6 / 8), and the range is used.
    double ta = 0, tb = 0;
    for (double v : A.to_vector<double>()) ta = std::max(ta, std::abs(v));
    for (double v : B.to_vector<double>()) tb = std::max(tb, std::abs(v));
    CHECK(ta <= std::sqrt(6.0 / 64));
    CHECK(ta > 0.8 * std::sqrt(6.0 / 64));
    CHECK(tb <= std::sqrt(6.0 / 8));
    CHECK(tb > 0.5 * std::sqrt(6.0 / 8));

    auto layer = std::dynamic_pointer_cast<peft::VeraLayer>(pm.tuner_layer("transformer.h.0.attn.c_attn"));
    CHECK(layer->sliced_A("default").shape() == Shape{8, 16});
    CHECK(layer->sliced_B("default").shape() == Shape{48, 8});
    CHECK(layer->sliced_A("default").same_storage(A));  // a view, not a copy
    for (double v : layer->vera_lambda_d->get("default").to_vector<double>()) CHECK(v == doctest::Approx(0.1));
    for (double v : layer->vera_lambda_b->get("default").to_vector<double>()) CHECK(v == 0);
    CHECK(pm.count_parameters().trainable == 2 * ((48 + 8) + (16 + 8)));  // sum over layers of out + r

    // The same key gives the same projections; another key others.
    PeftModel same(tiny_gpt2(), vera(8, {"c_attn", "mlp.c_proj"}));
    CHECK(bit_equal(shared_of(same).at("vera_A"), A));
    VeraConfig k = vera(8, {"c_attn", "mlp.c_proj"});
    k.projection_prng_key = 7;
    PeftModel other(tiny_gpt2(), k);
    CHECK_FALSE(bit_equal(shared_of(other).at("vera_A"), A));
}

TEST_CASE("VeRA: the layer computes W0 x + b + lambda_b * B_s (lambda_d * A_s x)") {
    auto gpt = tiny_gpt2(1);
    PeftModel pm(gpt, vera(4, {"mlp.c_proj", "c_fc"}));
    randomize_lambda_b(*gpt);
    auto layer = std::dynamic_pointer_cast<peft::VeraLayer>(pm.tuner_layer("transformer.h.0.mlp.c_fc"));
    Generator gen(2);
    Tensor x = randn({3, 16}, gen);
    const auto sh = shared_of(pm);
    Tensor A_s = sh.at("vera_A").slice(1, 0, 16), B_s = sh.at("vera_B").slice(0, 0, 64);
    Tensor d = layer->vera_lambda_d->get("default"), b = layer->vera_lambda_b->get("default");
    Tensor expected = layer->base_layer->forward(x) + matmul(matmul(x, A_s.t()) * d, B_s.t()) * b;
    CHECK(all_close(layer->forward(x), expected, 1e-5, 1e-6));
}

TEST_CASE("VeRA: float64 gradcheck w.r.t. lambda_d and lambda_b") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    PeftModel pm(gpt, vera(4, {"c_attn", "c_fc"}));
    randomize_lambda_b(*gpt);
    std::vector<Tensor> params = trainable(*gpt);
    CHECK(params.size() == 4);
    Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
    expect_gradcheck([&](const std::vector<Tensor>&) { return gpt->forward_ids(ids); }, params);
}

TEST_CASE("VeRA: merged equals unmerged and unmerge is exact; base and projections stay frozen") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, vera(8, {"c_attn", "c_proj"}));
    Tensor A0 = raw::clone(shared_of(pm).at("vera_A"));
    auto before = snapshot(*gpt);
    train_gpt_steps(*gpt, 10);
    gpt->eval();
    for (auto& [n, t] : gpt->named_parameters()) {
        if (n.find("vera_lambda") != std::string::npos) continue;
        CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
        CHECK(!t.grad().defined());
    }
    CHECK(bit_equal(shared_of(pm).at("vera_A"), A0));
    CHECK_FALSE(shared_of(pm).at("vera_A").grad().defined());
    auto trained = snapshot(*gpt);
    Tensor out = gpt->forward_ids(ids);
    CHECK(max_abs_diff(out, gpt->forward_ids(ids)) == 0);
    pm.merge_adapter();
    CHECK(all_close(gpt->forward_ids(ids), out, 1e-5, 1e-6));
    pm.unmerge_adapter();
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, trained.at(n)), n);
}

TEST_CASE("VeRA: files with and without the projections (save_projection)") {
    for (bool save_projection : {true, false}) {
        auto gpt = tiny_gpt2();
        Tensor ids = tiny_ids();
        VeraConfig c = vera(8, {"c_attn"});
        c.save_projection = save_projection;
        c.projection_prng_key = 3;
        PeftModel pm(gpt, c);
        randomize_lambda_b(*gpt);
        Tensor out = gpt->forward_ids(ids);
        std::string dir = tmp_dir("vera");
        pm.save_pretrained(dir);
        std::ifstream jf(dir + "/adapter_config.json");
        nlohmann::json j = nlohmann::json::parse(jf);
        CHECK(j["peft_type"] == "VERA");
        CHECK(j["r"] == 8);
        CHECK(j["projection_prng_key"] == 3);
        CHECK(j["save_projection"] == save_projection);
        CHECK(j["d_initial"] == 0.1);
        CHECK(j["vera_dropout"] == 0.0);
        nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
        CHECK(f.tensors.count("base_model.model.transformer.h.0.attn.c_attn.vera_lambda_b"));
        CHECK(f.tensors.at("base_model.model.transformer.h.0.attn.c_attn.vera_lambda_d").shape() == Shape{8});
        CHECK(f.tensors.count("base_model.vera_A") == (save_projection ? 1u : 0u));
        CHECK(f.tensors.count("base_model.vera_B") == (save_projection ? 1u : 0u));
        CHECK(f.tensors.size() == (save_projection ? 6u : 4u));
        auto fresh = tiny_gpt2();
        auto loaded = PeftModel::from_pretrained(fresh, dir);  // regenerates from the key, or reads
        CHECK(bit_equal(fresh->forward_ids(ids), out));
        if (save_projection) {
            // Projections in the file win over the seed (e.g. a peft file made by torch's RNG).
            NoGradGuard g;
            Tensor A = f.tensors.at("base_model.vera_A");
            raw::copy_(A, raw::mul_scalar(A, 2.0));
            nn::save_safetensors(dir + "/adapter_model.safetensors", f.tensors);
            auto fresh2 = tiny_gpt2();
            auto loaded2 = PeftModel::from_pretrained(fresh2, dir);
            CHECK(bit_equal(shared_of(*loaded2).at("vera_A"), A));
            CHECK_FALSE(bit_equal(fresh2->forward_ids(ids), out));
        }
        std::filesystem::remove_all(dir);
    }
}
