// Parameter counts at full size (each figure the published formula gives for GPT-2 small or
// ViT-B/16) and the GPT-2 adapter file's exact names.
//
// A real GPT-2 small takes seconds to initialise (124M random values; longer under sanitizers),
// so these tests build "shape twins": module trees with the same names, the same Linear layers
// and the same parameter shapes, over uninitialised (lazily allocated, never read for counting)
// storage. The first test checks that the twins equal models::GPT and models::ViT name for name
// and shape for shape at a small size, so the full-size counts are counts of those models.
#include <deque>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "peft/ia3.h"
#include "peft/lora.h"
#include "peft/vera.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::LoraConfig;
using peft::PeftModel;

namespace {

std::map<std::string, Shape> shapes_of(const nn::Module& m) {
    std::map<std::string, Shape> out;
    for (auto& [n, t] : m.named_parameters()) out[n] = t.shape();
    return out;
}

std::set<std::string> linear_names(nn::Module& m) {
    std::set<std::string> out;
    for (auto& [n, mod] : m.named_modules())
        if (std::dynamic_pointer_cast<nn::Linear>(mod)) out.insert(n);
    return out;
}

LoraConfig lora(int64_t r, peft::ModuleSelector targets) {
    LoraConfig c;
    c.r = r;
    c.lora_alpha = r;
    c.target_modules = std::move(targets);
    return c;
}

}  // namespace

// VeRA's shared projections, as the first VeRA layer holds them (every layer holds the same two).
static std::map<std::string, Tensor> shared_of(const peft::PeftModel& pm, const std::string& adapter = "default") {
    for (auto& [key, tl] : pm.tuner_layers())
        if (auto v = std::dynamic_pointer_cast<peft::VeraLayer>(tl))
            return {{"vera_A", v->vera_A->get(adapter)}, {"vera_B", v->vera_B->get(adapter)}};
    return {};
}

TEST_CASE("PEFT counts: the shape twins equal models::GPT and models::ViT at a small size") {
    auto gpt = std::make_shared<models::GPT>(models::GPTConfig::gpt2(50, 16, 8, 2, 2), 0);
    auto twin = gpt2_twin(50, 16, 8, 2);
    CHECK(shapes_of(*gpt) == shapes_of(*twin));
    CHECK(linear_names(*gpt) == linear_names(*twin));
    models::ViTConfig vc;
    vc.image_size = 8, vc.patch = 4, vc.channels = 3, vc.dim = 8, vc.layers = 2, vc.heads = 2, vc.num_labels = 5;
    auto vit = std::make_shared<models::ViT>(vc, 0);
    auto vtwin = vit_twin(8, 4, 3, 8, 2, 5);
    CHECK(shapes_of(*vit) == shapes_of(*vtwin));
    CHECK(linear_names(*vit) == linear_names(*vtwin));
}

TEST_CASE("PEFT counts: GPT-2 small LoRA r=8 on c_attn, the report line, all-linear") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    CHECK(gpt->num_parameters() == 124439808);
    {
        PeftModel pm(gpt, lora(8, {"c_attn"}), "default", 0, "gpt2");
        CHECK(pm.count_parameters().trainable == 294912);
        CHECK(pm.trainable_parameters_line() ==
              "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364");
        pm.unload();
    }
    PeftModel pm(gpt, lora(8, "all-linear"), "default", 0, "gpt2");
    CHECK(pm.count_parameters().trainable == 1179648);
    pm.unload();
    CHECK(gpt->num_parameters() == 124439808);
}

TEST_CASE("PEFT counts: GPT-2 small DoRA r=8 on c_attn") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    LoraConfig c = lora(8, {"c_attn"});
    c.use_dora = true;
    PeftModel pm(gpt, c, "default", 0, "gpt2");
    CHECK(pm.count_parameters().trainable == 322560);
}

