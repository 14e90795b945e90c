// DyLoRA: the truncated forward with scale alpha / b against a hand computation, the frozen
// lower components, a float64 gradcheck, the rank sampler, evaluation at every rank after one
// training run, merges at a rank, a frozen base, and the adapter files.
#include <filesystem>
#include <fstream>
#include <set>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "peft/dylora.h"
#include "peft/lora.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::DyLoraConfig;
using peft::DyLoraLayer;
using peft::PeftModel;

namespace {

DyLoraConfig dylora(int64_t r, peft::ModuleSelector targets, double alpha = 16) {
    DyLoraConfig c;
    c.r = r;
    c.lora_alpha = alpha;
    c.target_modules = std::move(targets);
    return c;
}

// B starts at zero; give it values so the adapter does something.
void randomize_B(nn::Module& m, uint64_t seed = 5) {
    Generator gen(seed);
    NoGradGuard g;
    for (auto& [n, t] : m.named_parameters())
        if (n.find("lora_B") != std::string::npos) raw::copy_(t, raw::mul_scalar(randn(t.shape(), gen, t.dtype()), 0.3));
}

std::shared_ptr<DyLoraLayer> layer_of(PeftModel& pm, const std::string& name) {
    return std::dynamic_pointer_cast<DyLoraLayer>(pm.tuner_layer(name));
}

// W0 x + b0 + (alpha / b) B[:, :b] A[:b] x, from the layer's tensors by hand.
Tensor by_hand(DyLoraLayer& l, const Tensor& x, int64_t b, double alpha) {
    Tensor A = l.lora_A->get_as<nn::Linear>("default")->weight.detach().slice(0, 0, b).contiguous();
    Tensor B = l.lora_B->get_as<nn::Linear>("default")->weight.detach().slice(1, 0, b).contiguous();
    return l.base_layer->forward(x) + matmul(matmul(x, A.t()), B.t()) * (alpha / double(b));
}

std::string tmp_dir(const std::string& name) {
    auto p = std::filesystem::temp_directory_path() / ("ember_peft_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    return p.string();
}

}  // namespace

TEST_CASE("DyLoRA: LoRA's shapes and init at r_max, a no-op at init, defaults") {
    DyLoraConfig d;
    CHECK(d.r == 8);
    CHECK(d.lora_alpha == 16);
    CHECK(d.frozen);
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    PeftModel pm(gpt, dylora(4, {"c_attn"}));
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    auto l = layer_of(pm, "transformer.h.1.attn.c_attn");
    CHECK(l->lora_A->get_as<nn::Linear>("default")->weight.shape() == Shape{4, 16});
    CHECK(l->lora_B->get_as<nn::Linear>("default")->weight.shape() == Shape{48, 4});
    CHECK(l->rank("default") == 4);
    // Same count as LoRA at r_max: 2 layers * 4 * (16 + 48).
    CHECK(pm.count_parameters().trainable == 2 * 4 * (16 + 48));
    double amax = 0;
    for (double v : l->lora_A->get_as<nn::Linear>("default")->weight.to_vector<double>()) amax = std::max(amax, std::abs(v));
    CHECK(amax <= 0.25);  // kaiming-uniform(a = sqrt 5): U(-1/sqrt(16), 1/sqrt(16))
    CHECK(amax > 0.15);
}

TEST_CASE("DyLoRA: at every rank b the layer computes W0 x + b0 + (alpha/b) B[:, :b] A[:b] x") {
    auto gpt = tiny_gpt2(1);
    PeftModel pm(gpt, dylora(4, {"c_fc"}, 6));
    randomize_B(*gpt);
    auto l = layer_of(pm, "transformer.h.0.mlp.c_fc");
    Generator gen(2);
    Tensor x = randn({3, 16}, gen);
    std::vector<Tensor> outs;
    for (int64_t b = 1; b <= 4; ++b) {
        peft::set_dylora_rank(pm, b);
        CHECK(l->rank("default") == b);
        Tensor y = l->forward(x);
        CHECK(all_close(y, by_hand(*l, x, b, 6), 1e-5, 1e-6));
        for (const Tensor& o : outs) CHECK(max_abs_diff(y, o) > 1e-4);
        outs.push_back(y);
    }
    // Out of range, and nothing changed by the refusal.
    CHECK(error_of([&] { peft::set_dylora_rank(pm, 0); }).find("outside [1, 4]") != std::string::npos);
    CHECK(error_of([&] { peft::set_dylora_rank(pm, 5); }).find("outside [1, 4]") != std::string::npos);
    CHECK(l->rank("default") == 4);
}

TEST_CASE("DyLoRA: float64 gradcheck w.r.t. A and B at full and truncated ranks (frozen off)") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    DyLoraConfig c = dylora(3, {"c_attn", "c_fc"}, 4);
    c.frozen = false;
    PeftModel pm(gpt, c);
    randomize_B(*gpt);
    std::vector<Tensor> params = trainable(*gpt);
    CHECK(params.size() == 4);
    Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
    for (int64_t b : {3, 2}) {
        peft::set_dylora_rank(pm, b);
        expect_gradcheck([&](const std::vector<Tensor>&) { return gpt->forward_ids(ids); }, params);
    }
}

