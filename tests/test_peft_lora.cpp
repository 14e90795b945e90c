// LoRA and DoRA through PeftModel on tiny GPT-2 / ViT models: no-op at init, float64
// gradchecks, merge == unmerged and exact unmerge, a frozen base through training, several
// adapters, adapter files that round-trip, modules_to_save, and GPT-2's Conv1D layout
// (peft's fan_in_fan_out).
#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "peft/ia3.h"
#include "peft/lora.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::LoraConfig;
using peft::PeftModel;

namespace {

LoraConfig lora(int64_t r, double alpha, peft::ModuleSelector targets) {
    LoraConfig c;
    c.r = r;
    c.lora_alpha = alpha;
    c.target_modules = std::move(targets);
    return c;
}

// Fills every trainable lora_B with N(0, 0.5) values so the adapters do something.
void randomize_lora_B(nn::Module& m, uint64_t seed = 5) {
    Generator gen(seed);
    NoGradGuard no_grad;
    for (auto& [n, t] : m.named_parameters())
        if (n.find("lora_B") != std::string::npos)
            raw::copy_(t, raw::mul_scalar(randn(t.shape(), gen, t.dtype()), 0.5));
}

std::string tmp_dir(const std::string& name) {
    auto p = std::filesystem::temp_directory_path() / ("ember_peft_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    return p.string();
}

}  // namespace

TEST_CASE("LoRA: a no-op at init, A kaiming-uniform and B zero, scale alpha/r or alpha/sqrt(r)") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor before = gpt->forward_ids(ids);
    PeftModel pm(gpt, lora(4, 8, {"c_attn", "c_fc"}));
    CHECK(bit_equal(gpt->forward_ids(ids), before));
    CHECK(pm.targeted_modules().size() == 4);

    auto layer = std::dynamic_pointer_cast<peft::LoraLayer>(pm.tuner_layer("transformer.h.0.attn.c_attn"));
    REQUIRE(layer);
    Tensor A = layer->lora_A->get_as<nn::Linear>("default")->weight;  // (r, in)
    Tensor B = layer->lora_B->get_as<nn::Linear>("default")->weight;  // (out, r)
    CHECK(A.shape() == Shape{4, 16});
    CHECK(B.shape() == Shape{48, 4});
    double bound = 1 / std::sqrt(16.0), top = 0;
    for (double v : A.to_vector<double>()) top = std::max(top, std::abs(v));
    CHECK(top <= bound);
    CHECK(top > 0.5 * bound);  // uniform over the whole range, not a narrower init
    for (double v : B.to_vector<double>()) CHECK(v == 0);
    CHECK(layer->settings("default").scaling == doctest::Approx(2.0));

    LoraConfig rs = lora(4, 8, {"c_attn"});
    rs.use_rslora = true;
    PeftModel pm2(tiny_gpt2(), rs);
    auto l2 = std::dynamic_pointer_cast<peft::LoraLayer>(pm2.tuner_layer("transformer.h.1.attn.c_attn"));
    CHECK(l2->settings("default").scaling == doctest::Approx(4.0));  // 8 / sqrt(4)
}

TEST_CASE("LoRA: the layer computes W0 x + b + s B A x (against the merged weight)") {
    Generator gen(2);
    auto lin = std::make_shared<nn::Linear>(6, 5, true, gen);
    auto layer = std::make_shared<peft::LoraLayer>(lin);
    std::map<std::string, Tensor> shared;
    auto rng = std::make_shared<Generator>(9);
    peft::AdapterContext ctx{gen, rng, {}, shared};
    LoraConfig c = lora(3, 6, {"x"});
    c.init_lora_weights = "false";  // B random too
    layer->add_adapter("default", c, "x", ctx);
    layer->set_active({"default"});
    Tensor A = layer->lora_A->get_as<nn::Linear>("default")->weight;
    Tensor B = layer->lora_B->get_as<nn::Linear>("default")->weight;
    Tensor x = randn({4, 6}, gen);
    Tensor expected = nn::linear(x, lin->weight + matmul(B, A) * 2.0, lin->bias);  // s = 6 / 3
    CHECK(all_close(layer->forward(x), expected, 1e-5, 1e-6));
}

