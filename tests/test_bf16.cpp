// bf16 weights (tensor/bf16.h, nn/bf16_linear.h): rounding as PyTorch rounds, the vdpbf16ps GEMM
// and the portable path against an f64 product of the same bf16 values, on awkward sizes and
// strides, and the frozen Bf16Linear under LoRA: gradients, merging, frozen bits.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "models/gpt.h"
#include "nn/bf16_linear.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "peft/qlora.h"
#include "tensor/parallel.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

uint32_t bits_of(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
}

float float_of(uint32_t b) {
    float x;
    std::memcpy(&x, &b, 4);
    return x;
}

}  // namespace

TEST_CASE("bf16: rounding is to nearest even, as torch's .to(bfloat16)") {
    CHECK(float_to_bf16(1.0f) == 0x3f80);
    CHECK(float_to_bf16(float_of(0x3f808000)) == 0x3f80);  // a tie: down to the even 0x3f80
    CHECK(float_to_bf16(float_of(0x3f818000)) == 0x3f82);  // a tie: up to the even 0x3f82
    CHECK(float_to_bf16(float_of(0x3f808001)) == 0x3f81);  // past the tie
    CHECK(float_to_bf16(float_of(0x3f807fff)) == 0x3f80);
    CHECK(float_to_bf16(-2.5f) == 0xc020);
    CHECK(float_to_bf16(-0.0f) == 0x8000);
    CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to infinity
    CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isnan(bf16_to_float(float_to_bf16(float_of(0x7f800001)))));  // a NaN whose top half is inf's
    for (float x : {0.1f, -3.14159f, 1e-30f, 65504.0f})
        CHECK(uint16_t(bits_of(bf16_to_float(float_to_bf16(x))) >> 16) == float_to_bf16(x));

    Tensor w = seeded_normal({3, 5}, 1);
    Bf16Weight b = to_bf16(w);
    CHECK(b.rows == 3);
    CHECK(b.cols == 5);
    std::vector<float> wv = w.to_vector<float>(), back = from_bf16(b).to_vector<float>();
    for (size_t i = 0; i < wv.size(); ++i) {
        CHECK(back[i] == bf16_to_float(float_to_bf16(wv[i])));
        CHECK(std::abs(back[i] - wv[i]) <= std::abs(wv[i]) * (1.0 / 256));  // 8 significant bits
    }
    CHECK(raw::round_to_bf16(w).to_vector<float>() == back);
}

TEST_CASE("bf16: both products equal an f64 product of the bf16 values, on awkward sizes") {
    const bool kernel = cpu::cpu_has_avx512_bf16();
    MESSAGE(std::string(kernel ? "this CPU has AVX-512 BF16: the vdpbf16ps kernel and the portable path are checked"
                    : "no AVX-512 BF16 here: only the portable path is checked"));
    struct Size { int64_t M, N, K; };
    // Tiles of 8 x 32, slabs of 512 depths, column bands when N > M: sizes off all of them, odd K.
    for (Size s : {Size{1, 1, 1}, Size{7, 33, 5}, Size{9, 31, 513}, Size{130, 70, 1030}, Size{17, 2100, 9},
                   Size{64, 96, 64}}) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        Bf16Weight w = to_bf16(seeded_normal({s.N, s.K}, 2));   // (out, in) = (N, K)
        Bf16Weight wt = to_bf16(seeded_normal({s.K, s.N}, 3));  // for the input gradient: (out, in) = (K, N)
        Tensor x = seeded_normal({s.M, s.K}, 4);
        Tensor x_strided = raw::transpose(seeded_normal({s.K, s.M}, 5), 0, 1);  // columns contiguous
        for (bool use_kernel : {true, false}) {
            if (use_kernel && !kernel) continue;
            CAPTURE(use_kernel);
            cpu::allow_avx512_bf16(use_kernel);
            for (const Tensor& a : {x, x_strided}) {
                Tensor a16 = raw::to_dtype(raw::round_to_bf16(a), DType::F64);
                Tensor w64 = from_bf16(w, DType::F64), wt64 = from_bf16(wt, DType::F64);
                // forward: a (M, K) W^T
                Tensor want = raw::matmul(a16, raw::transpose(w64, 0, 1));
                CHECK(error_over_magnitude(raw::bf16_matmul(a, w), want, a16, raw::transpose(w64, 0, 1)) < 1e-5);
                // input gradient: a (M, K) W with W (K, N)
                Tensor want_t = raw::matmul(a16, wt64);
                CHECK(error_over_magnitude(raw::bf16_matmul_t(a, wt), want_t, a16, wt64) < 1e-5);
            }
        }
        cpu::allow_avx512_bf16(true);
    }
}

