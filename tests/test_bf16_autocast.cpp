// bf16 autocast (nn/bf16_autocast.h): inside the scope a Linear's forward and its three gradients
// are products of bf16-rounded operands with f32 sums. Each is checked against the f64 product of
// the same rounded values, with the vdpbf16ps kernels and with the portable path; outside the
// scope, and for f64, nothing changes; a small GPT trains under it as it does in f32.
#include <cmath>
#include <map>

#include "models/gpt.h"
#include "nn/bf16_autocast.h"
#include "nn/layers.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "tensor/bf16.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

// The f64 values a bf16 product meets: t rounded to bf16.
Tensor rounded64(const Tensor& t) { return raw::to_dtype(raw::round_to_bf16(t), DType::F64); }

Tensor f64(const Tensor& t) { return raw::to_dtype(t, DType::F64); }

Tensor f32_leaf(const Shape& shape, uint64_t seed, double scale) {
    Tensor t = seeded_normal(shape, seed, scale);
    t.set_requires_grad();
    return t;
}

}  // namespace

TEST_CASE("bf16 autocast: a Linear's forward and three gradients are products of bf16-rounded operands") {
    // {M, in, out}: odd depths and edges of every tile; 8-row panels of dy^T, whole and partial.
    const int64_t shapes[][3] = {{37, 45, 29}, {8, 16, 8}, {130, 67, 40}, {3, 5, 70}};
    for (bool vdpbf16ps : {true, false}) {
        if (vdpbf16ps && !cpu::cpu_has_avx512_bf16()) continue;
        cpu::allow_avx512_bf16(vdpbf16ps);
        for (const auto& s : shapes) {
            const int64_t M = s[0], in = s[1], out = s[2];
            CAPTURE(vdpbf16ps);
            CAPTURE(M);
            CAPTURE(in);
            CAPTURE(out);
            Tensor x = f32_leaf({M, in}, 1, 1.0), w = f32_leaf({out, in}, 2, 0.3), b = f32_leaf({out}, 3, 0.1);
            Tensor dy = seeded_normal({M, out}, 4);
            Tensor y;
            {
                nn::Bf16Autocast autocast;
                y = nn::linear(x, w, b);
            }
            y.backward(dy);  // outside the scope: the node keeps its bf16 copies

            const Tensor x16 = rounded64(x), w16 = rounded64(w), dy16 = rounded64(dy);
            const Tensor wt16 = raw::transpose(w16, 0, 1);
            Tensor y_want = raw::add(raw::matmul(x16, wt16), f64(b));
            CHECK(error_over_magnitude(y, y_want, x16, wt16) < 1e-5);
            // and not the f32 product: the rounding is really there
            CHECK(error_over_magnitude(y, raw::add(raw::matmul(f64(x), raw::transpose(f64(w), 0, 1)), f64(b)),
                                       x16, wt16) > 1e-4);
            CHECK(error_over_magnitude(x.grad(), raw::matmul(dy16, w16), dy16, w16) < 1e-5);
            const Tensor dyt16 = raw::transpose(dy16, 0, 1);
            CHECK(error_over_magnitude(w.grad(), raw::matmul(dyt16, x16), dyt16, x16) < 1e-5);
            CHECK(max_abs_diff(b.grad(), raw::sum(f64(dy), {0})) < 1e-5);  // f32 sums of f32 dy
        }
    }
    cpu::allow_avx512_bf16(true);
}

TEST_CASE("bf16 autocast: a frozen weight gets no gradient, and leading dims are kept") {
    Tensor x = f32_leaf({2, 3, 12}, 5, 1.0), w = seeded_normal({9, 12}, 6, 0.3);
    Tensor y;
    {
        nn::Bf16Autocast autocast;
        y = nn::linear(x, w, Tensor());
    }
    CHECK(y.shape() == Shape{2, 3, 9});
    Tensor dy = seeded_normal({2, 3, 9}, 7);
    y.backward(dy);
    CHECK_FALSE(w.grad().defined());
    Tensor dy16 = rounded64(dy.reshape({6, 9})), w16 = rounded64(w);
    CHECK(error_over_magnitude(x.grad().reshape({6, 12}), raw::matmul(dy16, w16), dy16, w16) < 1e-5);
}

TEST_CASE("bf16 autocast: only f32 products inside the scope change") {
    Tensor x = seeded_normal({5, 12}, 8), w = seeded_normal({7, 12}, 9, 0.3), b = seeded_normal({7}, 10);
    const Tensor plain = raw::add(raw::matmul(x, raw::transpose(w, 0, 1)), b);
    CHECK_FALSE(nn::Bf16Autocast::is_enabled());
    CHECK(bit_equal(nn::linear(x, w, b), plain));
    {
        nn::Bf16Autocast autocast;
        CHECK(nn::Bf16Autocast::is_enabled());
        CHECK_FALSE(bit_equal(nn::linear(x, w, b), plain));
        {
            nn::Bf16Autocast off(false);  // a scope may switch it off again
            CHECK(bit_equal(nn::linear(x, w, b), plain));
        }
        CHECK(nn::Bf16Autocast::is_enabled());
        // f64 (a gradient check) is never rounded
        Tensor x64 = f64(x), w64 = f64(w), b64 = f64(b);
        CHECK(bit_equal(nn::linear(x64, w64, b64), raw::add(raw::matmul(x64, raw::transpose(w64, 0, 1)), b64)));
    }
    CHECK_FALSE(nn::Bf16Autocast::is_enabled());
    CHECK(bit_equal(nn::linear(x, w, b), plain));
}

