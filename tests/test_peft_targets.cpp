// Target selection as peft does it (tuners_utils.py check_target_module_exists): lists match a full name or a ".name" suffix,
// strings are full regex matches, all-linear skips the output head, exclude_modules wins,
// modules_to_save are never targets, layers_to_transform / layers_pattern, rank and alpha patterns.
#include "peft/lora.h"
#include "peft/targets.h"
#include "peft/ia3.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::LoraConfig;
using peft::ModuleSelector;
using peft::PeftModel;

TEST_CASE("PEFT targets: list entries match a full name or a dotted suffix, never a bare suffix") {
    ModuleSelector s{"c_attn", "mlp.c_proj"};
    CHECK(peft::selector_matches(s, "transformer.h.0.attn.c_attn"));
    CHECK(peft::selector_matches(s, "c_attn"));
    CHECK(peft::selector_matches(s, "transformer.h.3.mlp.c_proj"));
    CHECK_FALSE(peft::selector_matches(s, "transformer.h.3.attn.c_proj"));
    CHECK_FALSE(peft::selector_matches(s, "transformer.h.0.attn.xc_attn"));  // not ".c_attn"
    CHECK_FALSE(peft::selector_matches(s, "transformer.h.0.attn.c_attn.base_layer"));
}

TEST_CASE("PEFT targets: a string is a full regex match") {
    ModuleSelector s(R"(.*\.(query|value))");
    CHECK(peft::selector_matches(s, "vit.encoder.layer.0.attention.attention.query"));
    CHECK_FALSE(peft::selector_matches(s, "vit.encoder.layer.0.attention.attention.key"));
    CHECK_FALSE(peft::selector_matches(ModuleSelector("query"), "a.query"));  // fullmatch, not search
    CHECK(contains(error_of([] { peft::selector_matches(ModuleSelector("(("), "x"); }), "does not compile"));
}

TEST_CASE("PEFT targets: layer indices, layers_to_transform and layers_pattern") {
    CHECK(peft::layer_index("transformer.h.3.attn.c_attn", "") == 3);
    CHECK(peft::layer_index("transformer.h.11.mlp.c_fc", "h") == 11);
    CHECK(peft::layer_index("vit.encoder.layer.7.attention.attention.query", "layer") == 7);
    CHECK(peft::layer_index("vit.encoder.layer.7.attention.attention.query", "h") == -1);
    CHECK(peft::layer_index("classifier", "") == -1);

    auto gpt = tiny_gpt2(3);
    LoraConfig c;
    c.r = 2;
    c.target_modules = {"c_attn", "c_fc"};
    c.layers_to_transform = {0, 2};
    c.layers_pattern = "h";
    PeftModel pm(gpt, c);
    CHECK(pm.targeted_modules() == std::vector<std::string>{"transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc",
                                                           "transformer.h.2.attn.c_attn", "transformer.h.2.mlp.c_fc"});
    c.layers_pattern = "blocks";  // no such segment: nothing matches, and the error says so
    std::string err = error_of([&] { PeftModel bad(tiny_gpt2(3), c); });
    CHECK(contains(err, "no module matched target_modules [\"c_attn\", \"c_fc\"] in layers_to_transform"));
}

TEST_CASE("PEFT targets: all-linear leaves out the head; exclude_modules and modules_to_save win") {
    auto vit = tiny_vit();
    LoraConfig c;
    c.r = 2;
    c.target_modules = "all-linear";
    {
        PeftModel pm(vit, c);
        auto t = pm.targeted_modules();
        CHECK(t.size() == 12);  // 6 Linear layers x 2 layers; not the classifier
        for (const auto& n : t) CHECK(n != "classifier");
        pm.unload();
    }
    c.exclude_modules = {"key", "output.dense"};  // a list: full names or suffixes
    {
        PeftModel pm(vit, c);
        auto t = pm.targeted_modules();
        CHECK(t.size() == 6);  // query, value, intermediate.dense per layer
        for (const auto& n : t) {
            CHECK(n.find(".key") == std::string::npos);
            CHECK(n.find("output.dense") == std::string::npos);
        }
        pm.unload();
    }
    c.exclude_modules = R"(.*layer\.1\..*)";  // a string: regex
    {
        PeftModel pm(vit, c);
        CHECK(pm.targeted_modules().size() == 6);
        pm.unload();
    }
    // A module to save fully is never also wrapped, even when listed as a target.
    LoraConfig c2;
    c2.r = 2;
    c2.target_modules = {"query", "classifier"};
    c2.modules_to_save = {"classifier"};
    PeftModel pm(vit, c2);
    CHECK(pm.targeted_modules().size() == 2);
    CHECK(std::dynamic_pointer_cast<nn::Linear>(vit->get_submodule("classifier")));
}