TEST_CASE("bf16: the kernel gives the same bits on one thread and on two") {
    Bf16Weight w = to_bf16(seeded_normal({300, 200}, 6));
    Tensor x = seeded_normal({70, 200}, 7);
    const int before = num_threads();
    set_num_threads(1);
    std::vector<float> one = raw::bf16_matmul(x, w).to_vector<float>();
    set_num_threads(2);
    std::vector<float> two = raw::bf16_matmul(x, w).to_vector<float>();
    set_num_threads(before);
    CHECK(one == two);
}

TEST_CASE("bf16: the products refuse what does not fit, naming the op and the shapes") {
    Bf16Weight w = to_bf16(seeded_normal({4, 6}, 8));
    CHECK(contains(error_of([&] { raw::bf16_matmul(seeded_normal({3, 5}, 9), w); }), "bf16_matmul: input of shape (3, 5)"));
    CHECK(contains(error_of([&] { raw::bf16_matmul_t(seeded_normal({3, 6}, 9), w); }), "its last dim must be 4"));
    CHECK(contains(error_of([&] { raw::bf16_matmul(seeded_normal({6}, 9), w); }), "needs a 2-D input"));
    CHECK(contains(error_of([&] { to_bf16(seeded_normal({6}, 9)); }), "to_bf16: needs a 2-D weight"));
    CHECK(contains(error_of([&] { raw::bf16_matmul(zeros({2, 6}, DType::I32), w); }),
                   "bf16_matmul: needs a floating-point tensor (f32 or f64), got i32"));
}

TEST_CASE("bf16: Bf16Linear's input gradient passes a float64 gradcheck; its bias and weight stay frozen") {
    Generator gen(10);
    nn::Linear linear(24, 10, true, gen);
    auto bl = nn::Bf16Linear::from_linear(linear);
    CHECK(bl->num_parameters(/*trainable_only=*/true) == 0);
    Tensor x = leaf({2, 3, 24}, 11);
    expect_gradcheck([&](const std::vector<Tensor>& in) { return bl->forward(in[0]); }, {x});
}

TEST_CASE("bf16: Bf16Linear in f32 is a Linear of the rounded weight fed the rounded input") {
    Generator gen(12);
    nn::Linear linear(96, 40, true, gen);
    auto bl = nn::Bf16Linear::from_linear(linear);
    Tensor x = seeded_normal({3, 7, 96}, 13);
    x.set_requires_grad();
    Tensor y = bl->forward(x);
    Tensor w = from_bf16(bl->weight);
    Tensor want = raw::add(raw::matmul(raw::round_to_bf16(x), raw::transpose(w, 0, 1)), linear.bias);
    CHECK(max_abs_diff(y, want) < 1e-5);
    CHECK(max_abs_diff(y, linear.forward(x)) > 1e-4);  // and it is not the f32 Linear
    Tensor g = seeded_normal({3, 7, 40}, 14);
    y.backward(g);
    CHECK(max_abs_diff(x.grad(), raw::matmul(raw::round_to_bf16(g), w)) < 1e-5);
}

TEST_CASE("bf16: LoRA on a bf16 base: the base's bits unchanged by training, the merge exact, unmerge restores") {
    models::GPTConfig c = models::GPTConfig::llama(64, 32, 64, 2, 4, 2, 128);
    c.tie_embeddings = false;
    auto gpt = std::make_shared<models::GPT>(c, 1);
    Generator id_gen(15);
    Tensor ids = randint(0, 64, {2, 9}, id_gen);
    Tensor logits_f32 = gpt->forward_ids(ids).detach();
    CHECK(nn::cast_linears_to_bf16(*gpt, [](const std::string& n) { return n == "lm_head"; }) == 14);
    int cast = 0;
    for (auto& [name, m] : gpt->named_modules()) cast += std::dynamic_pointer_cast<nn::Bf16Linear>(m) != nullptr;
    CHECK(cast == 14);
    Tensor logits_bf16 = gpt->forward_ids(ids).detach();
    const double change = max_abs_diff(logits_bf16, logits_f32);
    INFO("bf16 base against f32: max |logit difference| ", change);
    CHECK(change > 0);
    CHECK(change < 0.05);

    peft::LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.target_modules = {"q_proj", "v_proj", "down_proj"};
    const int64_t f32_count = models::GPT(c, 1).num_parameters();
    peft::PeftModel pm(gpt, lc, "default", 2, "llama");
    CHECK(pm.count_parameters().all == f32_count + pm.count_parameters().trainable);  // bf16 weights count
    auto base = std::dynamic_pointer_cast<nn::Bf16Linear>(gpt->get_submodule("model.layers.0.self_attn.q_proj.base_layer"));
    REQUIRE(base);
    std::vector<int32_t> bits_before = base->weight.bits.to_vector<int32_t>();

    std::vector<Tensor> params;
    for (Tensor& p : gpt->parameters())
        if (p.requires_grad()) params.push_back(p);
    nn::AdamW opt(params, nn::AdamWOptions{});
    for (int step = 0; step < 3; ++step) {
        opt.zero_grad();
        Tensor y = gpt->forward_ids(ids);
        nn::cross_entropy(y.reshape({-1, 64}), raw::contiguous(ids).reshape({-1})).backward();
        opt.step();
    }
    CHECK(base->weight.bits.to_vector<int32_t>() == bits_before);
    Tensor unmerged = gpt->forward_ids(ids).detach();
    CHECK(max_abs_diff(unmerged, logits_bf16) > 0);  // the adapters moved

    auto lora = std::dynamic_pointer_cast<peft::LoraLayer>(gpt->get_submodule("model.layers.0.self_attn.q_proj"));
    REQUIRE(lora);
    Tensor delta = lora->delta_weight("default");  // s B A
    CHECK(max_abs_diff(delta, zeros_like(delta)) > 0);
    Tensor want = raw::add(from_bf16(base->weight), delta);

    pm.merge_adapter();
    auto merged = std::dynamic_pointer_cast<nn::Linear>(gpt->get_submodule("model.layers.0.self_attn.q_proj.base_layer"));
    REQUIRE(merged);  // an f32 Linear of W + s B A
    CHECK(max_abs_diff(merged->weight, want) == 0);
    // Its logits differ from the unmerged ones only by bf16's rounding of the input, which the
    // merged f32 Linear no longer does.
    const double merge_gap = max_abs_diff(gpt->forward_ids(ids), unmerged);
    INFO("merged against unmerged: max |logit difference| ", merge_gap);
    CHECK(merge_gap < 0.005);
    pm.unmerge_adapter();
    CHECK(max_abs_diff(gpt->forward_ids(ids), unmerged) == 0);
}