TEST_CASE("LoRA: float64 gradcheck of a GPT-2 with LoRA w.r.t. A and B (B nonzero)") {
    auto gpt = tiny_gpt2(1);
    gpt->to(DType::F64);
    LoraConfig c = lora(2, 4, {"c_attn", "mlp.c_proj"});
    c.lora_dropout = 0.1;  // identity in eval mode
    PeftModel pm(gpt, c);
    randomize_lora_B(*gpt);
    gpt->eval();
    std::vector<Tensor> params = trainable(*gpt);
    CHECK(params.size() == 4);  // A and B of two layers, nothing else
    Tensor ids = from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4});
    expect_gradcheck([&](const std::vector<Tensor>&) { return gpt->forward_ids(ids); }, params);
}

TEST_CASE("LoRA: dropout acts on the adapter input only, in training mode") {
    auto gpt = tiny_gpt2(1);
    Tensor ids = tiny_ids();
    LoraConfig c = lora(4, 8, {"c_attn"});
    c.lora_dropout = 0.5;
    PeftModel pm(gpt, c);
    gpt->train();
    Tensor base = gpt->forward_ids(ids);  // B = 0: dropout on the branch changes nothing
    pm.disable_adapters();
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    pm.disable_adapters(false);
    randomize_lora_B(*gpt);
    Tensor a = gpt->forward_ids(ids), b = gpt->forward_ids(ids);
    CHECK_FALSE(bit_equal(a, b));  // fresh masks each call
    gpt->eval();
    CHECK(bit_equal(gpt->forward_ids(ids), gpt->forward_ids(ids)));
}

TEST_CASE("LoRA: merged output equals unmerged, unmerge restores the base bit for bit") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    PeftModel pm(gpt, lora(4, 8, "all-linear"));
    CHECK(pm.targeted_modules().size() == 8);  // c_attn, c_proj, c_fc, mlp.c_proj x 2 (lm_head is tied)
    randomize_lora_B(*gpt);
    auto base = snapshot(*gpt);
    Tensor unmerged = gpt->forward_ids(ids);
    pm.merge_adapter();
    auto layer = pm.tuner_layer("transformer.h.0.mlp.c_fc");
    CHECK(layer->merged());
    CHECK_FALSE(bit_equal(layer->base_layer->dense_weight(), base.at("transformer.h.0.mlp.c_fc.base_layer.weight")));
    CHECK(all_close(gpt->forward_ids(ids), unmerged, 1e-5, 1e-6));
    pm.unmerge_adapter();
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, base.at(n)), n);
    CHECK(bit_equal(gpt->forward_ids(ids), unmerged));

    // Disabling a merged model unmerges first (peft), so the base alone runs.
    pm.merge_adapter();
    pm.disable_adapters();
    Tensor off = gpt->forward_ids(ids);
    CHECK_FALSE(layer->merged());
    pm.disable_adapters(false);
    auto plain = pm.merge_and_unload();
    for (auto& [n, m] : plain->named_modules()) CHECK(std::dynamic_pointer_cast<peft::TunerLayer>(m) == nullptr);
    CHECK(plain->num_parameters() == tiny_gpt2()->num_parameters());
    CHECK(all_close(gpt->forward_ids(ids), unmerged, 1e-5, 1e-6));
    CHECK_FALSE(all_close(off, unmerged, 1e-5, 1e-6));
    CHECK(contains(error_of([&] { pm.merge_adapter(); }), "already unloaded"));
}

TEST_CASE("LoRA: the frozen base is bit-identical after 10 AdamW steps and never gets a .grad") {
    auto gpt = tiny_gpt2();
    PeftModel pm(gpt, lora(4, 8, {"c_attn", "c_proj"}));
    auto before = snapshot(*gpt);
    std::vector<Tensor> params = train_gpt_steps(*gpt, 10);
    CHECK(params.size() == 12);  // "c_proj" matches attn.c_proj and mlp.c_proj: 3 layers x 2 blocks x (A, B)
    int changed = 0;
    for (auto& [n, t] : gpt->named_parameters()) {
        bool adapter = n.find("lora_") != std::string::npos;
        if (adapter) {
            changed += !bit_equal(t, before.at(n));
            CHECK(t.grad().defined());
        } else {
            CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
            CHECK_MESSAGE(!t.grad().defined(), n);
        }
    }
    CHECK(changed == 12);
}

