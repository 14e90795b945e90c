// QLoRA and QA-LoRA as methods of the table (peft/qlora.h, peft/qalora.h): what the conformance
// suite cannot see from outside -- the bases really are 4-bit, the files are peft LoRA files, the
// two merges of QLoRA, QA-LoRA's zero-point merge keeping the codes, and a QLoRA adapter loaded
// onto the f32 base and onto the 4-bit base.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "peft/qalora.h"
#include "peft/qlora.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

// LLaMA-style: vocab 37, context 16, dim 64, 2 layers, 4 heads, MLP 128, untied head.
std::shared_ptr<models::GPT> tiny_llama(uint64_t seed = 3) {
    models::GPTConfig c = models::GPTConfig::llama(37, 16, 64, 2, 4, 4, 128);
    c.tie_embeddings = false;
    return std::make_shared<models::GPT>(c, seed);
}

std::string tmp_dir(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("ember_qlora_" + name + "_" + std::to_string(::getpid()))).string();
}

nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
}

std::vector<uint8_t> code_bytes(const QuantizedWeight& w) { return {w.codes.data(), w.codes.data() + w.codes.bytes}; }

std::shared_ptr<nn::QuantLinear> quant_base(peft::TunerLayer& tl) {
    return std::dynamic_pointer_cast<nn::QuantLinear>(tl.base_layer);
}

}  // namespace

