// Prompt and prefix tuning through the forward context: the model is called as usual and the
// PeftModel supplies virtual tokens / layer prefixes; logits for the real tokens only; peft's
// files (prompt_embeddings, adapter_config.json keys); the reparameterisation folded away on save;
// greedy generation equal with and without the KV cache; ViT prefix tuning through the same code.
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "models/generate.h"
#include "nn/safetensors.h"
#include "peft/prefix_tuning.h"
#include "peft/prompt_tuning.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::PeftModel;
using peft::PrefixTuningConfig;
using peft::PromptTuningConfig;

namespace {

PromptTuningConfig prompt(int64_t n) {
    PromptTuningConfig c;
    c.num_virtual_tokens = n;
    return c;
}

PrefixTuningConfig prefix(int64_t n, bool projection = false, int64_t m = 0) {
    PrefixTuningConfig c;
    c.num_virtual_tokens = n, c.prefix_projection = projection, c.encoder_hidden_size = m;
    return c;
}

std::string tmp_dir(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("ember_prompts_" + name + "_" + std::to_string(::getpid()))).string();
}

nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    return nlohmann::json::parse(f);
}

}  // namespace

TEST_CASE("Prompt tuning: virtual tokens before the embeddings, logits for the real tokens only") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();  // (2, 6)
    PeftModel pm(gpt, prompt(4));
    Tensor P = gpt->parameter("prompt_encoder.default.embedding.weight");
    CHECK(P.shape() == Shape{4, 16});
    Tensor y = gpt->forward_ids(ids);
    CHECK(y.shape() == Shape{2, 6, 37});
    // The same as passing the embeddings by hand, less the virtual tokens' rows.
    Tensor by_hand;
    {
        peft::DisableAdapterGuard off(pm);
        models::GPTInputs in;
        in.prefix_embeds = P.unsqueeze(0);
        by_hand = gpt->forward_ids(ids, in).slice(1, 4, 10);
    }
    CHECK(bit_equal(y, by_hand));
    CHECK(gpt->token_context() == 16 - 4);
    // Only P trains.
    CHECK(pm.count_parameters().trainable == 4 * 16);
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(t.requires_grad() == (n.rfind("prompt_encoder.", 0) == 0), n);
}

TEST_CASE("Prompt tuning: TEXT init repeats the text's token embeddings; SAMPLE_VOCAB draws vocabulary rows") {
    auto gpt = tiny_gpt2();
    Tensor wte = raw::clone(gpt->parameter("transformer.wte.weight"));
    PromptTuningConfig c = prompt(5);
    c.prompt_tuning_init = "TEXT", c.prompt_tuning_init_text = "hi", c.init_token_ids = {7, 3};
    PeftModel pm(gpt, c);
    Tensor P = gpt->parameter("prompt_encoder.default.embedding.weight");
    std::vector<int64_t> want = {7, 3, 7, 3, 7};
    for (int64_t i = 0; i < 5; ++i) CHECK(bit_equal(P.select(0, i), wte.select(0, want[size_t(i)])));
    auto gpt2 = tiny_gpt2();
    PromptTuningConfig s = prompt(3);
    s.prompt_tuning_init = "SAMPLE_VOCAB";
    PeftModel sampled(gpt2, s);
    Tensor Q = gpt2->parameter("prompt_encoder.default.embedding.weight");
    for (int64_t i = 0; i < 3; ++i) {
        bool found = false;
        for (int64_t v = 0; v < 37; ++v) found = found || bit_equal(Q.select(0, i), wte.select(0, v));
        CHECK(found);
    }
    PromptTuningConfig bad = prompt(2);
    bad.prompt_tuning_init = "TEXT";
    CHECK(error_of([&] { PeftModel(tiny_gpt2(), bad); }).find("init_token_ids") != std::string::npos);
}

TEST_CASE("Prompt tuning: peft's PROMPT_TUNING files; greedy generation equal with and without the KV cache") {
    auto gpt = tiny_gpt2();
    PeftModel pm(gpt, prompt(4));
    train_gpt_steps(*gpt, 3, 3e-2);
    std::string dir = tmp_dir("prompt");
    pm.save_pretrained(dir);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.size() == 1);
    CHECK(f.tensors.at("prompt_embeddings").shape() == Shape{4, 16});
    nlohmann::json j = read_json(dir + "/adapter_config.json");
    CHECK(j["peft_type"] == "PROMPT_TUNING");
    CHECK(j["num_virtual_tokens"] == 4);
    CHECK(j["token_dim"] == 16);
    CHECK(j["num_layers"] == 2);
    CHECK(j["num_attention_heads"] == 2);
    CHECK(j["num_transformer_submodules"] == 1);
    CHECK(j["prompt_tuning_init"] == "RANDOM");
    CHECK_FALSE(j.contains("target_modules"));

    auto fresh = tiny_gpt2();
    PeftModel::from_pretrained(fresh, dir);
    models::GenerateOptions o;
    o.max_new_tokens = 8, o.temperature = 0;
    std::vector<int64_t> start = {1, 2, 3};
    o.use_cache = true;
    std::vector<int64_t> cached = models::generate(*fresh, start, o);
    o.use_cache = false;
    std::vector<int64_t> uncached = models::generate(*fresh, start, o);
    CHECK(cached == uncached);
    CHECK(cached == models::generate(*gpt, start, o));  // the trained model's own tokens
    std::filesystem::remove_all(dir);
}