TEST_CASE("LoRA: several named adapters -- add, switch, combine, disable, delete") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    PeftModel pm(gpt, lora(4, 8, {"c_attn"}));
    randomize_lora_B(*gpt, 1);
    Tensor out_a = gpt->forward_ids(ids);
    pm.add_adapter("other", lora(2, 2, {"c_fc"}));
    CHECK(pm.adapter_names() == std::vector<std::string>{"default", "other"});
    CHECK(pm.active_adapters() == std::vector<std::string>{"default"});
    // The new adapter is inactive and frozen until set_adapter.
    Tensor b_other = gpt->parameter("transformer.h.0.mlp.c_fc.lora_B.other.weight");
    CHECK_FALSE(b_other.requires_grad());
    CHECK(bit_equal(gpt->forward_ids(ids), out_a));
    {
        NoGradGuard g;
        Generator gen(8);
        raw::copy_(b_other, randn(b_other.shape(), gen));
    }
    pm.set_adapter("other");
    CHECK(b_other.requires_grad());
    CHECK_FALSE(gpt->parameter("transformer.h.0.attn.c_attn.lora_B.default.weight").requires_grad());
    Tensor out_b = gpt->forward_ids(ids);
    CHECK_FALSE(all_close(out_b, out_a, 1e-4, 1e-5));
    CHECK_FALSE(all_close(out_b, base, 1e-4, 1e-5));

    pm.set_adapters({"default", "other"});  // both deltas
    Tensor both = gpt->forward_ids(ids);
    CHECK_FALSE(all_close(both, out_a, 1e-4, 1e-5));
    CHECK_FALSE(all_close(both, out_b, 1e-4, 1e-5));

    {
        peft::DisableAdapterGuard off(pm);
        CHECK(bit_equal(gpt->forward_ids(ids), base));
    }
    CHECK_FALSE(pm.adapters_disabled());
    CHECK(bit_equal(gpt->forward_ids(ids), both));
    pm.set_adapter("default");
    CHECK(bit_equal(gpt->forward_ids(ids), out_a));

    pm.delete_adapter("other");
    CHECK(pm.adapter_names() == std::vector<std::string>{"default"});
    // c_fc held only "other": it is a plain Linear again.
    CHECK(std::dynamic_pointer_cast<nn::Linear>(gpt->get_submodule("transformer.h.0.mlp.c_fc")));
    CHECK(bit_equal(gpt->forward_ids(ids), out_a));
    CHECK(contains(error_of([&] { pm.set_adapter("other"); }), "no adapter named 'other'"));
    CHECK(contains(error_of([&] { pm.add_adapter("default", lora(2, 2, {"c_fc"})); }), "already exists"));
    // A different method cannot be stacked on a LoRA layer... but the same method can be added again.
    pm.add_adapter("third", lora(2, 2, {"c_attn"}));
    CHECK(pm.tuner_layer("transformer.h.1.attn.c_attn")->adapter_names().size() == 2);

    pm.delete_adapter("default");  // the active one: another becomes active, as in peft
    CHECK(pm.active_adapters() == std::vector<std::string>{"third"});
    CHECK(bit_equal(gpt->forward_ids(ids), base));  // "third" still has B = 0
    pm.unload();
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    CHECK(gpt->num_parameters() == tiny_gpt2()->num_parameters());
}

TEST_CASE("LoRA: trainable-parameter report and errors naming the available modules") {
    auto gpt = tiny_gpt2();
    int64_t all = gpt->num_parameters();
    PeftModel pm(gpt, lora(4, 8, {"c_attn"}));
    int64_t lora_n = 2 * 4 * (16 + 48);
    auto c = pm.count_parameters();
    CHECK(c.trainable == lora_n);
    CHECK(c.all == all + lora_n);
    // 37*16 + 16*16 + 2 * 3280 + 32 = 7440 (the GPT-2 count formula at this size).
    CHECK(all == 7440);
    CHECK(pm.trainable_parameters_line() == "trainable params: 512 || all params: 7,952 || trainable%: 6.4386");
    std::string err = error_of([&] { PeftModel bad(tiny_gpt2(), lora(4, 8, {"q_proj"})); });
    CHECK(contains(err, "no module matched target_modules [\"q_proj\"]"));
    CHECK(contains(err, "transformer.h.0.attn.c_attn"));
    std::string err2 = error_of([&] { PeftModel bad(tiny_vit(), LoraConfig()); });
    CHECK(contains(err2, "no default target_modules"));
}