TEST_CASE("DyLoRA: frozen = true trains only component b (A's row b, B's column b)") {
    Tensor ids = tiny_ids();
    for (bool frozen : {true, false}) {
        auto gpt = tiny_gpt2(1);
        DyLoraConfig c = dylora(4, {"c_attn"});
        c.frozen = frozen;
        PeftModel pm(gpt, c);
        randomize_B(*gpt);
        auto l = layer_of(pm, "transformer.h.0.attn.c_attn");
        Tensor A = l->lora_A->get_as<nn::Linear>("default")->weight;
        Tensor B = l->lora_B->get_as<nn::Linear>("default")->weight;
        l->set_rank("default", 3);
        gpt->train();
        Tensor y = gpt->forward_ids(ids);
        sum(y * y).backward();
        Tensor gA = A.grad(), gB = B.grad();
        REQUIRE(gA.defined());
        auto row_abs = [](const Tensor& g, int dim, int64_t i) {
            double s = 0;
            for (double v : g.select(dim, i).contiguous().to_vector<double>()) s += std::abs(v);
            return s;
        };
        for (int64_t i = 0; i < 2; ++i) {
            if (frozen) {
                CHECK(row_abs(gA, 0, i) == 0);
                CHECK(row_abs(gB, 1, i) == 0);
            } else {
                CHECK(row_abs(gA, 0, i) > 0);
                CHECK(row_abs(gB, 1, i) > 0);
            }
        }
        CHECK(row_abs(gA, 0, 2) > 0);  // component b = 3 trains
        CHECK(row_abs(gB, 1, 2) > 0);
        CHECK(row_abs(gA, 0, 3) == 0);  // beyond b: unused
        CHECK(row_abs(gB, 1, 3) == 0);
    }
}

TEST_CASE("DyLoRA: the sampler draws one rank for all layers, uniform on 1..r, seeded") {
    auto gpt = tiny_gpt2();
    PeftModel pm(gpt, dylora(4, {"c_attn", "c_fc"}));
    peft::DyLoraRankSampler s(pm, 9), same(pm, 9), other(pm, 10);
    std::map<int64_t, int> seen;
    std::vector<int64_t> a, b, c;
    for (int i = 0; i < 400; ++i) {
        int64_t r = s.sample();
        a.push_back(r);
        seen[r]++;
        for (auto& [name, tl] : pm.tuner_layers()) CHECK(std::dynamic_pointer_cast<DyLoraLayer>(tl)->rank("default") == r);
        b.push_back(same.sample());
        c.push_back(other.sample());
    }
    CHECK(seen.size() == 4);
    CHECK(seen.begin()->first == 1);
    CHECK(seen.rbegin()->first == 4);
    for (auto& [r, n] : seen) CHECK(n > 60);  // 100 expected each
    CHECK(a == b);
    CHECK(a != c);
}

