// QA-LoRA's pooled adapter over an INT4 base (peft/qalora.h): float64 gradients w.r.t. A and B,
// and the zero-point merge: merged == unmerged to f32 rounding with the codes unchanged.
#include "peft/qalora.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;


TEST_CASE("qalora: group_mean averages each group of L inputs, with its gradient") {
    Tensor x = tensor({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
    CHECK(peft::group_mean(x, 2).to_vector<float>() == std::vector<float>{1.5f, 3.5f, 5.5f, 7.5f});
    expect_gradcheck([](const std::vector<Tensor>& in) { return peft::group_mean(in[0], 3); },
                     {leaf({2, 5, 12}, 1)});
    CHECK(contains(error_of([&] { peft::group_mean(x, 3); }), "multiple of the group size 3"));
}

TEST_CASE("qalora: float64 gradcheck of the forward w.r.t. A and B (base as its f64 values)") {
    const int64_t out = 12, in = 32, L = 8, r = 3;
    QuantizedWeight w = quantize_int4(seeded_normal({out, in}, 2, 0.1), L);
    Tensor bias = seeded_normal({out}, 3, 0.1);
    Tensor x = seeded_normal({2, 3, in}, 4).to(DType::F64);
    Tensor A = leaf({r, in / L}, 5), B = leaf({out, r}, 6);
    expect_gradcheck(
        [&](const std::vector<Tensor>& in_) { return peft::qalora_forward(x, w, bias, in_[0], in_[1], 16.0 / r); },
        {A, B});
    // And w.r.t. the input as well: the base's input gradient and the pooled path's.
    Tensor xl = leaf({2, in}, 7);
    expect_gradcheck(
        [&](const std::vector<Tensor>& in_) { return peft::qalora_forward(in_[0], w, bias, A.detach(), B.detach(), 2.0); },
        {xl});
}

TEST_CASE("qalora: merging into the zero points keeps the codes and the outputs") {
    const int64_t out = 40, in = 96, L = 32, r = 8;
    QuantizedWeight w = quantize_int4(seeded_normal({out, in}, 8, 0.05), L);
    Tensor A = seeded_normal({r, in / L}, 9, 0.5), B = seeded_normal({out, r}, 10, 0.5);
    const double s = 16.0 / r;
    Tensor x = seeded_normal({6, in}, 11);
    Tensor unmerged = peft::qalora_forward(x, w, Tensor(), A, B, s);
    QuantizedWeight merged = w;
    peft::merge_qalora(merged, A, B, s);
    Tensor after = nn::quant_linear(x, merged, Tensor());
    double scale = 0;
    for (double v : unmerged.to_vector<double>()) scale = std::max(scale, std::abs(v));
    CHECK(max_abs_diff(after, unmerged) < 1e-5 * scale);
    ByteBuffer a = w.codes, b = merged.codes;
    CHECK(std::equal(a.data(), a.data() + a.bytes, b.data()));
    CHECK(merged.zeros.to_vector<float>() != w.zeros.to_vector<float>());  // the change went there
    QuantizedWeight nf4 = quantize_nf4(seeded_normal({out, in}, 12));
    CHECK(contains(error_of([&] { peft::qalora_forward(x, nf4, Tensor(), A, B, s); }), "must be INT4"));
    CHECK(contains(error_of([&] { peft::qalora_forward(x, w, Tensor(), B, A, s); }), "do not fit"));
}