TEST_CASE("qlora method: every Linear but lm_head is an NF4 base under LoRA; the file is a peft LoRA file") {
    auto gpt = tiny_llama();
    peft::QLoraConfig cfg;
    cfg.r = 4;
    peft::PeftModel pm(gpt, cfg, "default", 1, "llama");
    int wrapped = 0;
    for (auto& [key, tl] : pm.tuner_layers()) {
        CAPTURE(key);
        auto q = quant_base(*tl);
        REQUIRE(q);
        CHECK(q->weight.format == QuantFormat::NF4);
        CHECK(q->weight.double_quant);
        CHECK(tl->type_name() == "LoraLinear");
        ++wrapped;
    }
    CHECK(wrapped == 2 * 7);  // q, k, v, o, gate, up, down per layer
    CHECK(std::dynamic_pointer_cast<nn::Linear>(gpt->get_submodule("lm_head")));
    // 64 (4 (64 + 64) x 4 + 4 (64 + 128) x 3) per layer... counted directly: r (in + out).
    int64_t expect = 0;
    for (auto& [key, tl] : pm.tuner_layers()) expect += 4 * (tl->base_layer->in_features + tl->base_layer->out_features);
    CHECK(pm.count_parameters().trainable == expect);
    // The 4-bit weights count at their logical size, as peft counts them: the f32 model's count.
    CHECK(pm.count_parameters().all == tiny_llama()->num_parameters() + expect);

    std::string dir = tmp_dir("file");
    pm.save_pretrained(dir);
    nlohmann::json j = read_json(dir + "/adapter_config.json");
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["r"] == 4);
    CHECK(j["lora_alpha"] == 16);
    CHECK(j["use_qalora"] == false);
    CHECK(j["target_modules"] == "all-linear");
    for (auto& [k, t] : pm.adapter_state_dict()) {
        CAPTURE(k);
        CHECK((contains(k, ".lora_A.weight") || contains(k, ".lora_B.weight")));
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("qlora method: merge into the dequantized f32 base (lossless) or requantize (reported)") {
    auto gpt = tiny_llama();
    peft::QLoraConfig cfg;
    cfg.r = 4;
    peft::PeftModel pm(gpt, cfg, "default", 1, "llama");
    train_gpt_steps(*gpt, 3, 1e-2);
    gpt->eval();
    Tensor ids = tiny_ids();
    Tensor trained = gpt->forward_ids(ids);
    auto [key, tl] = pm.tuner_layers().front();
    auto original = quant_base(*tl);
    const std::vector<uint8_t> codes = code_bytes(original->weight);

    // Dequantize (the default): the merged base is an f32 Linear; unmerge puts the 4-bit one back.
    pm.merge_adapter();
    auto dense = std::dynamic_pointer_cast<nn::Linear>(tl->base_layer);
    REQUIRE(dense);
    CHECK(dense->weight.dtype() == DType::F32);
    CHECK(all_close(gpt->forward_ids(ids), trained, 1e-5, 1e-6));
    pm.unmerge_adapter();
    CHECK(tl->base_layer == original);
    CHECK(bit_equal(gpt->forward_ids(ids), trained));

    // Requantize: stays NF4; the error is reported and is about the size of NF4's rounding.
    peft::set_quant_merge(pm, peft::QuantMerge::Requantize);
    pm.merge_adapter();
    auto requantized = quant_base(*tl);
    REQUIRE(requantized);
    CHECK(requantized != original);
    RequantizeError e = peft::requantize_error(pm);
    MESSAGE("QLoRA requantizing merge: max |error| " << e.max_abs << ", rms " << e.rms << ", max |B A s| "
                                                     << e.max_abs_delta << "; logits differ by "
                                                     << max_abs_diff(gpt->forward_ids(ids), trained));
    CHECK(e.max_abs > 0);
    CHECK(e.rms > 0);
    pm.unmerge_adapter();
    CHECK(tl->base_layer == original);
    CHECK(code_bytes(original->weight) == codes);
    CHECK(bit_equal(gpt->forward_ids(ids), trained));

    // merge_and_unload in the default mode gives plain f32 Linears.
    peft::set_quant_merge(pm, peft::QuantMerge::Dequantize);
    auto merged = pm.merge_and_unload();
    CHECK(std::dynamic_pointer_cast<nn::Linear>(merged->get_submodule(key)));
    CHECK(all_close(gpt->forward_ids(ids), trained, 1e-5, 1e-6));
}

TEST_CASE("qlora method: the adapter loads onto the 4-bit base and onto the f32 base (report the difference)") {
    Tensor ids = tiny_ids(7, 2, 8);
    auto gpt = tiny_llama();
    Tensor f32_base = gpt->forward_ids(ids);
    peft::QLoraConfig cfg;
    cfg.r = 8;
    peft::PeftModel pm(gpt, cfg, "default", 1, "llama");
    gpt->eval();
    Tensor q_base = gpt->forward_ids(ids);  // the adapter is a no-op at init
    train_gpt_steps(*gpt, 10, 1e-2);
    gpt->eval();
    Tensor trained = gpt->forward_ids(ids);
    std::string dir = tmp_dir("load");
    pm.save_pretrained(dir);

    auto on_4bit = tiny_llama();
    peft::quantize_for_qlora(*on_4bit);
    peft::PeftModel::from_pretrained(on_4bit, dir);
    on_4bit->eval();
    auto on_f32 = tiny_llama();
    peft::PeftModel::from_pretrained(on_f32, dir);
    on_f32->eval();
    Tensor l4 = on_4bit->forward_ids(ids), l32 = on_f32->forward_ids(ids);
    CHECK(bit_equal(l4, trained));  // the same base and adapter: the same logits

    auto rms = [](const Tensor& a, const Tensor& b) {
        std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
        double s = 0;
        for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
        return std::sqrt(s / double(x.size()));
    };
    const double quant_error = max_abs_diff(q_base, f32_base);  // what NF4 costs the base alone
    const double adapted = max_abs_diff(l4, l32);
    const double moved = max_abs_diff(trained, q_base);  // how far training moved the logits
    MESSAGE("QLoRA adapter on the 4-bit vs the f32 base: max |logit diff| " << adapted << ", rms " << rms(l4, l32)
            << "; the bases alone: max " << quant_error << ", rms " << rms(q_base, f32_base)
            << "; training moved the logits by max " << moved << ", rms " << rms(trained, q_base));
    // The adapter's part is the same on both bases, so what differs is the base's rounding, of
    // the size NF4 costs the untrained base (a little more: training grew the activations it
    // meets); it is small beside what the adapter learned, which both bases keep.
    CHECK(adapted > 0);
    CHECK(adapted < 4 * quant_error);
    CHECK(rms(l4, l32) < 4 * rms(q_base, f32_base));
    CHECK(moved > 5 * adapted);
    std::filesystem::remove_all(dir);
}

TEST_CASE("qalora method: INT4 bases, a peft file with use_qalora, and a merge into the zero points") {
    auto gpt = tiny_llama();
    peft::QALoraConfig cfg;
    cfg.r = 4, cfg.qalora_group_size = 16;
    peft::PeftModel pm(gpt, cfg, "default", 1, "llama");
    int64_t expect = 0;
    for (auto& [key, tl] : pm.tuner_layers()) {
        CAPTURE(key);
        auto q = quant_base(*tl);
        REQUIRE(q);
        CHECK(q->weight.format == QuantFormat::INT4);
        CHECK(q->weight.blocksize == 16);
        expect += 4 * (tl->base_layer->in_features / 16 + tl->base_layer->out_features);
    }
    CHECK(pm.count_parameters().trainable == expect);
    train_gpt_steps(*gpt, 5, 1e-2);
    gpt->eval();
    Tensor ids = tiny_ids();
    Tensor trained = gpt->forward_ids(ids);

    std::map<std::string, std::shared_ptr<nn::QuantLinear>> before;
    for (auto& [key, tl] : pm.tuner_layers()) before[key] = quant_base(*tl);
    pm.merge_adapter();
    for (auto& [key, tl] : pm.tuner_layers()) {
        CAPTURE(key);
        auto m = quant_base(*tl);
        REQUIRE(m);  // still INT4
        CHECK(m != before[key]);
        CHECK(code_bytes(m->weight) == code_bytes(before[key]->weight));      // the same integer codes
        CHECK(bit_equal(m->weight.scales, before[key]->weight.scales));
        CHECK_FALSE(bit_equal(m->weight.zeros, before[key]->weight.zeros));  // the change is in here
    }
    Tensor merged = gpt->forward_ids(ids);
    MESSAGE("QA-LoRA zero-point merge: max |logit diff| " << max_abs_diff(merged, trained));
    CHECK(all_close(merged, trained, 1e-5, 1e-5));
    pm.unmerge_adapter();
    CHECK(bit_equal(gpt->forward_ids(ids), trained));

    std::string dir = tmp_dir("qalora");
    pm.save_pretrained(dir);
    nlohmann::json j = read_json(dir + "/adapter_config.json");
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["use_qalora"] == true);
    CHECK(j["qalora_group_size"] == 16);
    // lora_A is (r, in / L) in the file, as peft's QA-LoRA saves it.
    auto sd = pm.adapter_state_dict();
    CHECK(sd.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape() == Shape{4, 4});
    // Loading onto the f32 model quantizes it the same way: identical logits.
    auto fresh = tiny_llama();
    peft::PeftModel::from_pretrained(fresh, dir);
    fresh->eval();
    CHECK(bit_equal(fresh->forward_ids(ids), trained));
    std::filesystem::remove_all(dir);
}

