// QLoRA's pieces over an NF4 base (peft/qlora.h): float64 gradients w.r.t. A and B, the two
// merges, and the preparation of a GPT (every Linear 4-bit but the head).
#include "models/gpt.h"
#include "peft/qlora.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;


TEST_CASE("qlora: float64 gradcheck of the forward w.r.t. A and B (base as its f64 values)") {
    const int64_t out = 10, in = 64, r = 4;
    QuantizedWeight w = quantize_nf4(seeded_normal({out, in}, 1, 0.1));
    Tensor bias = seeded_normal({out}, 2, 0.1);
    Tensor x = seeded_normal({2, 3, in}, 3).to(DType::F64);
    expect_gradcheck(
        [&](const std::vector<Tensor>& in_) { return peft::qlora_forward(x, w, bias, in_[0], in_[1], 16.0 / r); },
        {leaf({r, in}, 4), leaf({out, r}, 5)});
}

TEST_CASE("qlora: merging into the dequantized base is exact; requantizing reports its error") {
    const int64_t out = 64, in = 128, r = 8;
    QuantizedWeight w = quantize_nf4(seeded_normal({out, in}, 6, 0.02));
    Tensor A = seeded_normal({r, in}, 7, 0.05), B = seeded_normal({out, r}, 8, 0.05);
    const double s = 16.0 / r;
    Tensor x = seeded_normal({5, in}, 9);
    Tensor unmerged = peft::qlora_forward(x, w, Tensor(), A, B, s);
    Tensor W = peft::merge_lora_dequantized(w, A, B, s);
    Tensor merged = raw::matmul(x, raw::transpose(W, 0, 1));
    double scale = 0;
    for (double v : unmerged.to_vector<double>()) scale = std::max(scale, std::abs(v));
    CHECK(max_abs_diff(merged, unmerged) < 1e-5 * scale);
    RequantizeError err;
    QuantizedWeight q = peft::merge_lora_requantized(w, A, B, s, &err);
    INFO("requantizing merge: max |error| ", err.max_abs, ", rms ", err.rms, ", max |s B A| ", err.max_abs_delta);
    CHECK(err.max_abs > 0);
    CHECK(max_abs_diff(dequantize(q), W) == doctest::Approx(err.max_abs));
    CHECK(contains(error_of([&] { peft::merge_lora_dequantized(w, B, A, s); }), "do not fit"));
}

TEST_CASE("qlora: preparing a LLaMA-style GPT quantizes every Linear but the head") {
    models::GPTConfig c = models::GPTConfig::llama(64, 32, 64, 2, 4, 2, 128);
    c.tie_embeddings = false;
    auto gpt = std::make_shared<models::GPT>(c, 1);
    CHECK(peft::quantize_for_qlora(*gpt) == 14);
    int quantized = 0, plain = 0;
    for (auto& [name, m] : gpt->named_modules()) {
        quantized += std::dynamic_pointer_cast<nn::QuantLinear>(m) != nullptr;
        plain += std::dynamic_pointer_cast<nn::Linear>(m) != nullptr;
    }
    CHECK(quantized == 14);
    CHECK(plain == 1);  // lm_head
    CHECK(peft::QLoraDefaults::r == 64);
    CHECK(peft::QLoraDefaults::lora_alpha == 16);
    // model.safetensors holds f32 tensors: a 4-bit model is refused there (nn::save_quantized writes it).
    CHECK(contains(error_of([&] { gpt->save_pretrained("/tmp/ember_test_qlora_save"); }),
                   "model.layers.0.self_attn.q_proj is a QuantLinear"));
}