TEST_CASE("Prefix tuning: every layer attends to its prefix keys and values; real positions from 0") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, prefix(3));
    Tensor E = gpt->parameter("prompt_encoder.default.embedding.weight");
    CHECK(E.shape() == Shape{3, 2 * 2 * 16});  // (n, 2 L Hkv D)
    Tensor y = gpt->forward_ids(ids);
    CHECK(y.shape() == Shape{2, 6, 37});
    // By hand: slot 2l of (n, 2L, Hkv, D) is layer l's keys, 2l + 1 its values.
    Tensor p = E.reshape({3, 4, 2, 8}).permute({1, 2, 0, 3});
    models::GPTInputs in;
    for (int64_t l = 0; l < 2; ++l) in.layer_prefixes.emplace_back(p.slice(0, 2 * l, 2 * l + 1), p.slice(0, 2 * l + 1, 2 * l + 2));
    Tensor by_hand;
    {
        peft::DisableAdapterGuard off(pm);
        by_hand = gpt->forward_ids(ids, in);
    }
    CHECK(bit_equal(y, by_hand));
    CHECK(gpt->token_context() == 16);  // a prefix takes no positions
    CHECK(pm.count_parameters().trainable == 3 * 64);
}

TEST_CASE("Prefix tuning: the MLP trains, the file holds the folded prefix, and loads for inference") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, prefix(3, true, 8));
    // E' (3, 16), Linear(16, 8), Linear(8, 64).
    CHECK(pm.count_parameters().trainable == 3 * 16 + 16 * 8 + 8 + 8 * 64 + 64);
    CHECK(gpt->parameter("prompt_encoder.default.transform.0.weight").shape() == Shape{8, 16});
    train_gpt_steps(*gpt, 3);
    gpt->eval();
    Tensor y = gpt->forward_ids(ids);
    std::string dir = tmp_dir("prefix");
    pm.save_pretrained(dir);
    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.size() == 1);
    CHECK(f.tensors.at("prompt_embeddings").shape() == Shape{3, 64});
    nlohmann::json j = read_json(dir + "/adapter_config.json");
    CHECK(j["peft_type"] == "PREFIX_TUNING");
    CHECK(j["prefix_projection"] == true);
    CHECK(j["encoder_hidden_size"] == 8);
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    CHECK(loaded->count_parameters().all - fresh->num_parameters() == 0);  // a plain E, the MLP gone
    CHECK(bit_equal(fresh->forward_ids(ids), y));
    // Training from the folded file would need the MLP's inputs, which the file does not hold.
    CHECK(error_of([&] { PeftModel::from_pretrained(tiny_gpt2(), dir, "default", true); }).find("computed") !=
          std::string::npos);
    // Greedy generation, with and without the cache.
    models::GenerateOptions o;
    o.max_new_tokens = 8, o.temperature = 0;
    o.use_cache = true;
    std::vector<int64_t> cached = models::generate(*fresh, {4, 5}, o);
    o.use_cache = false;
    CHECK(cached == models::generate(*fresh, {4, 5}, o));
    std::filesystem::remove_all(dir);
}

TEST_CASE("Prefix tuning: ViT through the same code; prompt tuning refused on ViT") {
    auto vit = tiny_vit();
    Generator gen(2);
    Tensor images = randn({2, 8, 8}, gen);
    Tensor base = vit->forward(images);
    PeftModel pm(vit, prefix(3), "default", 0, "vit");
    Tensor y = vit->forward(images);
    CHECK_FALSE(bit_equal(y, base));
    pm.disable_adapters();
    CHECK(bit_equal(vit->forward(images), base));
    pm.disable_adapters(false);
    std::string dir = tmp_dir("vit_prefix");
    pm.save_pretrained(dir);
    auto fresh = tiny_vit();
    PeftModel::from_pretrained(fresh, dir, "default", false, "vit");
    CHECK(bit_equal(fresh->forward(images), y));
    std::filesystem::remove_all(dir);
    CHECK(error_of([&] { PeftModel(tiny_vit(), prompt(2), "default", 0, "vit"); }).find("has none") != std::string::npos);
}
