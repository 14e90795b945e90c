// AdaLoRA: the SVD-form layer (init, scale alpha / init_r, a float64 gradcheck), the full-size
// count, the orthogonal regularizer (value and gradient), the importance EMAs and the cubic
// budget against hand computations, a Trainer run that ends at the target budget, merges, a
// frozen base, and peft's adapter files sliced by rank_pattern.
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "nn/trainer.h"
#include "peft/adalora.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::AdaLoraConfig;
using peft::AdaLoraLayer;
using peft::PeftModel;

namespace {

AdaLoraConfig adalora(int64_t init_r, int64_t target_r, peft::ModuleSelector targets, int64_t total_step = 10) {
    AdaLoraConfig c;
    c.init_r = init_r;
    c.target_r = target_r;
    c.total_step = total_step;
    c.target_modules = std::move(targets);
    return c;
}

// E starts at zero; give it values so the adapter does something.
void randomize_E(nn::Module& m, uint64_t seed = 5) {
    Generator gen(seed);
    NoGradGuard g;
    for (auto& [n, t] : m.named_parameters())
        if (n.find("lora_E") != std::string::npos) raw::copy_(t, randn(t.shape(), gen, t.dtype()));
}

std::shared_ptr<AdaLoraLayer> layer_of(PeftModel& pm, const std::string& name) {
    return std::dynamic_pointer_cast<AdaLoraLayer>(pm.tuner_layer(name));
}

std::string tmp_dir(const std::string& name) {
    auto p = std::filesystem::temp_directory_path() / ("ember_peft_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    return p.string();
}

}  // namespace

TEST_CASE("AdaLoRA: peft's defaults, shapes, init (E = 0, A, B ~ N(0, 0.02^2)), a no-op at init") {
    AdaLoraConfig d;
    CHECK(d.init_r == 12);
    CHECK(d.target_r == 8);
    CHECK(d.tinit == 0);
    CHECK(d.tfinal == 0);
    CHECK(d.deltaT == 1);
    CHECK(d.beta1 == 0.85);
    CHECK(d.beta2 == 0.85);
    CHECK(d.orth_reg_weight == 0.5);
    CHECK(d.lora_alpha == 8);
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    // total_step is required, and the schedule needs a budgeting phase.
    CHECK(error_of([&] { PeftModel p(tiny_gpt2(), adalora(12, 8, {"c_attn"}, 0)); }).find("total_step") != std::string::npos);
    AdaLoraConfig bad = adalora(12, 8, {"c_attn"}, 10);
    bad.tinit = 6, bad.tfinal = 4;
    CHECK(error_of([&] { PeftModel p(tiny_gpt2(), bad); }).find("budgeting phase") != std::string::npos);

    PeftModel pm(gpt, adalora(12, 8, {"c_attn", "c_fc"}));
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    auto l = layer_of(pm, "transformer.h.0.mlp.c_fc");
    CHECK(l->lora_A->get("default").shape() == Shape{12, 16});
    CHECK(l->lora_E->get("default").shape() == Shape{12, 1});
    CHECK(l->lora_B->get("default").shape() == Shape{64, 12});
    for (double v : l->lora_E->get("default").to_vector<double>()) CHECK(v == 0);
    std::vector<double> ab = l->lora_B->get("default").to_vector<double>();
    for (double v : l->lora_A->get("default").to_vector<double>()) ab.push_back(v);
    double m = 0, sq = 0;
    for (double v : ab) m += v, sq += v * v;
    m /= double(ab.size());
    double sd = std::sqrt(sq / double(ab.size()) - m * m);
    CHECK(std::abs(m) < 0.003);
    CHECK(sd == doctest::Approx(0.02).epsilon(0.1));
    CHECK(pm.count_parameters().trainable == 2 * (12 * (16 + 1 + 48) + 12 * (16 + 1 + 64)));
}

TEST_CASE("AdaLoRA: the layer computes W0 x + b + x (A*E)^T B^T * alpha / (init_r + 1e-5)") {
    auto gpt = tiny_gpt2(1);
    AdaLoraConfig c = adalora(6, 2, {"c_fc"});
    c.lora_alpha = 3;
    PeftModel pm(gpt, c);
    randomize_E(*gpt);
    auto l = layer_of(pm, "transformer.h.0.mlp.c_fc");
    Generator gen(2);
    Tensor x = randn({3, 16}, gen);
    Tensor A = l->lora_A->get("default").detach(), E = l->lora_E->get("default").detach(),
           B = l->lora_B->get("default").detach();
    Tensor expected = l->base_layer->forward(x) + matmul(matmul(x, (A * E).t()), B.t()) * (3.0 / (6 + 1e-5));
    CHECK(all_close(l->forward(x), expected, 1e-5, 1e-7));
    // lora_alpha <= 0: scaling = r, so the scale is r / (r + 1e-5).
    auto gpt2 = tiny_gpt2(1);
    AdaLoraConfig c0 = c;
    c0.lora_alpha = 0;
    PeftModel pm0(gpt2, c0);
    randomize_E(*gpt2);
    auto l0 = layer_of(pm0, "transformer.h.0.mlp.c_fc");
    CHECK(l0->settings("default").scaling == 6);
}

TEST_CASE("AdaLoRA: float64 gradcheck w.r.t. A, E and B") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    PeftModel pm(gpt, adalora(3, 2, {"c_attn", "c_fc"}));
    randomize_E(*gpt);
    std::vector<Tensor> params = trainable(*gpt);
    CHECK(params.size() == 6);
    Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
    expect_gradcheck([&](const std::vector<Tensor>&) { return gpt->forward_ids(ids); }, params);
}

