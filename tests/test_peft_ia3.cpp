// (IA)^3: peft's default targets on GPT-2 (c_attn and mlp.c_proj, the latter feedforward), the
// vector shapes (out, 1) / (1, in) whatever GPT-2's Conv1D file layout, q scaled too through
// the fused c_attn (peft targets c_attn whole, where the paper scales k and v only),
// a no-op at init, a float64 gradcheck, merges, a frozen base, files, and the full-size count.
#include <filesystem>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "peft/ia3.h"
#include "nn/safetensors.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::IA3Config;
using peft::PeftModel;

namespace {

// Sets every ia3_l to N(1, 0.3) values.
void randomize_ia3(nn::Module& m, uint64_t seed = 4) {
    Generator gen(seed);
    NoGradGuard g;
    for (auto& [n, t] : m.named_parameters())
        if (n.find("ia3_l") != std::string::npos)
            raw::copy_(t, raw::add_scalar(raw::mul_scalar(randn(t.shape(), gen, t.dtype()), 0.3), 1.0));
}

}  // namespace

TEST_CASE("IA3: peft's GPT-2 defaults, vector shapes per side in the (out, in) layout, ones at init (a no-op)") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    PeftModel pm(gpt, IA3Config());
    CHECK(pm.config().target_modules.names == std::vector<std::string>{"c_attn", "mlp.c_proj"});
    CHECK(static_cast<const IA3Config&>(pm.config()).feedforward_modules.names ==
          std::vector<std::string>{"mlp.c_proj"});
    CHECK(pm.targeted_modules() == std::vector<std::string>{"transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj",
                                                           "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_proj"});
    // Output scaling (out, 1) on c_attn; input scaling (1, in) on the feedforward mlp.c_proj.
    CHECK(gpt->parameter("transformer.h.0.attn.c_attn.ia3_l.default").shape() == Shape{48, 1});
    CHECK(gpt->parameter("transformer.h.0.mlp.c_proj.ia3_l.default").shape() == Shape{1, 64});
    CHECK_FALSE(std::dynamic_pointer_cast<peft::IA3Layer>(pm.tuner_layer("transformer.h.0.attn.c_attn"))->is_feedforward("default"));
    CHECK(std::dynamic_pointer_cast<peft::IA3Layer>(pm.tuner_layer("transformer.h.0.mlp.c_proj"))->is_feedforward("default"));
    for (const Tensor& t : trainable(*gpt))
        for (double v : t.to_vector<double>()) CHECK(v == 1.0);
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    CHECK(pm.count_parameters().trainable == 2 * (48 + 64));
}

TEST_CASE("IA3: the layer scales outputs (with the bias) or inputs (before the bias)") {
    Generator gen(5);
    auto lin = std::make_shared<nn::Linear>(6, 4, true, gen);
    std::map<std::string, Tensor> shared;
    peft::AdapterContext ctx{gen, std::make_shared<Generator>(1), {}, shared};
    IA3Config c;
    c.target_modules = {"x", "ff"};
    c.feedforward_modules = {"ff"};
    c.init_ia3_weights = false;
    Tensor x = randn({3, 6}, gen);

    auto out_layer = std::make_shared<peft::IA3Layer>(lin);
    out_layer->add_adapter("default", c, "x", ctx);
    out_layer->set_active({"default"});
    Tensor l = out_layer->ia3_l->get("default");  // (4, 1)
    CHECK(all_close(out_layer->forward(x), lin->forward(x) * l.flatten(), 1e-6, 1e-7));

    auto ff_layer = std::make_shared<peft::IA3Layer>(lin);
    ff_layer->add_adapter("default", c, "ff", ctx);
    ff_layer->set_active({"default"});
    Tensor lf = ff_layer->ia3_l->get("default");  // (1, 6)
    CHECK(lf.shape() == Shape{1, 6});
    CHECK(all_close(ff_layer->forward(x), lin->forward(x * lf), 1e-6, 1e-7));
    CHECK(peft::is_feedforward_module(peft::ModuleSelector{"mlp.c_proj"}, "transformer.h.0.mlp.c_proj"));
    CHECK(peft::is_feedforward_module(peft::ModuleSelector{"c_proj"}, "transformer.h.0.attn.c_proj"));  // plain endswith
    CHECK_FALSE(peft::is_feedforward_module(peft::ModuleSelector(".*fc"), "transformer.h.0.mlp.c_proj"));
}