TEST_CASE("qalora method: a file's group size must fit the base; missing keys take peft's defaults") {
    auto j = nlohmann::json::parse(peft::QALoraConfig().to_json());
    j.erase("qalora_group_size");
    auto c = std::dynamic_pointer_cast<peft::QALoraConfig>(peft::config_from_json(j.dump()));
    REQUIRE(c);
    CHECK(c->qalora_group_size == 16);  // peft's LoraConfig default
    auto plain = std::dynamic_pointer_cast<peft::QALoraConfig>(peft::config_from_json(peft::LoraConfig().to_json()));
    CHECK_FALSE(plain);  // use_qalora false: a plain LoRA config

    auto gpt = tiny_llama();
    peft::QALoraConfig bad;
    bad.qalora_group_size = 48;  // does not divide 64
    CHECK(contains(error_of([&] { peft::PeftModel pm(gpt, bad, "default", 1, "llama"); }), "in_features"));
}

TEST_CASE("qlora method: a ViT keeps its classifier (and any module to save) in f32") {
    auto vit = tiny_vit();
    peft::QLoraConfig cfg;
    cfg.r = 2;
    cfg.modules_to_save = {"classifier"};
    peft::PeftModel pm(vit, cfg, "default", 1, "vit");
    int quantized = 0;
    for (auto& [name, m] : vit->named_modules()) {
        if (std::dynamic_pointer_cast<nn::QuantLinear>(m)) ++quantized;
        if (contains(name, "classifier")) CHECK_FALSE(std::dynamic_pointer_cast<nn::QuantLinear>(m));
    }
    CHECK(quantized == 2 * 6);  // query, key, value, attention.output.dense, intermediate.dense, output.dense
    CHECK(int(pm.tuner_layers().size()) == quantized);
}
