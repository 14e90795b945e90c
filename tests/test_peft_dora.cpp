// DoRA (LoRA with use_dora): magnitude = W0's per-output-channel norms (peft's orientation:
// torch.linalg.norm(W, dim=1) of the (out, in) weight, after GPT-2's Conv1D transpose), a no-op at init up to rounding, float64 gradchecks with the norm detached (as
// peft) and not, merge == unmerged, saved as lora_magnitude_vector.
#include <cmath>

#include "peft/lora.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::LoraConfig;
using peft::PeftModel;

namespace {

LoraConfig dora(int64_t r = 3, double alpha = 6) {
    LoraConfig c;
    c.r = r;
    c.lora_alpha = alpha;
    c.use_dora = true;
    c.target_modules = {"x"};
    return c;
}

struct DoraFixture {
    Generator gen{12};
    std::shared_ptr<nn::Linear> lin;
    std::shared_ptr<peft::LoraLayer> layer;
    std::map<std::string, Tensor> shared;
    Tensor A, B, m;

    explicit DoraFixture(DType dt, bool random_B = true) {
        lin = std::make_shared<nn::Linear>(5, 4, true, gen);
        lin->to(dt);
        lin->requires_grad_(false);
        layer = std::make_shared<peft::LoraLayer>(lin);
        peft::AdapterContext ctx{gen, std::make_shared<Generator>(1), {}, shared};
        LoraConfig c = dora();
        if (random_B) c.init_lora_weights = "false";
        layer->add_adapter("default", c, "x", ctx);
        layer->set_active({"default"});
        A = layer->lora_A->get_as<nn::Linear>("default")->weight;
        B = layer->lora_B->get_as<nn::Linear>("default")->weight;
        m = layer->lora_magnitude_vector->get("default");
    }
};

}  // namespace

TEST_CASE("DoRA: magnitude starts at the per-output-channel norms of W0 (HF Conv1D column norms)") {
    DoraFixture f(DType::F64, false);
    CHECK(f.m.shape() == Shape{4});
    std::vector<double> W = f.lin->weight.to_vector<double>(), m = f.m.to_vector<double>();
    for (int o = 0; o < 4; ++o) {
        double s = 0;
        for (int i = 0; i < 5; ++i) s += W[size_t(o * 5 + i)] * W[size_t(o * 5 + i)];
        CHECK(m[size_t(o)] == doctest::Approx(std::sqrt(s)).epsilon(1e-12));
    }
    // On GPT-2 the magnitude has c_attn's out size and equals the column norms of the (in, out)
    // weight in the Hugging Face file (peft: the norm is per output feature after transposing).
    auto gpt = tiny_gpt2();
    Tensor hf_w = gpt->hf_state_dict().at("transformer.h.0.attn.c_attn.weight");  // (16, 48)
    LoraConfig c = dora();
    c.target_modules = {"c_attn"};
    PeftModel pm(gpt, c);
    Tensor mag = gpt->parameter("transformer.h.0.attn.c_attn.lora_magnitude_vector.default");
    CHECK(mag.shape() == Shape{48});
    Tensor col_norms = raw::pow_scalar(raw::sum(raw::mul(hf_w, hf_w), {0}), 0.5);
    CHECK(all_close(mag, col_norms, 1e-6));
}

// peft only promises a no-op up to rounding here (its m / ||W|| is 1 only up to rounding). In Ember m and the
// forward's norm are computed by the same operations on the same W0 (B = 0 adds exact zeros), so
// m / n is exactly 1 and the output is bit-identical; the test holds it to that.
TEST_CASE("DoRA: a no-op at init, bit for bit") {
    for (DType dt : {DType::F64, DType::F32}) {
        DoraFixture f(dt, false);
        Tensor x = randn({3, 5}, f.gen, dt);
        CHECK(bit_equal(f.layer->forward(x), f.lin->forward(x)));
    }
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor before = gpt->forward_ids(ids);
    LoraConfig c = dora();
    c.target_modules = {"c_attn", "c_fc"};
    PeftModel pm(gpt, c);
    CHECK(bit_equal(gpt->forward_ids(ids), before));
}

TEST_CASE("DoRA: the forward equals m / ||W0 + sBA||_row * (W0 + sBA) x + b") {
    DoraFixture f(DType::F64);
    Tensor x = randn({3, 5}, f.gen, DType::F64);
    Tensor W = f.lin->weight + matmul(f.B, f.A) * 2.0;  // s = 6 / 3
    Tensor n = sqrt(sum(W * W, {1}, true));                  // (4, 1)
    Tensor expected = nn::linear(x, W * (f.m.reshape({4, 1}) / n), f.lin->bias);
    CHECK(max_abs_diff(f.layer->forward(x), expected) < 1e-12);
}