TEST_CASE("AdaLoRA counts: init_r = 12 on GPT-2 small's c_attn is 442,512") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    CHECK(gpt->num_parameters() == 124439808);
    PeftModel pm(gpt, adalora(12, 8, {"c_attn"}, 1000), "default", 0, "gpt2");
    CHECK(pm.count_parameters().trainable == 442512);
    CHECK(pm.count_parameters().all == 124439808 + 442512);
    peft::RankAllocator alloc(pm);
    CHECK(alloc.initial_budget() == 12 * 12);
    CHECK(alloc.target_budget() == 8 * 12);
}

TEST_CASE("AdaLoRA: the cubic budget schedule equals the formula; masks every deltaT steps") {
    auto gpt = tiny_gpt2();
    AdaLoraConfig c = adalora(12, 4, {"c_attn", "c_fc"}, 30);  // 4 modules: b0 = 48, bT = 16
    c.tinit = 5, c.tfinal = 7, c.deltaT = 3;
    PeftModel pm(gpt, c);
    peft::RankAllocator alloc(pm);
    CHECK(alloc.initial_budget() == 48);
    CHECK(alloc.target_budget() == 16);
    for (int64_t t = 1; t <= 30; ++t) {
        auto [b, mask] = alloc.budget(t);
        if (t <= 5) {
            CHECK(b == 48);
            CHECK_FALSE(mask);
        } else if (t > 23) {
            CHECK(b == 16);
            CHECK(mask);
        } else {
            double f = 1 - double(t - 5) / 18.0;
            CHECK(b == int64_t((48 - 16) * f * f * f + 16));
            CHECK(mask == (t % 3 == 0));
        }
    }
    // A few by hand: t = 6: (1 - 1/18)^3 * 32 + 16 = 42.95 -> 42; t = 14: 0.5^3 * 32 + 16 = 20.
    CHECK(alloc.budget(6).first == 42);
    CHECK(alloc.budget(14).first == 20);
    CHECK(alloc.budget(23).first == 16);  // the final mask step reaches the target
}