TEST_CASE("PEFT counts: GPT-2 small VeRA r=256 on c_attn and IA3 with peft's defaults") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    {
        peft::VeraConfig c;
        c.r = 256;
        c.target_modules = {"c_attn"};
        PeftModel pm(gpt, c, "default", 0, "gpt2");
        CHECK(pm.count_parameters().trainable == 30720);
        // The shared projections are buffers: not parameters, not counted, 786,432 values.
        const auto sh = shared_of(pm);
        CHECK(sh.at("vera_A").numel() + sh.at("vera_B").numel() == 786432);
        CHECK(pm.count_parameters().all == 124439808 + 30720);
        pm.unload();
    }
    {
        PeftModel pm(gpt, peft::IA3Config(), "default", 0, "gpt2");
        CHECK(pm.count_parameters().trainable == 64512);
        pm.unload();
    }
}

// microsoft/LoRA's README gives "0.35M" for GPT-2 M r=4 on q, v; the formula 24 x 2 x 4 x 2048 gives 393,216.
// With q and v as separate Linear layers (the MergedLinear's effect), the count is 393,216.
TEST_CASE("PEFT counts: LoRA r=4 on q,v of a GPT-2 medium shape counts 393,216, not the README's 0.35M") {
    auto root = std::make_shared<ShapeNode>();
    for (int i = 0; i < 24; ++i)
        for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"})
            linear_at(*root, "model.layers." + std::to_string(i) + ".self_attn." + p, 1024, 1024);
    PeftModel pm(root, lora(4, {"q_proj", "v_proj"}), "default", 0, "llama");
    CHECK(pm.count_parameters().trainable == 393216);
}

TEST_CASE("PEFT counts: ViT-B/16 LoRA r=16 on query,value, and peft's doc line with the classifier") {
    auto vit = vit_twin(224, 16, 3, 768, 12, 101);  // Food-101
    CHECK(vit->num_parameters() - (768 * 101 + 101) == 85798656);
    {
        PeftModel pm(vit, lora(16, {"query", "value"}), "default", 0, "vit");
        CHECK(pm.count_parameters().trainable == 589824);
        pm.unload();
    }
    LoraConfig c = lora(16, {"query", "value"});
    c.modules_to_save = {"classifier"};
    PeftModel pm(vit, c, "default", 0, "vit");
    // peft docs (package_reference/lora.md): the original classifier and its copy both count.
    CHECK(pm.trainable_parameters_line() ==
          "trainable params: 667,493 || all params: 86,543,818 || trainable%: 0.7713");
}

TEST_CASE("PEFT files: a GPT-2 LoRA r=8 adapter has peft's 24 tensor names and shapes") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    LoraConfig c = lora(8, {"c_attn"});
    c.task_type = "CAUSAL_LM";
    PeftModel pm(gpt, c, "default", 0, "gpt2");
    std::string dir = (std::filesystem::temp_directory_path() / ("ember_peft_gpt2_" + std::to_string(::getpid()))).string();
    pm.save_pretrained(dir);
    nn::SafetensorsHeader h = nn::read_safetensors_header(dir + "/adapter_model.safetensors");
    std::map<std::string, std::vector<int64_t>> got, want;
    for (const auto& e : h.entries) got[e.name] = e.shape;
    for (int i = 0; i < 12; ++i) {
        std::string k = "base_model.model.transformer.h." + std::to_string(i) + ".attn.c_attn.";
        want[k + "lora_A.weight"] = {8, 768};
        want[k + "lora_B.weight"] = {2304, 8};
    }
    CHECK(got == want);
    for (const auto& e : h.entries) CHECK(e.dtype == "F32");
    std::ifstream jf(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["r"] == 8);
    CHECK(j["lora_alpha"] == 8);
    CHECK(j["fan_in_fan_out"] == true);
    CHECK(j["target_modules"] == nlohmann::json::array({"c_attn"}));
    CHECK(j["task_type"] == "CAUSAL_LM");
    std::filesystem::remove_all(dir);
}