TEST_CASE("DoRA: float64 gradchecks -- full derivative, and peft's detached norm") {
    DoraFixture f(DType::F64);
    {
        NoGradGuard g;  // a magnitude away from the norms, so m/n - 1 is not ~0
        raw::copy_(f.m, raw::mul_scalar(f.m, 1.3));
    }
    Tensor x = randn({3, 5}, f.gen, DType::F64).set_requires_grad();
    auto fwd = [&](const std::vector<Tensor>&) { return f.layer->forward(x); };

    // Through the norm too: the exact derivative of W' x.
    f.layer->dora_detach_norm = false;
    expect_gradcheck(fwd, {f.A, f.B, f.m, x});

    // peft's (detached) forward is exact in m and in x; its A/B gradient is the gradient of the
    // same expression with n held constant -- checked against that expression written out.
    f.layer->dora_detach_norm = true;
    f.A.set_requires_grad(false);
    f.B.set_requires_grad(false);
    expect_gradcheck(fwd, {f.m, x});
    f.A.set_requires_grad(true);
    f.B.set_requires_grad(true);

    Generator rg(3);
    Tensor R = randn({3, 4}, rg, DType::F64);
    auto grads = [&](const std::function<Tensor()>& out) {
        f.A.zero_grad(), f.B.zero_grad();
        sum(out() * R).backward();
        return std::make_pair(f.A.grad(), f.B.grad());
    };
    Tensor n_const;
    {
        NoGradGuard g;
        Tensor W = raw::add(f.lin->weight, raw::mul_scalar(raw::matmul(f.B, f.A), 2.0));
        n_const = raw::pow_scalar(raw::sum(raw::mul(W, W), {1}), 0.5);
    }
    auto detached = grads([&] { return f.layer->forward(x); });
    auto by_hand = grads([&] {
        Tensor scale = f.m / n_const;
        Tensor lora = nn::linear(nn::linear(x, f.A, Tensor()), f.B, Tensor()) * 2.0;
        return f.lin->forward(x) + (scale - 1.0) * nn::linear(x, f.lin->weight, Tensor()) + scale * lora;
    });
    f.layer->dora_detach_norm = false;
    auto through = grads([&] { return f.layer->forward(x); });
    CHECK(max_abs_diff(detached.first, by_hand.first) < 1e-12);
    CHECK(max_abs_diff(detached.second, by_hand.second) < 1e-12);
    CHECK(max_abs_diff(detached.first, through.first) > 1e-6);  // the detach is real
}

TEST_CASE("DoRA: merged equals unmerged, unmerge is exact, the magnitude is saved by peft's name") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    LoraConfig c = dora(4, 8);
    c.target_modules = {"c_attn", "mlp.c_proj"};
    PeftModel pm(gpt, c);
    auto initial = snapshot(*gpt);
    train_gpt_steps(*gpt, 10);
    gpt->eval();
    for (auto& [n, t] : gpt->named_parameters()) {
        bool adapter = n.find("lora_") != std::string::npos;
        CHECK_MESSAGE(bit_equal(t, initial.at(n)) != adapter, n);  // adapters (m too) move, the base does not
        CHECK(t.grad().defined() == adapter);
    }
    auto before = snapshot(*gpt);
    Tensor out = gpt->forward_ids(ids);
    pm.merge_adapter();
    CHECK(all_close(gpt->forward_ids(ids), out, 1e-5, 1e-6));
    pm.unmerge_adapter();
    for (auto& [n, t] : gpt->named_parameters()) CHECK_MESSAGE(bit_equal(t, before.at(n)), n);
    CHECK(pm.count_parameters().trainable == 2 * (4 * (16 + 48) + 48) + 2 * (4 * (64 + 16) + 16));

    nn::StateDict sd = pm.adapter_state_dict();
    CHECK(sd.size() == 12);
    CHECK(sd.at("base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector").shape() == Shape{48});
    CHECK(sd.at("base_model.model.transformer.h.1.mlp.c_proj.lora_magnitude_vector").shape() == Shape{16});
    // The trained magnitude loads into a fresh model and gives the same logits.
    auto fresh = tiny_gpt2();
    PeftModel pm2(fresh, c);
    pm2.load_adapter_state_dict(sd);
    fresh->eval();
    CHECK(bit_equal(fresh->forward_ids(ids), out));
}