TEST_CASE("AdaLoRA: sensitivity EMAs and the triplet score match a hand computation") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);  // so the hand computation can be held to 1e-9
    AdaLoraConfig c = adalora(3, 1, {"c_fc"}, 10);
    c.tinit = 5;  // steps 1, 2 only update the scores
    c.beta1 = 0.7, c.beta2 = 0.6;
    PeftModel pm(gpt, c);
    randomize_E(*gpt);
    auto l = layer_of(pm, "transformer.h.0.mlp.c_fc");
    peft::RankAllocator alloc(pm);
    Tensor ps[3] = {l->lora_A->get("default"), l->lora_E->get("default"), l->lora_B->get("default")};
    std::vector<double> ibar[3], ubar[3];
    for (int k = 0; k < 3; ++k) ibar[k] = ubar[k] = std::vector<double>(size_t(ps[k].numel()), 0.0);
    for (int64_t step = 1; step <= 2; ++step) {
        for (auto& p : ps) p.zero_grad();
        Tensor y = gpt->forward_ids(tiny_ids(step));
        sum(y * y).backward();
        for (int k = 0; k < 3; ++k) {
            std::vector<double> w = ps[k].to_vector<double>(), g = ps[k].grad().to_vector<double>();
            for (size_t i = 0; i < w.size(); ++i) {
                double I = std::abs(w[i] * g[i]);
                ibar[k][i] = 0.7 * ibar[k][i] + 0.3 * I;
                ubar[k][i] = 0.6 * ubar[k][i] + 0.4 * std::abs(I - ibar[k][i]);
            }
        }
        alloc.update_and_allocate(step);
    }
    // S_i = s(E_i) + mean_j s(A_ij) + mean_k s(B_ki), s = I_bar * U_bar.
    std::vector<double> S(3, 0.0);
    for (int64_t i = 0; i < 3; ++i) {
        S[i] = ibar[1][i] * ubar[1][i];
        double a = 0, b = 0;
        for (int64_t j = 0; j < 16; ++j) a += ibar[0][i * 16 + j] * ubar[0][i * 16 + j];
        for (int64_t o = 0; o < 64; ++o) b += ibar[2][o * 3 + i] * ubar[2][o * 3 + i];
        S[i] += a / 16 + b / 64;
    }
    std::vector<double> got = alloc.triplet_scores().at("transformer.h.0.mlp.c_fc");
    REQUIRE(got.size() == 3);
    for (int i = 0; i < 3; ++i) {
        CHECK(S[i] > 0);
        CHECK(got[i] == doctest::Approx(S[i]).epsilon(1e-9));
    }
    // Nothing masked during the warm-up.
    for (double v : ps[1].to_vector<double>()) CHECK(v != 0);
}

TEST_CASE("AdaLoRA: the orthogonal regularizer is 0 for orthonormal P, Q, positive otherwise; gradcheck") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    AdaLoraConfig c = adalora(4, 2, {"c_attn", "c_fc"});
    c.orth_reg_weight = 0.3;
    PeftModel pm(gpt, c);
    // Random init: A A^T and B^T B are far from I.
    Tensor reg = peft::adalora_orth_regularization(pm);
    CHECK(reg.numel() == 1);
    double by_hand = 0;
    for (auto& [name, tl] : pm.tuner_layers()) {
        auto l = std::dynamic_pointer_cast<AdaLoraLayer>(tl);
        Tensor A = l->lora_A->get("default").detach(), B = l->lora_B->get("default").detach();
        for (const Tensor& cov : {matmul(A, A.t()), matmul(B.t(), B)}) {
            std::vector<double> v = cov.to_vector<double>();
            double f = 0;
            for (int64_t i = 0; i < 4; ++i)
                for (int64_t j = 0; j < 4; ++j) {
                    double d = v[size_t(i * 4 + j)] - (i == j ? 1 : 0);
                    f += d * d;
                }
            by_hand += std::sqrt(f);  // not squared
        }
    }
    by_hand *= 0.3 / 4;  // 2 layers x (A, B)
    CHECK(reg.item<double>() == doctest::Approx(by_hand).epsilon(1e-10));
    CHECK(reg.item<double>() > 0);
    // Its gradient w.r.t. every A and B.
    std::vector<Tensor> ab;
    for (auto& [name, t] : gpt->named_parameters())
        if (name.find("lora_A") != std::string::npos || name.find("lora_B") != std::string::npos) ab.push_back(t);
    CHECK(ab.size() == 4);
    expect_gradcheck([&](const std::vector<Tensor>&) { return peft::adalora_orth_regularization(pm); }, ab);
    // Rows of A and columns of B orthonormal: (signed) unit vectors on distinct axes.
    {
        NoGradGuard g;
        for (auto& [name, tl] : pm.tuner_layers()) {
            auto l = std::dynamic_pointer_cast<AdaLoraLayer>(tl);
            Tensor A = l->lora_A->get("default"), B = l->lora_B->get("default");
            std::vector<double> a(size_t(A.numel()), 0.0), b(size_t(B.numel()), 0.0);
            const int64_t in = A.shape()[1];
            for (int64_t i = 0; i < 4; ++i) {
                a[size_t(i * in + (3 * i + 1) % in)] = i % 2 ? -1 : 1;
                b[size_t((2 * i + 5) * 4 + i)] = 1;
            }
            raw::copy_(A, from_vector(a, A.shape()).to(DType::F64));
            raw::copy_(B, from_vector(b, B.shape()).to(DType::F64));
        }
    }
    CHECK(peft::adalora_orth_regularization(pm).item<double>() == 0);
    c.orth_reg_weight = 0;
    PeftModel off(tiny_gpt2(), c);
    CHECK(peft::adalora_orth_regularization(off).item<double>() == 0);
}