TEST_CASE("LoRA: adapter files round-trip with peft's names; mismatches are refused") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    LoraConfig c = lora(4, 8, {"c_attn"});
    c.task_type = "CAUSAL_LM";
    c.base_model_name_or_path = "gpt2";
    PeftModel pm(gpt, c);
    train_gpt_steps(*gpt, 3);
    gpt->eval();
    Tensor logits = gpt->forward_ids(ids);
    std::string dir = tmp_dir("lora");
    pm.save_pretrained(dir);

    nn::SafetensorsFile f = nn::load_safetensors(dir + "/adapter_model.safetensors");
    CHECK(f.tensors.size() == 4);
    CHECK(f.tensors.at("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight").shape() == Shape{4, 16});
    CHECK(f.tensors.at("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight").shape() == Shape{48, 4});
    CHECK(f.metadata.at("format") == "pt");

    std::ifstream jf(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["r"] == 4);
    CHECK(j["lora_alpha"] == 8.0);
    CHECK(j["target_modules"] == nlohmann::json::array({"c_attn"}));
    CHECK(j["fan_in_fan_out"] == true);  // GPT-2: Conv1D in peft
    CHECK(j["task_type"] == "CAUSAL_LM");
    CHECK(j["bias"] == "none");
    for (const char* k : {"peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                          "revision", "inference_mode", "r", "target_modules", "exclude_modules", "lora_alpha",
                          "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "modules_to_save",
                          "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern",
                          "alpha_pattern", "megatron_config", "megatron_core", "trainable_token_indices",
                          "loftq_config", "eva_config", "corda_config", "lora_ga_config", "use_dora",
                          "velora_config", "alora_invocation_tokens", "use_qalora", "qalora_group_size",
                          "monteclora_config", "layer_replication", "lora_bias", "target_parameters",
                          "use_bdlora", "arrow_config", "kasa_config", "ensure_weight_tying"})
        CHECK_MESSAGE(j.contains(k), k);

    // A fresh base model (same seed) plus the file gives the same logits, bit for bit.
    auto fresh = tiny_gpt2();
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    fresh->eval();
    CHECK(bit_equal(fresh->forward_ids(ids), logits));
    CHECK(loaded->count_parameters().trainable == 0);  // inference mode unless is_trainable
    auto fresh2 = tiny_gpt2();
    auto trainable_pm = PeftModel::from_pretrained(fresh2, dir, "default", true);
    CHECK(trainable_pm->count_parameters().trainable == 2 * 4 * 64);

    // A file for another shape or other targets is refused, naming the keys.
    std::string err = error_of([&] { PeftModel::from_pretrained(tiny_gpt2(3), dir); });
    CHECK(contains(err, "missing (2)"));
    CHECK(contains(err, "transformer.h.2.attn.c_attn.lora_A.weight"));
    auto other = std::make_shared<models::GPT>(models::GPTConfig::gpt2(37, 16, 32, 2, 2), 3);
    std::string err2 = error_of([&] { PeftModel::from_pretrained(other, dir); });
    CHECK(contains(err2, "wrongly shaped (4)"));
    // A second adapter loads beside the first, into dir/<name> when saved.
    pm.load_adapter(dir, "again");
    pm.save_pretrained(dir);
    CHECK(std::filesystem::exists(dir + "/again/adapter_model.safetensors"));
    std::filesystem::remove_all(dir);
}