TEST_CASE("bf16: QLoRA refuses a bf16 base (it would have no f32 Linears to quantize)") {
    models::GPTConfig c = models::GPTConfig::llama(64, 32, 64, 2, 4, 2, 128);
    auto gpt = std::make_shared<models::GPT>(c, 1);
    gpt->cast_to_bf16();
    peft::QLoraConfig qc;
    CHECK(contains(error_of([&] { peft::PeftModel pm(gpt, qc, "default", 1, "llama"); }),
                   "model.layers.0.self_attn.q_proj is a Bf16Linear"));
}

TEST_CASE("bf16: float64 gradcheck of LoRA over a Bf16Linear w.r.t. A and B") {
    Generator gen(16);
    nn::Linear linear(20, 12, true, gen);
    auto bl = nn::Bf16Linear::from_linear(linear);
    bl->input_dtype = DType::F64;
    Tensor x = seeded_normal({2, 3, 20}, 17).to(DType::F64);
    Tensor bias64 = bl->bias.to(DType::F64);
    expect_gradcheck(
        [&](const std::vector<Tensor>& in) {
            return nn::bf16_linear(x, bl->weight, bias64) + matmul(matmul(x, in[0].t()), in[1].t()) * 2.0;
        },
        {leaf({4, 20}, 18), leaf({12, 4}, 19)});
}

TEST_CASE("bf16: GPT::cast_to_bf16 casts the body's Linears and runs the tied head on a frozen bf16 copy") {
    auto gpt = std::make_shared<models::GPT>(models::GPTConfig::gpt2(80, 16, 32, 2, 4), 3);
    Generator id_gen(20);
    Tensor ids = randint(0, 80, {2, 7}, id_gen);
    Tensor logits_f32 = gpt->forward_ids(ids).detach();
    CHECK(gpt->cast_to_bf16() == 8);  // c_attn, c_proj, c_fc, mlp c_proj in each of 2 blocks
    CHECK(gpt->bf16_head());
    // A fresh model trains everything, the tied embedding too: the head's copy would go stale.
    CHECK(contains(error_of([&] { gpt->forward_ids(ids); }), "the tied token embedding) now trains"));
    {
        NoGradGuard no_grad;  // evaluating records no graph: allowed
        CHECK(max_abs_diff(gpt->forward_ids(ids), logits_f32) < 0.02);
    }
    gpt->requires_grad_(false);
    Tensor logits = gpt->forward_ids(ids);
    const double change = max_abs_diff(logits, logits_f32);
    INFO("max |logit difference| ", change);
    CHECK(change > 0);
    CHECK(change < 0.02);
    // The head is the bf16 product of the final hidden states with the rounded embedding.
    Tensor h = gpt->hidden_states(ids);
    Tensor wte = from_bf16(to_bf16(gpt->lm_head_weight()));
    CHECK(max_abs_diff(logits, raw::matmul(raw::round_to_bf16(h), raw::transpose(wte, 0, 1))) < 1e-5);
    // A model file of f32 tensors cannot hold the bf16 weights: saving it is refused, not cut short.
    const std::string dir = "/tmp/ember_test_bf16_save";
    std::filesystem::remove_all(dir);
    CHECK(contains(error_of([&] { gpt->save_pretrained(dir); }),
                   "GPT::save_pretrained: transformer.h.0.attn.c_attn is a Bf16Linear"));
    CHECK(!std::filesystem::exists(dir));
}