TEST_CASE("AdaLoRA: a Trainer run ends at the target budget, reports ranks; frozen base; merges") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    AdaLoraConfig c = adalora(6, 2, {"c_attn", "c_fc"}, 12);  // 4 modules: 24 -> 8
    c.tinit = 2, c.tfinal = 3, c.deltaT = 2;
    c.orth_reg_weight = 0.1;
    PeftModel pm(gpt, c);
    peft::RankAllocator alloc(pm);
    auto before = snapshot(*gpt);

    nn::TrainerOptions o;
    o.steps = 12;
    o.lr = 2e-2;
    o.weight_decay = 0;
    nn::Trainer trainer(*gpt, o);
    int64_t masked_steps = 0;
    struct Check : nn::TrainingHooks {
        std::function<void(int64_t)> fn;
        void after_optimizer_step(int64_t step) override { fn(step); }
    };
    auto check = std::make_shared<Check>();
    trainer.add_hooks(check);
    check->fn = [&](int64_t step) {
        alloc.update_and_allocate(step);
        // After each mask at most budget(step) E entries are non-zero (peft zeroes E only).
        auto [b, mask] = alloc.budget(step);
        if (!((mask && step > 2) || step == 9)) return;  // 9 = total_step - tfinal: the final mask
        ++masked_steps;
        int64_t nonzero = 0;
        for (auto& [n, t] : gpt->named_parameters())
            if (n.find("lora_E") != std::string::npos)
                for (double v : t.to_vector<double>()) nonzero += v != 0;
        CHECK(nonzero <= b);
    };
    Tensor seq = tiny_ids(11, 2, 7);
    Tensor inp = seq.slice(1, 0, 6).contiguous(), tgt = seq.slice(1, 1, 7).contiguous();
    trainer.run([&](int64_t, int64_t) {
        Tensor loss = cross_entropy(gpt->forward_ids(inp), tgt) + peft::adalora_orth_regularization(pm);
        return nn::MicroBatch{loss, 12};
    });
    CHECK(masked_steps == 7);  // 4, 6, 8 (every deltaT = 2), 9 (final), 10, 11, 12 (the pattern)
    // The final pattern: target_r * modules kept in all, per module readable.
    CHECK(alloc.total_rank() == 2 * 4);
    auto ranks = alloc.rank_allocation();
    CHECK(ranks.size() == 4);
    int64_t sum_ranks = 0;
    for (auto& [m, k] : ranks) sum_ranks += k;
    CHECK(sum_ranks == 8);
    const auto saved = pm.saved_config();
    const auto& pattern = dynamic_cast<const AdaLoraConfig&>(*saved).rank_pattern;
    CHECK(pattern.size() == 4);
    CHECK(pattern.count("transformer.h.0.attn.c_attn.lora_E.default") == 1);
    CHECK(pattern == alloc.rank_pattern());
    for (auto& [n, t] : gpt->named_parameters()) {
        if (n.find("lora_E") == std::string::npos) continue;
        std::string module = n.substr(0, n.find(".lora_E"));
        const std::vector<bool>& keep = pattern.at(module + ".lora_E.default");
        std::vector<double> e = t.to_vector<double>();
        int64_t kept = 0;
        for (size_t i = 0; i < e.size(); ++i) {
            if (!keep[i]) CHECK(e[i] == 0);
            if (keep[i]) CHECK(e[i] != 0);
            kept += keep[i];
        }
        CHECK(ranks.at(module) == kept);
    }
    // The frozen base: bit-identical, never a .grad.
    for (auto& [n, t] : gpt->named_parameters()) {
        if (n.find("lora_") != std::string::npos) continue;
        CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
        CHECK_FALSE(t.grad().defined());
    }
    // Merged equals unmerged; unmerge restores exactly.
    gpt->eval();
    auto trained = snapshot(*gpt);
    Tensor out = gpt->forward_ids(ids);
    pm.merge_adapter();
    CHECK(all_close(gpt->forward_ids(ids), out, 1e-5, 1e-6));
    pm.unmerge_adapter();
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, trained.at(n)), n);

    // peft's files: A, E, B sliced to the kept ranks, rank_pattern in the config; a reload
    // computes what the trained model computes (scale alpha / init_r, adalora.h's choice).
    std::string dir = tmp_dir("adalora");
    pm.save_pretrained(dir);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.size() == 12);
    for (auto& [m, k] : ranks) {
        std::string p = "base_model.model." + m + ".";
        CHECK(f.tensors.at(p + "lora_A").shape() == Shape{k, 16});
        CHECK(f.tensors.at(p + "lora_E").shape() == Shape{k, 1});
        CHECK(f.tensors.at(p + "lora_B").shape()[1] == k);
        for (double v : f.tensors.at(p + "lora_E").to_vector<double>()) CHECK(v != 0);
    }
    std::ifstream jf(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    CHECK(j["peft_type"] == "ADALORA");
    CHECK(j["init_r"] == 6);
    CHECK(j["target_r"] == 2);
    CHECK(j["total_step"] == 12);
    CHECK(j["tinit"] == 2);
    CHECK(j["tfinal"] == 3);
    CHECK(j["deltaT"] == 2);
    CHECK(j["orth_reg_weight"] == 0.1);
    CHECK(j["lora_alpha"] == 8);
    CHECK(j["rank_pattern"]["transformer.h.1.mlp.c_fc.lora_E.default"].size() == 6);
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    auto ll = layer_of(*loaded, "transformer.h.1.mlp.c_fc");
    CHECK(ll->settings("default").r == ranks.at("transformer.h.1.mlp.c_fc"));
    CHECK(ll->settings("default").ranknum == 6);
    fresh->eval();
    CHECK(all_close(fresh->forward_ids(ids), out, 1e-5, 1e-6));
    // Saving the loaded adapter again gives the same file contents.
    std::string dir2 = tmp_dir("adalora2");
    loaded->save_pretrained(dir2);
    nn::SafetensorsFile f2 = nn::load_safetensors(dir2 + "/adapter_model.safetensors");
    for (auto& [k, t] : f.tensors) CHECK_MESSAGE(bit_equal(f2.tensors.at(k), t), k);
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(dir2);
}