TEST_CASE("IA3: on GPT-2's fused c_attn peft's defaults scale q as well as k and v") {
    auto gpt = tiny_gpt2(1);
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, IA3Config());
    Tensor base = gpt->forward_ids(ids);
    Tensor l = gpt->parameter("transformer.h.0.attn.c_attn.ia3_l.default");  // (48, 1) = [q | k | v]
    {
        NoGradGuard g;
        raw::copy_(l.slice(0, 0, 16), raw::mul_scalar(ones({16, 1}), 1.7));  // the q rows only
    }
    CHECK(max_abs_diff(gpt->forward_ids(ids), base) > 1e-4);
}

TEST_CASE("IA3: feedforward_modules must be a subset of target_modules") {
    IA3Config c;
    c.target_modules = {"c_attn"};
    c.feedforward_modules = {"mlp.c_proj"};
    CHECK(contains(error_of([&] { PeftModel pm(tiny_gpt2(), c); }), "feedforward_modules should be a subset"));
}

TEST_CASE("IA3: float64 gradcheck w.r.t. the scaling vectors") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    PeftModel pm(gpt, IA3Config());
    randomize_ia3(*gpt);
    std::vector<Tensor> params = trainable(*gpt);
    CHECK(params.size() == 2);
    Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
    expect_gradcheck([&](const std::vector<Tensor>&) { return gpt->forward_ids(ids); }, params);
}

TEST_CASE("IA3: merged equals unmerged, unmerge exact; the base is frozen through training") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, IA3Config());
    auto before = snapshot(*gpt);
    train_gpt_steps(*gpt, 10);
    gpt->eval();
    for (auto& [n, t] : gpt->named_parameters()) {
        if (n.find("ia3_l") != std::string::npos) {
            CHECK_FALSE(bit_equal(t, before.at(n)));
        } else {
            CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
            CHECK(!t.grad().defined());
        }
    }
    auto trained = snapshot(*gpt);
    Tensor out = gpt->forward_ids(ids);
    pm.merge_adapter();
    CHECK(all_close(gpt->forward_ids(ids), out, 1e-5, 1e-6));
    pm.unmerge_adapter();
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, trained.at(n)), n);

    nn::StateDict sd = pm.adapter_state_dict();
    CHECK(sd.size() == 4);
    CHECK(sd.at("base_model.model.transformer.h.1.attn.c_attn.ia3_l").shape() == Shape{48, 1});
    CHECK(sd.at("base_model.model.transformer.h.1.mlp.c_proj.ia3_l").shape() == Shape{1, 64});
    auto plain = pm.merge_and_unload();
    CHECK(all_close(gpt->forward_ids(ids), out, 1e-5, 1e-6));
}

TEST_CASE("IA3: save and load reproduce the logits; the config has peft's IA3 keys") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, IA3Config());
    randomize_ia3(*gpt);
    Tensor out = gpt->forward_ids(ids);
    std::string dir = (std::filesystem::temp_directory_path() / ("ember_peft_ia3_" + std::to_string(::getpid()))).string();
    pm.save_pretrained(dir);
    nlohmann::json j = nlohmann::json::parse(pm.config().to_json());
    for (const char* k : {"peft_type", "task_type", "target_modules", "exclude_modules", "feedforward_modules",
                          "fan_in_fan_out", "modules_to_save", "init_ia3_weights", "base_model_name_or_path",
                          "inference_mode", "revision"})
        CHECK_MESSAGE(j.contains(k), k);
    CHECK_FALSE(j.contains("layers_to_transform"));  // not an IA3Config field in peft
    CHECK(j["peft_type"] == "IA3");
    auto cfg = peft::config_from_json(pm.config().to_json());
    auto* ia3 = dynamic_cast<IA3Config*>(cfg.get());
    REQUIRE(ia3);
    CHECK(ia3->feedforward_modules.names == std::vector<std::string>{"mlp.c_proj"});
    CHECK(ia3->fan_in_fan_out);
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    CHECK(bit_equal(fresh->forward_ids(ids), out));
    std::filesystem::remove_all(dir);
}