TEST_CASE("PEFT targets: rank_pattern and alpha_pattern override per module by regex suffix") {
    std::map<std::string, int64_t> ranks{{"h.1.attn.c_attn", 6}, {R"(mlp\.c_fc)", 3}};
    CHECK(peft::pattern_key(ranks, "transformer.h.1.attn.c_attn") == "h.1.attn.c_attn");
    CHECK(peft::pattern_key(ranks, "transformer.h.0.attn.c_attn") == "");
    CHECK(peft::pattern_key(ranks, "transformer.h.0.mlp.c_fc") == R"(mlp\.c_fc)");
    CHECK(peft::pattern_key(ranks, "transformer.h.0.mlp.c_fcx") == "");  // anchored at the end

    auto gpt = tiny_gpt2();
    LoraConfig c;
    c.r = 2;
    c.lora_alpha = 4;
    c.target_modules = {"c_attn", "c_fc"};
    c.rank_pattern = ranks;
    c.alpha_pattern = {{"c_fc", 12.0}};
    PeftModel pm(gpt, c);
    auto layer = [&](const std::string& n) {
        return std::dynamic_pointer_cast<peft::LoraLayer>(pm.tuner_layer(n));
    };
    CHECK(layer("transformer.h.0.attn.c_attn")->settings("default").r == 2);
    CHECK(layer("transformer.h.1.attn.c_attn")->settings("default").r == 6);
    CHECK(layer("transformer.h.1.attn.c_attn")->settings("default").scaling == doctest::Approx(4.0 / 6));
    CHECK(layer("transformer.h.0.mlp.c_fc")->settings("default").r == 3);
    CHECK(layer("transformer.h.0.mlp.c_fc")->settings("default").scaling == doctest::Approx(12.0 / 3));
    CHECK(gpt->parameter("transformer.h.1.attn.c_attn.lora_A.default.weight").shape() == Shape{6, 16});
}

TEST_CASE("PEFT targets: default targets per model type, as peft's mappings") {
    CHECK(peft::lora_default_targets("gpt2").names == std::vector<std::string>{"c_attn"});
    CHECK(peft::lora_default_targets("llama").names == std::vector<std::string>{"q_proj", "v_proj"});
    CHECK_FALSE(peft::lora_default_targets("vit").is_set);
    peft::IA3Config ia3;
    ia3.fill_defaults("gpt2");
    CHECK(ia3.target_modules.names == std::vector<std::string>{"c_attn", "mlp.c_proj"});
    CHECK(ia3.feedforward_modules.names == std::vector<std::string>{"mlp.c_proj"});
    auto gpt = tiny_gpt2();
    PeftModel pm(gpt, LoraConfig());  // no targets given: the gpt2 default
    CHECK(pm.model_type() == "gpt2");
    CHECK(pm.targeted_modules().size() == 2);
    CHECK(pm.config().target_modules.names == std::vector<std::string>{"c_attn"});
}

TEST_CASE("PEFT targets: a LLaMA-style GPT gets peft's llama defaults (q_proj, v_proj)") {
    auto llama = std::make_shared<models::GPT>(models::GPTConfig::llama(37, 16, 16, 2, 2, 1, 32), 5);
    Tensor ids = tiny_ids();
    Tensor before = llama->forward_ids(ids);
    PeftModel pm(llama, LoraConfig());
    CHECK(pm.model_type() == "llama");
    CHECK(pm.targeted_modules() == std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                                           "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"});
    CHECK_FALSE(pm.config().fan_in_fan_out);  // real Linear layers in LLaMA
    CHECK(bit_equal(llama->forward_ids(ids), before));
    // v_proj is (kv_heads * head_dim = 8, 16) under grouped-query attention: B follows its out size.
    CHECK(llama->parameter("model.layers.0.self_attn.v_proj.lora_B.default.weight").shape() == Shape{8, 8});
}
