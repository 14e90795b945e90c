// The fused CPU attention kernel (tensor/cpu/attention.cpp) against the composed path
// (nn::composed_attention): equal to f32 rounding forward and backward, gradchecked in f64,
// memory linear in T.
#include <cmath>

#include "nn/attention.h"
#include "tensor/storage.h"
#include "tests/attention_helpers.h"

using namespace ember;
using namespace ember::testing;
using Inputs = const std::vector<Tensor>&;

namespace {

// The fused path (scaled_dot_product_attention on the CPU) against the composed one, forward and
// backward, under one mask: equal to f32 rounding.
void check_against_composed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& w,
                            const nn::AttentionMask& mask, double grad_tol = 1e-5) {
    AttentionResult fused = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return nn::scaled_dot_product_attention(a, b, c, mask, 0, nullptr, true);
    }, q, k, v, w);
    AttentionResult composed = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return nn::composed_attention(a, b, c, mask, 0, nullptr, true);
    }, q, k, v, w);
    CHECK(max_abs_diff(fused.out, composed.out) < 2e-6);
    CHECK(max_abs_diff(fused.dq, composed.dq) < grad_tol);
    CHECK(max_abs_diff(fused.dk, composed.dk) < grad_tol);
    CHECK(max_abs_diff(fused.dv, composed.dv) < grad_tol);
}

}  // namespace

TEST_CASE("fused attention: equals the composed path in f32 (causal, padding, GQA, prefix keys)") {
    Generator gen(3);
    const int64_t B = 2, H = 4, Hkv = 2, Tq = 37, D = 16;
    for (int64_t prefix : {0, 5})
        for (bool causal : {false, true})
            for (bool padded : {false, true}) {
                CAPTURE(prefix);
                CAPTURE(causal);
                CAPTURE(padded);
                const int64_t Tk = Tq + prefix;
                // Strided q, k and v, as split_heads leaves them: (B, T, H, D) permuted to (B, H, T, D).
                Tensor q = randn({B, Tq, H, D}, gen).permute({0, 2, 1, 3});
                Tensor k = randn({B, Tk, Hkv, D}, gen).permute({0, 2, 1, 3});
                Tensor v = randn({B, Tk, Hkv, D}, gen).permute({0, 2, 1, 3});
                Tensor w = randn({B, H, Tq, D}, gen);
                Tensor pad;
                if (padded) {  // the second sequence has its last 4 keys padded, and key 1
                    std::vector<float> p(size_t(B * Tk), 1.0f);
                    for (int64_t j = Tk - 4; j < Tk; ++j) p[size_t(Tk + j)] = 0;
                    p[size_t(Tk + 1)] = 0;
                    pad = from_vector(p, {B, Tk});
                }
                nn::AttentionMask mask{causal, pad};
                check_against_composed(q, k, v, w, mask);
            }
}

// The kernel works on blocks of 16 query rows against tiles of 64 keys: these sizes put rows and
// keys on both sides of those edges (one row, a tile less one, a tile, a tile plus one, and a
// length that leaves partial blocks and tiles), with every pattern feature on.
TEST_CASE("fused attention: equals the composed path across query blocks and key tiles") {
    Generator gen(6);
    const int64_t B = 2, H = 4, Hkv = 2, D = 24;
    for (int64_t Tq : {1, 15, 63, 64, 65, 150})
        for (int64_t prefix : {0, 7})
            for (bool causal : {false, true}) {
                CAPTURE(Tq);
                CAPTURE(prefix);
                CAPTURE(causal);
                const int64_t Tk = Tq + prefix;
                Tensor q = randn({B, Tq, H, D}, gen).permute({0, 2, 1, 3});
                Tensor k = randn({B, Hkv, Tk, D}, gen), v = randn({B, Hkv, Tk, D}, gen);
                Tensor w = randn({B, H, Tq, D}, gen);
                // the second sequence: every third key padded, and the last 5
                std::vector<float> p(size_t(B * Tk), 1.0f);
                for (int64_t j = 0; j < Tk; ++j)
                    if (j % 3 == 1 || j >= Tk - 5) p[size_t(Tk + j)] = 0;
                nn::AttentionMask mask{causal, from_vector(p, {B, Tk})};
                check_against_composed(q, k, v, w, mask, 2e-5);
            }
}

