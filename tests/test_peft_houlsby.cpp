// Houlsby adapters: two per block after attention and the MLP, near the identity at init, the
// LayerNorms trainable; the module's forward is adapter-bert's formula; Pfeiffer's placement on
// the same site; several adapters and disabling; ViT; removal; counts on the full-size twins.
#include <cmath>

#include "peft/houlsby.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::HoulsbyConfig;
using peft::PeftModel;

namespace {

HoulsbyConfig houlsby(int64_t m) {
    HoulsbyConfig c;
    c.adapter_size = m;
    return c;
}

}  // namespace

TEST_CASE("Houlsby: after attention and after the MLP of every block, near the identity, LayerNorms train") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    PeftModel pm(gpt, houlsby(4));
    std::vector<std::string> sites;
    for (auto& [key, sa] : pm.site_adapters()) sites.push_back(key);
    CHECK(sites == std::vector<std::string>{"transformer.h.0.adapter_attn_post", "transformer.h.0.adapter_mlp_post",
                                            "transformer.h.1.adapter_attn_post", "transformer.h.1.adapter_mlp_post"});
    // W_down, W_up ~ truncated N(0, 1e-3^2): the logits move, but barely.
    Tensor y = gpt->forward_ids(ids);
    CHECK_FALSE(bit_equal(y, base));
    CHECK(max_abs_diff(y, base) < 1e-4);
    for (auto& [n, t] : gpt->named_parameters()) {
        const bool adapter = n.find(".adapter_") != std::string::npos;
        const bool norm = n.find("ln_") != std::string::npos;
        CHECK_MESSAGE(t.requires_grad() == (adapter || norm), n);
    }
    // 4 adapters of 2 * 16 * 4 + 4 + 16, and 5 LayerNorms of 32.
    CHECK(pm.count_parameters().trainable == 4 * 148 + 5 * 32);
    pm.disable_adapters();
    CHECK(bit_equal(gpt->forward_ids(ids), base));
    pm.disable_adapters(false);
    CHECK(error_of([&] { pm.merge_and_unload(); }).find("cannot be merged") != std::string::npos);
}

TEST_CASE("Houlsby: the module computes f + W_up gelu(W_down f + b_d) + b_u on the sublayer output") {
    Generator gen(3);
    peft::BottleneckAdapter a(8, 3, "gelu", 0.5, gen);
    Tensor f = randn({2, 5, 8}, gen);
    nn::SiteInputs in{randn({2, 5, 8}, gen), randn({2, 5, 8}, gen), f};  // residual, normed: unused
    Tensor h = gelu(matmul(f, a.adapter_down->weight.t()) + a.adapter_down->bias, GeluApprox::Tanh);
    Tensor want = f + matmul(h, a.adapter_up->weight.t()) + a.adapter_up->bias;
    CHECK(all_close(a.forward_site(in), want, 1e-6, 1e-6));
    // Truncated at 2 std.
    for (double v : a.adapter_down->weight.to_vector<double>()) CHECK(std::abs(v) <= 1.0);
}

TEST_CASE("Houlsby: Pfeiffer's placement is the same site module after the MLP only") {
    auto gpt = tiny_gpt2();
    HoulsbyConfig c = houlsby(4);
    c.mh_adapter = false, c.non_linearity = "relu", c.train_layernorms = false;
    PeftModel pm(gpt, c);
    std::vector<std::string> sites;
    for (auto& [key, sa] : pm.site_adapters()) sites.push_back(key);
    CHECK(sites == std::vector<std::string>{"transformer.h.0.adapter_mlp_post", "transformer.h.1.adapter_mlp_post"});
    CHECK(pm.count_parameters().trainable == 2 * 148);
}

TEST_CASE("Houlsby: two adapters at one site chain; deleting both empties the sites") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor base = gpt->forward_ids(ids);
    HoulsbyConfig c = houlsby(4);
    c.init_scale = 0.2;  // far from the identity, so each adapter shows
    PeftModel pm(gpt, c);
    Tensor one = gpt->forward_ids(ids);
    pm.add_adapter("other", c);
    CHECK(bit_equal(gpt->forward_ids(ids), one));  // added inactive
    pm.set_adapters({"default", "other"});
    Tensor both = gpt->forward_ids(ids);
    CHECK_FALSE(bit_equal(both, one));
    // The chain by hand at one site: other(default(f)).
    auto sa = pm.site_adapters().front().second;
    Generator gen(1);
    Tensor f = randn({1, 3, 16}, gen);
    nn::SiteInputs in{f, f, f};
    nn::SiteInputs mid = in;
    mid.output = sa->get("default")->forward_site(in);
    CHECK(bit_equal(sa->forward_site(in), sa->get("other")->forward_site(mid)));
    pm.delete_adapter("other");
    CHECK(bit_equal(gpt->forward_ids(ids), one));
    pm.unload();
    CHECK(gpt->block(0).adapter_attn_post == nullptr);
    CHECK(bit_equal(gpt->forward_ids(ids), base));
}

TEST_CASE("Houlsby: the same adapters on ViT's layers") {
    auto vit = tiny_vit();
    Generator gen(2);
    Tensor images = randn({2, 8, 8}, gen);
    Tensor base = vit->forward(images);
    PeftModel pm(vit, houlsby(4), "default", 0, "vit");
    CHECK(pm.site_adapters().size() == 4);
    CHECK(max_abs_diff(vit->forward(images), base) < 1e-4);
    CHECK(pm.count_parameters().trainable == 4 * 148 + 5 * 32);  // 2 layers x 2 LayerNorms + the final one
}

TEST_CASE("Houlsby: m = 64 on GPT-2 small and ViT-B/16 is 2,379,264, plus 38,400 LayerNorm values; Pfeiffer 894,528") {
    HoulsbyConfig c = houlsby(64);
    c.train_layernorms = false;
    CHECK(PeftModel(gpt2_twin(50257, 1024, 768, 12), c, "default", 0, "gpt2").count_parameters().trainable == 2379264);
    CHECK(PeftModel(vit_twin(224, 16, 3, 768, 12, 101), c, "default", 0, "vit").count_parameters().trainable == 2379264);
    c.train_layernorms = true;
    CHECK(PeftModel(gpt2_twin(50257, 1024, 768, 12), c, "default", 0, "gpt2").count_parameters().trainable ==
          2379264 + 38400);
    HoulsbyConfig p = houlsby(48);
    p.mh_adapter = false, p.non_linearity = "relu", p.train_layernorms = false;
    CHECK(PeftModel(gpt2_twin(50257, 1024, 768, 12), p, "default", 0, "gpt2").count_parameters().trainable == 894528);
}