TEST_CASE("LoRA: modules_to_save keeps the original and trains a copy (ViT classifier)") {
    auto vit = tiny_vit();
    Generator gen(3);
    Tensor images = randn({2, 1, 8, 8}, gen);
    Tensor base = vit->forward(images);
    Tensor original_w = vit->classifier->weight;
    LoraConfig c = lora(4, 4, {"query", "value"});
    c.modules_to_save = {"classifier"};
    PeftModel pm(vit, c);
    CHECK(bit_equal(vit->forward(images), base));
    Tensor copy_w = vit->classifier->weight;
    CHECK_FALSE(copy_w.same_storage(original_w));
    CHECK(copy_w.requires_grad());
    CHECK_FALSE(original_w.requires_grad());
    // peft counts the original and the copy.
    int64_t lora_n = 2 * 2 * 4 * (16 + 16), head = 3 * 16 + 3;
    CHECK(pm.count_parameters().trainable == lora_n + head);
    CHECK(pm.count_parameters().all == tiny_vit()->num_parameters() + lora_n + head);
    {
        NoGradGuard g;
        raw::copy_(copy_w, raw::mul_scalar(copy_w, 3.0));
    }
    CHECK_FALSE(bit_equal(vit->forward(images), base));
    pm.disable_adapters();  // the original head
    CHECK(bit_equal(vit->forward(images), base));
    pm.disable_adapters(false);
    nn::StateDict sd = pm.adapter_state_dict();
    CHECK(sd.count("base_model.model.classifier.weight"));
    CHECK(sd.count("base_model.model.classifier.bias"));
    CHECK(bit_equal(sd.at("base_model.model.classifier.weight"), copy_w));
    CHECK(sd.count("base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight"));
    CHECK_FALSE(pm.config().fan_in_fan_out);  // ViT's are real Linear layers
    pm.unload();
    CHECK(vit->classifier->weight.same_storage(original_w));
}

TEST_CASE("LoRA on GPT-2's Conv1D: merges land transposed in the (in, out) file layout") {
    auto gpt = tiny_gpt2();
    nn::StateDict hf_before = gpt->hf_state_dict();
    PeftModel pm(gpt, lora(4, 8, {"c_attn"}));
    randomize_lora_B(*gpt);
    auto layer = std::dynamic_pointer_cast<peft::LoraLayer>(pm.tuner_layer("transformer.h.0.attn.c_attn"));
    Tensor delta = layer->delta_weight("default");  // (out, in) = (48, 16)
    CHECK(delta.shape() == Shape{48, 16});
    pm.merge_and_unload();
    nn::StateDict hf = gpt->hf_state_dict();
    Tensor w = hf.at("transformer.h.0.attn.c_attn.weight");  // Conv1D (in, out)
    CHECK(w.shape() == Shape{16, 48});
    Tensor expected = hf_before.at("transformer.h.0.attn.c_attn.weight") + delta.t();
    CHECK(all_close(w, expected, 1e-6, 1e-7));
}

TEST_CASE("LoRA: safe_merge refuses a non-finite result and leaves the base as it was") {
    auto gpt = tiny_gpt2();
    PeftModel pm(gpt, lora(4, 8, {"c_attn"}));
    Tensor B = gpt->parameter("transformer.h.1.attn.c_attn.lora_B.default.weight");
    {
        NoGradGuard g;
        raw::fill_(B, std::nan(""));
    }
    auto before = snapshot(*gpt);
    std::string err = error_of([&] { pm.merge_adapter({}, true); });
    CHECK(contains(err, "non-finite"));
    auto layer = pm.tuner_layer("transformer.h.1.attn.c_attn");
    CHECK_FALSE(layer->merged());
    CHECK(bit_equal(layer->base_layer->dense_weight(), before.at("transformer.h.1.attn.c_attn.base_layer.weight")));
}

TEST_CASE("LoRA: bias = all / lora_only unfreeze biases and save them; methods do not stack") {
    auto gpt = tiny_gpt2();
    LoraConfig c = lora(2, 2, {"c_attn"});
    c.bias = "lora_only";
    PeftModel pm(gpt, c);
    CHECK(gpt->parameter("transformer.h.0.attn.c_attn.base_layer.bias").requires_grad());
    CHECK_FALSE(gpt->parameter("transformer.h.0.mlp.c_fc.bias").requires_grad());
    CHECK(pm.count_parameters().trainable == 2 * (2 * (16 + 48) + 48));
    CHECK(pm.adapter_state_dict().count("base_model.model.transformer.h.0.attn.c_attn.base_layer.bias"));

    auto gpt2 = tiny_gpt2();
    c.bias = "all";
    PeftModel pm2(gpt2, c);
    CHECK(gpt2->parameter("transformer.h.0.mlp.c_fc.bias").requires_grad());
    CHECK(gpt2->parameter("transformer.ln_f.bias").requires_grad());
    CHECK_FALSE(gpt2->parameter("transformer.ln_f.weight").requires_grad());
    CHECK(pm2.adapter_state_dict().count("base_model.model.transformer.h.1.mlp.c_proj.bias"));

    peft::IA3Config ia3;
    ia3.target_modules = {"c_attn"};
    CHECK(contains(error_of([&] { pm2.add_adapter("ia3", ia3); }), "cannot be stacked"));
}