TEST_CASE("fused attention: a query that sees no key attends uniformly, as the composed path") {
    Generator gen(4);
    Tensor q = randn({2, 2, 3, 8}, gen), k = randn({2, 2, 3, 8}, gen), v = randn({2, 2, 3, 8}, gen);
    Tensor w = randn({2, 2, 3, 8}, gen);
    // batch 1: every key padded; batch 0: the first key padded, so causal query 0 sees nothing
    Tensor pad = from_vector(std::vector<float>{0, 1, 1, 0, 0, 0}, {2, 3});
    nn::AttentionMask mask{true, pad};
    check_against_composed(q, k, v, w, mask);
}

TEST_CASE("fused attention: float64 gradcheck of the raw op with every pattern feature") {
    Tensor q = leaf({2, 4, 3, 5}, 11), k = leaf({2, 2, 6, 5}, 12), v = leaf({2, 2, 6, 5}, 13);
    raw::AttentionPattern pattern;
    pattern.key_padding = tensor({1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0}, {2, 6}, DType::F64);
    for (bool causal : {false, true}) {
        CAPTURE(causal);
        pattern.causal = causal;
        expect_gradcheck([&](Inputs x) { return fused_attention(x[0], x[1], x[2], pattern, 0.37); },
                         {q, k, v});
    }
}

TEST_CASE("fused attention: float64 gradcheck across query blocks and key tiles") {
    // 70 queries (blocks of 16: four whole, one of 6) after 5 prefix keys: 75 keys, two tiles.
    Tensor q = leaf({1, 2, 70, 2}, 14), k = leaf({1, 1, 75, 2}, 15), v = leaf({1, 1, 75, 2}, 16);
    raw::AttentionPattern pattern;
    std::vector<double> real(75, 1.0);
    real[3] = real[64] = real[70] = 0;
    pattern.key_padding = from_vector(real, {1, 75});
    for (bool causal : {false, true}) {
        CAPTURE(causal);
        pattern.causal = causal;
        expect_gradcheck([&](Inputs x) { return fused_attention(x[0], x[1], x[2], pattern, 0.9); },
                         {q, k, v});
    }
}

TEST_CASE("fused attention: T = 2048 forward + backward stays linear in memory") {
    Generator gen(5);
    const int64_t B = 1, H = 2, T = 2048, D = 16;
    Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
    Tensor w = randn({B, H, T, D}, gen);
    auto peak_of = [&](auto&& attn) {
        reset_cpu_peak();
        const int64_t base = cpu_memory_stats().bytes_in_use;
        run_attention(attn, q, k, v, w);
        return cpu_memory_stats().peak_bytes_in_use - base;
    };
    nn::AttentionMask mask{true, Tensor()};
    const int64_t fused = peak_of([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return nn::scaled_dot_product_attention(a, b, c, mask, 0, nullptr, true);
    });
    const int64_t composed = peak_of([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return nn::composed_attention(a, b, c, mask, 0, nullptr, true);
    });
    MESSAGE("T = 2048 attention forward + backward peak: fused ", fused, " bytes, composed ",
            composed, " bytes");
    const int64_t per_tensor = B * H * T * D * 4;          // one (B, H, T, D) f32 tensor
    CHECK(fused <= 12 * per_tensor);                       // q, k, v copies, out, grads: O(T D)
    CHECK(composed >= B * H * T * T * 4);                  // at least one (T, T) score matrix
}

TEST_CASE("fused attention: bad shapes and devices are refused with the op's name") {
    Tensor q = zeros({1, 3, 4, 8}), k = zeros({1, 2, 4, 8});
    CHECK(contains(error_of([&] { raw::attention_forward(q, k, k, {}, 1.0); }), "shared evenly"));
    raw::AttentionPattern p;
    p.key_padding = ones({1, 5});
    Tensor k1 = zeros({1, 1, 4, 8});
    CHECK(contains(error_of([&] { raw::attention_forward(q, k1, k1, p, 1.0); }), "key_padding must be (B, Tk)"));
}
