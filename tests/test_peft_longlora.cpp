// LongLoRA (peft/longlora.h): the counts on a LLaMA-7B shape twin, the embeddings and norms
// trained in place, S2-Attn on in training only, LongLoRA's file layout (LoRA adapter plus
// trainable_params beside it), merging into a plain model, and position interpolation.
#include <filesystem>

#include <unistd.h>

#include "models/context.h"
#include "nn/safetensors.h"
#include "peft/longlora.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

// LLaMA style: vocab 37, context 16, dim 16, 2 layers, 4 heads, MLP 32.
std::shared_ptr<models::GPT> tiny_llama(uint64_t seed = 5) {
    return std::make_shared<models::GPT>(models::GPTConfig::llama(37, 16, 16, 2, 4, 4, 32), seed);
}

std::string tmp_dir(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("ember_longlora_" + name + "_" + std::to_string(::getpid()))).string();
}

}  // namespace

TEST_CASE("LongLoRA: counts on a LLaMA-7B shape twin (LoRA q,k,v,o r=8, embeddings, norms)") {
    peft::LongLoraConfig cfg;
    CHECK(cfg.r == 8);
    CHECK(cfg.lora_alpha == 16);
    peft::PeftModel pm(llama_twin(32000, 4096, 32, 11008), cfg, "default", 0, "llama");
    int64_t lora = 0, embed = 0, norm = 0;
    std::set<std::string> tuned;
    for (const std::string& n : pm.tuned_base_parameters()) tuned.insert(n);
    for (auto& [name, t] : pm.model().named_parameters()) {
        if (!t.requires_grad()) continue;
        if (name.find("lora_") != std::string::npos) lora += t.numel();
        else if (tuned.count(name) && name.find("embed") != std::string::npos) embed += t.numel();
        else if (tuned.count(name) && name.find("norm") != std::string::npos) norm += t.numel();
        else FAIL_CHECK((std::string("unexpected trainable ") + name));
    }
    CHECK(lora == 8388608);
    CHECK(embed == 131072000);
    CHECK(norm == 266240);
    CHECK(pm.count_parameters().trainable == 8388608 + 131072000 + 266240);
}

TEST_CASE("LongLoRA: embeddings and norms train in place, S2-Attn is on in training and off in eval") {
    auto gpt = tiny_llama();
    Tensor embed = gpt->named_parameters()[0].second;
    std::map<std::string, const TensorImpl*> before;
    for (auto& [n, t] : gpt->named_parameters()) before[n] = t.impl_ptr().get();
    Generator gen(9);
    Tensor ids = randint(0, 37, {2, 16}, gen);
    gpt->eval();
    Tensor base = gpt->forward_ids(ids);
    gpt->train();
    Tensor base_train = gpt->forward_ids(ids);

    peft::PeftModel pm(gpt, peft::LongLoraConfig(), "default", 1, "llama");
    std::set<std::string> tuned;
    for (const std::string& n : pm.tuned_base_parameters()) tuned.insert(n);
    CHECK(tuned == std::set<std::string>{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                        "model.layers.0.post_attention_layernorm.weight",
                                        "model.layers.1.input_layernorm.weight",
                                        "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"});
    for (auto& [n, t] : gpt->named_parameters())
        if (tuned.count(n)) {
            CHECK_MESSAGE(t.requires_grad(), n);
            CHECK_MESSAGE(before.at(n) == t.impl_ptr().get(), n);  // the model's own tensor, no copy
        }
    for (size_t i = 0; i < gpt->num_blocks(); ++i) CHECK(gpt->block(i).attn->config.shifted_group_ratio == 0.25);

    // B = 0: in eval the model is the base exactly; in training S2-Attn changes the attention.
    gpt->eval();
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    gpt->train();
    CHECK(max_abs_diff(gpt->forward_ids(ids), base_train) > 1e-4);
    // Sequences that do not split into groups of T / 4 are refused in training, with the fix.
    CHECK(contains(error_of([&] { gpt->forward_ids(ids.slice(1, 0, 6).contiguous()); }), "T = 6"));

    peft::set_shifted_sparse_attention(*gpt, 0);
    CHECK(bit_equal(gpt->forward_ids(ids), base_train));
}

