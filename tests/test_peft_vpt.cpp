// VPT on ViT: the token layout [CLS ; P ; patches] (prompts after the position embeddings, no
// positions of their own), deep prompts replacing the previous layer's prompt outputs, checked
// against the same forward written out by hand; the init bound; the file; GPT refuses it.
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "peft/vpt.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::PeftModel;
using peft::VptConfig;

namespace {

VptConfig vpt(int64_t n, bool deep) {
    VptConfig c;
    c.num_virtual_tokens = n, c.deep = deep;
    return c;
}

// The ViT forward with prompts, from its parameters: x0 = [CLS + pos_0 ; P ; patches + pos],
// then before layer l >= 1 the P slots hold the deep prompts of layer l (replace), or the deep
// prompts are put in beside the previous layer's prompt outputs (!replace, the wrong reading).
Tensor by_hand(models::ViT& vit, const Tensor& images, const Tensor& shallow, const Tensor& deep, bool replace = true) {
    const int64_t B = images.size(0), p = shallow.size(1), d = vit.config.dim;
    Tensor w = vit.parameter("vit.embeddings.patch_embeddings.projection.weight");
    Tensor b = vit.parameter("vit.embeddings.patch_embeddings.projection.bias");
    Tensor patches = matmul(vit.patchify(images), w.reshape({d, -1}).t()) + b;
    Tensor cls = vit.parameter("vit.embeddings.cls_token").expand({B, 1, d});
    Tensor x = cat({cls, patches}, 1) + vit.parameter("vit.embeddings.position_embeddings");
    x = cat({x.slice(1, 0, 1), shallow.expand({B, p, d}), x.slice(1, 1, x.size(1))}, 1);
    for (size_t l = 0; l < vit.num_layers(); ++l) {
        if (l > 0 && deep.defined()) {
            Tensor prompts = deep.slice(0, int64_t(l) - 1, int64_t(l)).expand({B, p, d});
            x = cat({x.slice(1, 0, 1), prompts, x.slice(1, replace ? 1 + p : 1, x.size(1))}, 1);
        }
        if (replace) REQUIRE(x.size(1) == 1 + p + vit.config.num_patches());
        x = vit.layer(l).forward(x);
    }
    return vit.classifier->forward(vit.get_submodule("vit.layernorm")->forward(x.select(1, 0)));
}

std::string tmp_dir(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("ember_vpt_" + name + "_" + std::to_string(::getpid()))).string();
}

}  // namespace

TEST_CASE("VPT: shallow and deep equal the forward written out by hand") {
    Generator gen(2);
    Tensor images = randn({2, 8, 8}, gen);
    for (bool deep : {false, true}) {
        CAPTURE(deep);
        auto vit = tiny_vit();
        PeftModel pm(vit, vpt(3, deep), "default", 0, "vit");
        auto m = std::dynamic_pointer_cast<peft::VisualPrompts>(vit->get_submodule("prompt_encoder.default"));
        REQUIRE(m);
        CHECK(m->prompt_embeddings.shape() == Shape{1, 3, 16});
        CHECK(m->deep_prompt_embeddings.defined() == deep);
        if (deep) CHECK(m->deep_prompt_embeddings.shape() == Shape{1, 3, 16});  // 2 layers: one deep set
        vit->eval();
        CHECK(all_close(vit->forward(images), by_hand(*vit, images, m->prompt_embeddings, m->deep_prompt_embeddings),
                        1e-5, 1e-6));
    }
}

TEST_CASE("VPT: deep prompts replace the previous layer's prompt outputs, they are not added beside them") {
    auto vit = tiny_vit();
    PeftModel pm(vit, vpt(2, true), "default", 0, "vit");
    auto m = std::dynamic_pointer_cast<peft::VisualPrompts>(vit->get_submodule("prompt_encoder.default"));
    vit->eval();
    Generator gen(5);
    Tensor images = randn({1, 8, 8}, gen);
    Tensor y = vit->forward(images);
    CHECK(all_close(by_hand(*vit, images, m->prompt_embeddings, m->deep_prompt_embeddings), y, 1e-5, 1e-6));
    Tensor carried = by_hand(*vit, images, m->prompt_embeddings, m->deep_prompt_embeddings, false);
    CHECK_FALSE(all_close(carried, y, 1e-4, 1e-4));
}

TEST_CASE("VPT: init bound sqrt(6 / (C P P + d)), file layout, load, and refusals") {
    auto vit = tiny_vit();  // 1 channel, patch 4, width 16: bound sqrt(6 / 32)
    PeftModel pm(vit, vpt(4, true), "default", 0, "vit");
    auto m = std::dynamic_pointer_cast<peft::VisualPrompts>(vit->get_submodule("prompt_encoder.default"));
    const double bound = std::sqrt(6.0 / 32.0);
    double largest = 0;
    for (double v : m->prompt_embeddings.to_vector<double>()) largest = std::max(largest, std::abs(v));
    CHECK(largest <= bound);
    CHECK(largest > 0.8 * bound);  // 64 uniform draws reach near the edge

    std::string dir = tmp_dir("file");
    pm.save_pretrained(dir);
    auto file = nn::load_safetensors(dir + "/adapter_model.safetensors").tensors;
    CHECK(file.size() == 2);
    CHECK(file.at("prompt_embeddings").shape() == Shape{1, 4, 16});
    CHECK(file.at("deep_prompt_embeddings").shape() == Shape{1, 4, 16});
    std::ifstream in(dir + "/adapter_config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    CHECK(j["peft_type"] == "VPT");
    CHECK(j["num_virtual_tokens"] == 4);
    CHECK(j["deep"] == true);
    Generator gen(3);
    Tensor images = randn({2, 8, 8}, gen);
    vit->eval();
    auto fresh = tiny_vit();
    PeftModel::from_pretrained(fresh, dir, "default", false, "vit");
    CHECK(bit_equal(fresh->forward(images), vit->forward(images)));
    std::filesystem::remove_all(dir);

    CHECK(error_of([&] { PeftModel(tiny_gpt2(), vpt(2, false)); }).find("no patches") != std::string::npos);
    VptConfig bad = vpt(2, false);
    bad.prompt_dropout = 1.5;
    CHECK(error_of([&] { PeftModel(tiny_vit(), bad, "default", 0, "vit"); }).find("prompt_dropout") != std::string::npos);
}