TEST_CASE("bf16 autocast: the weight-gradient product refuses operands that do not fit") {
    Bf16Weight x16 = to_bf16(seeded_normal({6, 4}, 11));
    std::string e = error_of([&] { raw::bf16_weight_grad(seeded_normal({5, 3}, 12), x16); });
    CHECK(contains(e, "bf16_weight_grad"));
    CHECK(contains(e, "(5, 3)"));
    CHECK(contains(e, "bf16 (6, 4)"));
    e = error_of([&] { raw::bf16_weight_grad(raw::to_dtype(seeded_normal({6, 3}, 12), DType::F64), x16); });
    CHECK(contains(e, "f32"));
}

TEST_CASE("bf16 autocast: a small GPT trains as it does in f32") {
    models::GPTConfig c = models::GPTConfig::gpt2(64, 32, 64, 2, 4);
    Generator id_gen(13);
    Tensor ids = randint(0, 64, {4, 17}, id_gen);
    Tensor x = raw::contiguous(raw::slice(ids, 1, 0, 16)), t = raw::contiguous(raw::slice(ids, 1, 1, 17));
    auto train = [&](bool autocast, std::vector<double>& losses, Tensor& first_grad) {
        models::GPT gpt(c, 1);
        nn::AdamWOptions o;
        o.lr = 3e-3;
        nn::AdamW opt(gpt.parameters(), o);
        for (int step = 0; step < 30; ++step) {
            opt.zero_grad();
            Tensor loss;
            {
                nn::Bf16Autocast scope(autocast);
                loss = nn::cross_entropy(gpt.forward_ids(x).reshape({-1, 64}), t.reshape({-1}));
            }
            loss.backward();
            if (step == 0)
                for (const auto& [name, p] : gpt.named_parameters())
                    if (name.find("h.0.attn.c_attn.weight") != std::string::npos) first_grad = raw::clone(p.grad());
            losses.push_back(loss.item<double>());
            opt.step();
        }
    };
    std::vector<double> f32_losses, bf16_losses;
    Tensor f32_grad, bf16_grad;
    train(false, f32_losses, f32_grad);
    train(true, bf16_losses, bf16_grad);

    // The first gradients point the same way: the cosine of a layer's weight gradients.
    REQUIRE(f32_grad.defined());
    Tensor a = f64(f32_grad), g = f64(bf16_grad);
    const double cosine = raw::sum(raw::mul(a, g), {}).item<double>() /
                          std::sqrt(raw::sum(raw::mul(a, a), {}).item<double>() * raw::sum(raw::mul(g, g), {}).item<double>());
    INFO("cosine of the first c_attn gradients: ", cosine);
    CHECK(cosine > 0.999);
    CHECK(max_abs_diff(f32_grad, bf16_grad) > 0);  // the products were rounded
    INFO("losses f32 ", f32_losses.front(), " -> ", f32_losses.back(), ", bf16 ", bf16_losses.front(), " -> ",
         bf16_losses.back());
    CHECK(std::abs(bf16_losses.front() - f32_losses.front()) < 0.01);
    CHECK(bf16_losses.back() < f32_losses.front() - 1.0);  // it learns the batch
    CHECK(std::abs(bf16_losses.back() - f32_losses.back()) < 0.05 * f32_losses.back() + 0.02);
}

TEST_CASE("bf16 autocast: LoRA under it trains the adapters and leaves every frozen weight's bits") {
    auto gpt = std::make_shared<models::GPT>(models::GPTConfig::gpt2(64, 32, 32, 2, 4), 2);
    peft::LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.target_modules = {"c_attn"};
    peft::PeftModel pm(gpt, lc, "default", 3, "gpt2");
    std::vector<std::pair<std::string, Tensor>> frozen, trained;
    for (const auto& [name, p] : gpt->named_parameters())
        (p.requires_grad() ? trained : frozen).push_back({name, raw::clone(p)});
    REQUIRE(trained.size() == 4);  // lora_A and lora_B of two layers
    std::vector<Tensor> params;
    for (Tensor& p : gpt->parameters())
        if (p.requires_grad()) params.push_back(p);
    nn::AdamW opt(params, nn::AdamWOptions{});
    Generator id_gen(17);
    Tensor ids = randint(0, 64, {2, 9}, id_gen);
    for (int step = 0; step < 3; ++step) {
        opt.zero_grad();
        Tensor loss;
        {
            nn::Bf16Autocast autocast;
            loss = nn::cross_entropy(gpt->forward_ids(ids).reshape({-1, 64}), raw::contiguous(ids).reshape({-1}));
        }
        loss.backward();
        opt.step();
    }
    std::map<std::string, Tensor> now;
    for (const auto& [name, p] : gpt->named_parameters()) now[name] = p;
    for (const auto& [name, before] : frozen) {
        CAPTURE(name);
        CHECK(bit_equal(now[name], before));
    }
    for (const auto& [name, before] : trained) {
        CAPTURE(name);
        CHECK(max_abs_diff(now[name], before) > 0);
    }
}