TEST_CASE("LoRA: a ViT adapter with a trained classifier copy round-trips through files") {
    auto vit = tiny_vit();
    Generator gen(3);
    Tensor images = randn({2, 1, 8, 8}, gen);
    LoraConfig c = lora(4, 4, R"(.*\.(query|value))");
    c.modules_to_save = {"classifier"};
    c.task_type = "SEQ_CLS";
    PeftModel pm(vit, c);
    randomize_lora_B(*vit);
    {
        NoGradGuard g;
        raw::copy_(vit->classifier->bias, randn({3}, gen));
    }
    Tensor out = vit->forward(images);
    std::string dir = tmp_dir("vit");
    pm.save_pretrained(dir);
    CHECK(nn::load_safetensors(dir + "/adapter_model.safetensors").tensors.size() == 2 * 2 * 2 + 2);
    auto fresh = tiny_vit();
    Tensor fresh_head = fresh->classifier->bias;
    auto loaded = PeftModel::from_pretrained(fresh, dir);
    CHECK(bit_equal(fresh->forward(images), out));
    CHECK(loaded->config().target_modules.is_regex);
    loaded->disable_adapters();
    CHECK(fresh->classifier->bias.same_storage(fresh_head));  // the original head is kept
    std::filesystem::remove_all(dir);
}

TEST_CASE("LoRA: modules_to_save copies live in the model's tree, so Module::to and state_dict see them") {
    auto vit = tiny_vit();
    Generator gen(3);
    Tensor images = randn({2, 1, 8, 8}, gen);
    Tensor base = vit->forward(images);
    LoraConfig c = lora(4, 4, {"query", "value"});
    c.modules_to_save = {"classifier"};
    PeftModel pm(vit, c);
    pm.add_adapter("other", c);
    nn::StateDict sd = vit->state_dict();
    for (const char* k : {"modules_to_save.original_module.classifier.weight", "modules_to_save.default.classifier.weight",
                          "modules_to_save.other.classifier.bias"})
        CHECK_MESSAGE(sd.count(k), k);
    {
        NoGradGuard g;  // tell the two copies apart
        raw::copy_(vit->get_submodule("modules_to_save.other.classifier")->named_parameters()[1].second,
                   randn({3}, gen));
    }
    vit->to(DType::F64);  // after the PeftModel: every original and copy converts, and stays tied to its slot
    for (auto& [name, t] : vit->named_parameters()) CHECK_MESSAGE(t.dtype() == DType::F64, name);
    for (auto& [name, t] : vit->state_dict()) CHECK_MESSAGE(t.dtype() == DType::F64, name);
    CHECK(vit->classifier->weight.same_storage(vit->state_dict().at("modules_to_save.default.classifier.weight")));
    Tensor images64 = images.to(DType::F64);
    Tensor y_default = vit->forward(images64);
    pm.set_adapter("other");
    CHECK(vit->classifier->bias.same_storage(vit->state_dict().at("modules_to_save.other.classifier.bias")));
    CHECK_FALSE(bit_equal(vit->forward(images64), y_default));
    pm.disable_adapters();
    CHECK(all_close(vit->forward(images64), base.to(DType::F64), 1e-5, 1e-6));
    pm.disable_adapters(false);
    pm.delete_adapter("other");
    pm.delete_adapter("default");
    CHECK(vit->state_dict().count("modules_to_save.original_module.classifier.weight") == 0);
    CHECK(all_close(vit->forward(images64), base.to(DType::F64), 1e-5, 1e-6));
}