TEST_CASE("DyLoRA: after one training run every rank b <= r evaluates; merge at b; frozen base") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, dylora(4, {"c_attn", "c_fc"}));
    peft::DyLoraRankSampler sampler(pm, 1);
    auto before = snapshot(*gpt);
    // 10 AdamW steps, a rank drawn before each.
    std::vector<Tensor> params = trainable(*gpt);
    nn::AdamWOptions o;
    o.lr = 1e-2;
    nn::AdamW opt(params, o);
    Tensor seq = tiny_ids(11, 2, 7);
    Tensor inp = seq.slice(1, 0, 6).contiguous(), tgt = seq.slice(1, 1, 7).contiguous();
    gpt->train();
    std::set<int64_t> drawn;
    for (int s = 0; s < 10; ++s) {
        drawn.insert(sampler.sample());
        opt.zero_grad();
        cross_entropy(gpt->forward_ids(inp), tgt).backward();
        opt.step();
    }
    CHECK(drawn.size() > 1);
    gpt->eval();
    for (auto& [n, t] : gpt->named_parameters()) {
        if (n.find("lora_") != std::string::npos) continue;
        CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
        CHECK_FALSE(t.grad().defined());
    }
    auto trained = snapshot(*gpt);
    auto l = layer_of(pm, "transformer.h.1.mlp.c_fc");
    Generator gen(3);
    Tensor x = randn({2, 16}, gen);
    std::vector<Tensor> outs;
    for (int64_t b = 1; b <= 4; ++b) {
        peft::set_dylora_rank(pm, b);
        Tensor y = gpt->forward_ids(ids);
        for (const Tensor& o2 : outs) CHECK(max_abs_diff(y, o2) > 1e-5);  // each rank its own model
        outs.push_back(y);
        CHECK(all_close(l->forward(x), by_hand(*l, x, b, 16), 1e-5, 1e-6));  // the hand truncation
        pm.merge_adapter();
        CHECK(all_close(gpt->forward_ids(ids), y, 1e-5, 1e-5));
        CHECK(error_of([&] { peft::set_dylora_rank(pm, 1); }).find("merged") != std::string::npos);
        pm.unmerge_adapter();
        for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, trained.at(n)), n);
    }
    // b = r is the whole adapter: (alpha / r) B A, untruncated.
    Tensor A = l->lora_A->get_as<nn::Linear>("default")->weight.detach();
    Tensor B = l->lora_B->get_as<nn::Linear>("default")->weight.detach();
    Tensor full = l->base_layer->forward(x) + matmul(matmul(x, A.t()), B.t()) * (16.0 / 4);
    CHECK(all_close(l->forward(x), full, 1e-5, 1e-6));
}

TEST_CASE("DyLoRA: adapter files hold A, B at r_max and a DYLORA config; reload at any rank") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    DyLoraConfig c = dylora(4, {"c_attn"}, 8);
    c.frozen = false;
    PeftModel pm(gpt, c);
    randomize_B(*gpt);
    std::string dir = tmp_dir("dylora");
    pm.save_pretrained(dir);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.size() == 4);
    CHECK(f.tensors.at("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").shape() == Shape{4, 16});
    CHECK(f.tensors.at("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight").shape() == Shape{48, 4});
    std::ifstream jf(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    CHECK(j["peft_type"] == "DYLORA");
    CHECK(j["r"] == 4);
    CHECK(j["lora_alpha"] == 8);
    CHECK(j["frozen"] == false);
    CHECK(j["fan_in_fan_out"] == true);
    CHECK(j["target_modules"] == nlohmann::json::array({"c_attn"}));
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    const auto& lc = dynamic_cast<const DyLoraConfig&>(loaded->config());
    CHECK(lc.r == 4);
    CHECK_FALSE(lc.frozen);
    for (int64_t b : {4, 2}) {
        peft::set_dylora_rank(pm, b);
        peft::set_dylora_rank(*loaded, b);
        CHECK(bit_equal(fresh->forward_ids(ids), gpt->forward_ids(ids)));
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("DyLoRA: exported at rank b as a plain LoRA adapter (r = b), it loads as LoRA and matches") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, dylora(4, {"c_attn", "c_fc"}, 8));
    randomize_B(*gpt);
    std::string dir = tmp_dir("dylora_lora");
    peft::save_dylora_as_lora(pm, dir, 3);
    std::ifstream jf(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["r"] == 3);
    CHECK(j["lora_alpha"] == 8);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.at("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight").shape() == Shape{3, 16});
    CHECK(f.tensors.at("base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight").shape() == Shape{64, 3});
    auto fresh = tiny_gpt2();
    auto lora = PeftModel::from_pretrained(fresh, dir);
    CHECK(lora->config().peft_type() == "LORA");
    peft::set_dylora_rank(pm, 3);
    CHECK(all_close(fresh->forward_ids(ids), gpt->forward_ids(ids), 1e-6, 1e-6));
    peft::set_dylora_rank(pm, 2);
    CHECK(max_abs_diff(fresh->forward_ids(ids), gpt->forward_ids(ids)) > 1e-4);
    CHECK(error_of([&] { peft::save_dylora_as_lora(pm, dir, 5); }).find("outside [1, 4]") != std::string::npos);
    std::filesystem::remove_all(dir);
}