TEST_CASE("LongLoRA: LongLoRA's files (LoRA adapter + trainable_params beside it) load and merge bit-exactly") {
    auto gpt = tiny_llama();
    peft::LongLoraConfig cfg;
    cfg.group_size_ratio = 0.5;  // train_gpt_steps trains on 6 tokens: groups of 3
    peft::PeftModel pm(gpt, cfg, "default", 1, "llama");
    train_gpt_steps(*gpt, 3);
    Generator gen(10);
    Tensor ids = randint(0, 37, {2, 8}, gen);
    gpt->eval();
    Tensor trained = gpt->forward_ids(ids);

    std::string dir = tmp_dir("files");
    peft::save_longlora(pm, dir);
    nn::SafetensorsFile lora = nn::load_safetensors(dir + "/adapter_model.safetensors");
    nn::SafetensorsFile extra = nn::load_safetensors(dir + "/trainable_params.safetensors");
    CHECK(lora.tensors.size() == 2 * 2 * 4);  // A and B of q, k, v, o in 2 layers
    for (auto& [k, t] : lora.tensors) CHECK_MESSAGE(k.find(".lora_") != std::string::npos, k);
    CHECK(extra.tensors.size() == 6);
    CHECK(extra.tensors.count("model.embed_tokens.weight"));  // the base model's own names
    CHECK(extra.tensors.count("model.norm.weight"));
    std::string json = peft::LongLoraConfig().lora_part().to_json();
    CHECK(peft::config_from_json(json)->peft_type() == "LORA");  // peft reads the saved config as LoRA

    auto fresh = tiny_llama();
    auto loaded = peft::load_longlora(fresh, dir);
    fresh->eval();
    CHECK(bit_equal(fresh->forward_ids(ids), trained));
    CHECK(loaded->count_parameters().trainable == 0);

    auto merged = peft::merge_longlora(tiny_llama(), dir);
    for (auto& [n, t] : merged->named_parameters()) CHECK_MESSAGE(n.find("lora") == std::string::npos, n);
    auto* plain = dynamic_cast<models::GPT*>(merged.get());
    REQUIRE(plain);
    plain->eval();
    CHECK(all_close(plain->forward_ids(ids), trained, 1e-5, 1e-6));

    std::filesystem::remove(dir + "/trainable_params.safetensors");
    CHECK(contains(error_of([&] { peft::load_longlora(tiny_llama(), dir); }), "trainable_params.safetensors is missing"));
    std::filesystem::remove_all(dir);
    CHECK(contains(error_of([&] { peft::save_longlora(peft::PeftModel(tiny_llama(), peft::LoraConfig(), "default", 0, "llama"), dir); }),
                   "not LONGLORA"));
}

TEST_CASE("LongLoRA: adapter_config.json round trip keeps the S2-Attn options") {
    peft::LongLoraConfig c;
    c.group_size_ratio = 0.125, c.shift_roll = true, c.r = 4;
    auto back = peft::config_from_json(c.to_json());
    auto* l = dynamic_cast<peft::LongLoraConfig*>(back.get());
    REQUIRE(l);
    CHECK(l->group_size_ratio == 0.125);
    CHECK(l->shift_roll);
    CHECK(l->r == 4);
    CHECK(l->lora_alpha == 16);
}

TEST_CASE("LongLoRA: linear position interpolation, factor = ceil(new context / old)") {
    auto gpt = tiny_llama();
    Generator gen(11);
    Tensor ids = randint(0, 37, {1, 40}, gen);
    CHECK(contains(error_of([&] { gpt->forward_ids(ids); }), "exceed the context of 16"));
    CHECK(models::interpolate_positions(*gpt, 40) == 3);
    CHECK(gpt->config.context == 40);
    CHECK(gpt->config.rope_scaling == nn::RopeScaling::linear(3));
    for (size_t i = 0; i < gpt->num_blocks(); ++i) CHECK(gpt->block(i).attn->config.rope_scaling == nn::RopeScaling::linear(3));
    gpt->eval();
    Tensor logits = gpt->forward_ids(ids);
    CHECK(logits.size(1) == 40);
    // Position 3 t under factor 3 has the angles of position t without it: the rotation of q and
    // k at positions (0, 3, 6) of the extended model equals that of (0, 1, 2) of the original.
    nn::RopeTables a = nn::rope_tables(7, 4, 0, 10000, nn::RopeScaling::linear(3), DType::F64, Device::cpu());
    nn::RopeTables b = nn::rope_tables(3, 4, 0, 10000, {}, DType::F64, Device::cpu());
    for (int64_t t = 0; t < 3; ++t) CHECK(max_abs_diff(a.cos.slice(0, 3 * t, 3 * t + 1), b.cos.slice(0, t, t + 1)) < 1e-12);
    auto gpt2 = tiny_gpt2();
    CHECK(contains(error_of([&] { models::interpolate_positions(*gpt2, 64); }), "learned table"));
}