TEST_CASE("AdaLoRA: target_r = 0 prunes every singular value; the empty adapter saves and reloads") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    AdaLoraConfig c = adalora(3, 0, {"c_attn"}, 4);
    c.tfinal = 1;  // final mask at step 3
    PeftModel pm(gpt, c);
    peft::RankAllocator alloc(pm);
    train_gpt_steps(*gpt, 1);
    for (int64_t step = 1; step <= 4; ++step) {
        Tensor y = gpt->forward_ids(ids);
        for (auto& p : trainable(*gpt)) p.zero_grad();
        sum(y * y).backward();
        alloc.update_and_allocate(step);
    }
    CHECK(alloc.total_rank() == 0);
    CHECK(bit_equal(gpt->forward_ids(ids), base));  // E = 0 everywhere: the base again
    std::string dir = tmp_dir("adalora0");
    pm.save_pretrained(dir);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.at("base_model.model.transformer.h.0.attn.c_attn.lora_A").shape() == Shape{0, 16});
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    CHECK(bit_equal(fresh->forward_ids(ids), base));
    loaded->merge_adapter();
    CHECK(all_close(fresh->forward_ids(ids), base, 1e-6, 1e-7));
    CHECK(peft::adalora_orth_regularization(*loaded).item<double>() == 0);
    std::filesystem::remove_all(dir);
}
