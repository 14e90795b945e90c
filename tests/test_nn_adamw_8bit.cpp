// AdamW with 8-bit block-wise moments (nn::AdamW8bit, raw::adamw_8bit_multi_): the unsigned
// dynamic code, the stored bytes against the nearest-code search of tensor/quant.h, the sign rule,
// how closely it follows f32 AdamW, small tensors left in f32, its memory, paging and resuming.
#include <cstring>

#include "nn/optim.h"
#include "tensor/cuda/cuda.h"
#include "tensor/quant.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

std::vector<uint8_t> bytes_of(const Tensor& words, int64_t n) {
    std::vector<uint8_t> out(static_cast<size_t>(n));
    std::memcpy(out.data(), words.raw_data(), out.size());
    return out;
}

Tensor param(const Shape& shape, uint64_t seed) {
    Generator gen(seed);
    Tensor p = randn(shape, gen);
    p.set_requires_grad(true);
    return p;
}

// The gradient of 0.5 |p - target|^2, so each optimizer's path depends on its own earlier steps.
void set_quadratic_grad(Tensor& p, const Tensor& target) { p.set_grad(raw::sub(p.detach(), target)); }

}  // namespace

TEST_CASE("quant: the unsigned 8-bit dynamic code") {
    const auto& code = dynamic_code_8bit_unsigned();
    CHECK(code[0] == 0.0f);
    CHECK(code[255] == 1.0f);
    for (size_t i = 1; i < 256; ++i) CHECK(code[i - 1] < code[i]);
    // Decade i (values 10^(i-6) * [0.1, 1)) holds 2^(i+1) values: the mid-points of
    // linspace(0.1, 1, 2^(i+1) + 1). The smallest is 1e-6 * (0.1 + 0.55) / 2; the largest below 1
    // is (1 - 0.9 / 128 + 1) / 2.
    CHECK(code[1] == doctest::Approx(3.25e-7).epsilon(1e-5));
    CHECK(code[2] == doctest::Approx(7.75e-7).epsilon(1e-5));
    CHECK(code[254] == doctest::Approx(0.996484375).epsilon(1e-6));
    for (int i = 0; i < 7; ++i) {
        const float lo = float(std::pow(10.0, i - 6)) * 0.1f, hi = float(std::pow(10.0, i - 6));
        CHECK(std::count_if(code.begin(), code.end(), [&](float c) { return c > lo && c < hi; }) == (2 << i));
    }
}

TEST_CASE("AdamW8bit: the stored bytes are the nearest codes to the moments, negatives kept negative") {
    // One step from zero state: m = (1 - beta1) g and v = (1 - beta2) g^2 exactly in f32, so the
    // bytes can be predicted with quantize_to_code_8bit (a binary search, independent of the
    // kernel's bucket lookup). 1000 blocks of 256 plus a partial one.
    const int64_t n = 256 * 1000 + 77;
    Tensor p = param({n}, 1);
    Generator gen(2);
    Tensor g = randn({n}, gen);
    {   // tiny negatives, each in a block with a large value: their nearest code is 0
        NoGradGuard ng;
        float* gp = g.data<float>();
        for (int64_t b = 0; b < 8; ++b) gp[b * 256] = -1e-9f, gp[b * 256 + 1] = 5.0f;
    }
    p.set_grad(g);
    nn::AdamWOptions o;
    nn::AdamW8bit opt({p}, o);
    opt.step();
    nn::StateDict st = opt.state();
    std::vector<uint8_t> mc = bytes_of(st.at("0.0.exp_avg_codes"), n), vc = bytes_of(st.at("0.0.exp_avg_sq_codes"), n);
    std::vector<float> ma = st.at("0.0.exp_avg_absmax").to_vector<float>(), va = st.at("0.0.exp_avg_sq_absmax").to_vector<float>();
    REQUIRE(ma.size() == 1001);
    const auto& scode = dynamic_code_8bit();
    const auto& ucode = dynamic_code_8bit_unsigned();
    std::vector<float> gv = g.to_vector<float>();
    int64_t m_wrong = 0, v_wrong = 0, sign_fixed = 0;
    for (int64_t blk = 0; blk * 256 < n; ++blk) {
        const int64_t lo = blk * 256, hi = std::min(n, lo + 256);
        float m_max = 0, v_max = 0;
        for (int64_t i = lo; i < hi; ++i) {
            const float gi = gv[size_t(i)];
            m_max = std::max(m_max, std::fabs(float(1.0 - o.beta1) * gi));
            v_max = std::max(v_max, float(1.0 - o.beta2) * gi * gi);
        }
        CHECK(ma[size_t(blk)] == m_max);
        CHECK(va[size_t(blk)] == v_max);
        for (int64_t i = lo; i < hi; ++i) {
            const float gi = gv[size_t(i)], m = float(1.0 - o.beta1) * gi, v = float(1.0 - o.beta2) * gi * gi;
            int mq = quantize_to_code_8bit(scode.data(), m * (1.0f / m_max));
            if (std::signbit(scode[size_t(mq)]) != std::signbit(m)) mq += m > 0 ? 1 : -1, ++sign_fixed;
            m_wrong += mc[size_t(i)] != mq;
            // A value exactly on a mid-point may go either way: the search's tie rule depends on
            // its path (the kernel's goes to the lower code). Such ties are not counted.
            const float x = v * (1.0f / v_max);
            const int vq = quantize_to_code_8bit(ucode.data(), x), got = vc[size_t(i)];
            const bool tie = std::abs(got - vq) == 1 && x == 0.5f * (ucode[size_t(std::min(got, vq))] + ucode[size_t(std::max(got, vq))]);
            v_wrong += got != vq && !tie;
        }
    }
    CHECK(m_wrong == 0);
    CHECK(v_wrong == 0);
    CHECK(sign_fixed >= 8);
    REQUIRE(scode[126] < 0.0f);
    REQUIRE(scode[127] == 0.0f);
    for (int64_t b = 0; b < 8; ++b) CHECK(mc[size_t(b * 256)] == 126);  // the negative code nearest zero, not zero
}

TEST_CASE("AdamW8bit: follows f32 AdamW; small tensors keep f32 moments, bit for bit") {
    nn::AdamWOptions o;
    o.lr = 1e-2, o.weight_decay = 0.1;
    Tensor big_a = param({64, 80}, 3), big_b = param({64, 80}, 3);    // 5120 >= 4096: 8-bit
    Tensor small_a = param({40, 100}, 4), small_b = param({40, 100}, 4);  // 4000: f32
    Generator gen(5);
    Tensor big_target = randn({64, 80}, gen), small_target = randn({40, 100}, gen);
    const Tensor start = big_a.detach().clone();
    nn::AdamW f32({big_a, small_a}, o);
    nn::AdamW8bit q8({big_b, small_b}, o);
    CHECK(q8.name() == "AdamW8bit");
    auto loss = [](const Tensor& p, const Tensor& t) { return raw::sum(raw::mul(raw::sub(p.detach(), t), raw::sub(p.detach(), t))).item<double>(); };
    auto mean_abs_diff = [](const Tensor& a, const Tensor& b) { return raw::mean(raw::unary(UnaryOp::Abs, raw::sub(a, b))).item<double>(); };
    for (int s = 0; s < 60; ++s) {
        set_quadratic_grad(big_a, big_target), set_quadratic_grad(small_a, small_target);
        set_quadratic_grad(big_b, big_target), set_quadratic_grad(small_b, small_target);
        f32.step(), q8.step();
        // The first step starts from zero moments and moves by the f32 moments: the same bits.
        if (s == 0) CHECK(bit_equal(big_a, big_b));
    }
    CHECK(bit_equal(small_a, small_b));
    // After 60 steps the 8-bit path is within 5% of the distance travelled, on average over the
    // weights, and the loss within 1% (2.9% and 0.4% when written; storing no moments, or
    // misreading them by 5%, gave 77% and 35-41% by steps 40-50).
    const double moved = mean_abs_diff(big_a.detach(), start);
    const double apart = mean_abs_diff(big_a.detach(), big_b.detach());
    const double loss_a = loss(big_a, big_target), loss_b = loss(big_b, big_target);
    INFO("moved ", moved, ", apart ", apart, ", loss ", loss_a, " (f32) ", loss_b, " (8-bit)");
    CHECK(apart > 0);  // the state really is rounded
    CHECK(apart < 0.05 * moved);
    CHECK(std::abs(loss_b - loss_a) < 0.01 * loss_a);
    // A quarter of the memory, plus one absmax per 256: codes 2 x 5120 bytes, absmax 2 x 20 x 4.
    CHECK(q8.resident_bytes() == 2 * 5120 + 2 * 20 * 4 + 2 * 4000 * 4);
    CHECK(f32.resident_bytes() == 2 * 5120 * 4 + 2 * 4000 * 4);
}

TEST_CASE("PagedAdamW8bit: the same bits as AdamW8bit, its codes paged, through a checkpoint") {
    nn::AdamWOptions o;
    o.lr = 1e-2;
    Tensor a = param({300, 400}, 6), b = param({300, 400}, 6), c = param({300, 400}, 6);
    Generator gen(7);
    Tensor target = randn({300, 400}, gen);
    nn::AdamW8bit plain({a}, o);
    nn::AdamW8bit paged({b}, o, /*paged=*/true);
    CHECK(paged.name() == "PagedAdamW8bit");
    for (int s = 0; s < 4; ++s) {
        set_quadratic_grad(a, target), set_quadratic_grad(b, target);
        plain.step(), paged.step();
    }
    CHECK(bit_equal(a, b));
    CHECK(paged.paged_bytes() == 2 * 120000);                 // the codes
    CHECK(paged.resident_bytes() == 2 * (120000 / 256 + 1) * 4);  // the absmaxes
    // Resume: load the state into a fresh optimizer; the next steps match an uninterrupted run.
    {
        NoGradGuard ng;
        raw::copy_(c, b);
    }
    nn::AdamW8bit resumed({c}, o, true);
    resumed.load_state(paged.state());
    CHECK(resumed.paged_bytes() == paged.paged_bytes());
    for (int s = 4; s < 7; ++s) {
        set_quadratic_grad(a, target), set_quadratic_grad(c, target);
        plain.step(), resumed.step();
    }
    CHECK(bit_equal(a, c));
}

TEST_CASE("AdamW8bit: a state of the other form is refused, with the fix") {
    Tensor p = param({100, 100}, 8), q = param({100, 100}, 8);
    p.set_grad(ones({100, 100})), q.set_grad(ones({100, 100}));
    nn::AdamW f32({p});
    nn::AdamW8bit q8({q});
    f32.step(), q8.step();
    nn::AdamW8bit other({q});
    CHECK_THROWS_WITH_AS(other.load_state(f32.state()),
                         doctest::Contains("holds {exp_avg, exp_avg_sq}, but this optimizer keeps {exp_avg_absmax"),
                         std::exception);
    nn::AdamW plain({p});
    CHECK_THROWS_WITH_AS(plain.load_state(q8.state()), doctest::Contains("exp_avg_codes"), std::exception);
    CHECK_THROWS_WITH_AS(nn::AdamW({p}, {}, nn::MomentStorage{false, 100000, 16, 4096}),
                         doctest::Contains("32 or 8 bits"), std::exception);
}

TEST_CASE("cuda: AdamW8bit refuses a GPU parameter and names the fix" * doctest::skip(!cuda_is_available())) {
    Tensor p = param({100, 100}, 9).detach().to(Device::cuda());
    p.set_requires_grad(true);
    p.set_grad(ones({100, 100}).to(Device::cuda()));
    nn::AdamW8bit opt({p});
    CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("PagedAdamW"), std::exception);
}

TEST_CASE("adamw_8bit_: a slot whose state does not fit its parameter is refused, naming the part") {
    Tensor p = param({5000}, 10);
    p.set_grad(ones({5000}));
    raw::AdamWParams hp{1e-3, 0.9, 0.999, 1e-8, 0.0, 1};
    Tensor codes = zeros({1250}, DType::I32), absmax = zeros({20});
    CHECK_NOTHROW(raw::adamw_8bit_multi_({{p, p.grad(), codes, absmax, zeros({1250}, DType::I32), zeros({20}), hp}}));
    CHECK_THROWS_WITH_AS(raw::adamw_8bit_multi_({{p, p.grad(), zeros({1249}, DType::I32), absmax, codes, absmax, hp}}),
                         doctest::Contains("exp_avg_codes must be a contiguous i32 tensor of 1250 elements"),
                         std::exception);
    CHECK_THROWS_WITH_AS(raw::adamw_8bit_multi_({{p, p.grad(), codes, zeros({19}), codes, absmax, hp}}),
                         doctest::Contains("exp_avg_absmax must be a contiguous f32 tensor of 20 elements"),
                         std::exception);
    Tensor p64 = raw::to_dtype(p.detach(), DType::F64);
    CHECK_THROWS_WITH_AS(raw::adamw_8bit_multi_({{p64, raw::to_dtype(p.grad(), DType::F64), codes, absmax, codes, absmax, hp}}),
                         doctest::Contains("8-bit state is for f32 parameters"), std::exception);
}

TEST_CASE("AdamW8bit: f64 parameters keep f64 moments, as AdamW") {
    nn::AdamWOptions o;
    o.lr = 1e-2;
    Tensor a = raw::to_dtype(param({100, 100}, 11).detach(), DType::F64), b = a.clone();
    a.set_requires_grad(true), b.set_requires_grad(true);
    Generator gen(12);
    Tensor target = raw::to_dtype(randn({100, 100}, gen), DType::F64);
    nn::AdamW f64({a}, o);
    nn::AdamW8bit q8({b}, o);
    for (int s = 0; s < 3; ++s) {
        set_quadratic_grad(a, target), set_quadratic_grad(b, target);
        f64.step(), q8.step();
    }
    CHECK(bit_equal(a, b));
    CHECK(q8.resident_bytes() == 2 * 10000 * 8);
}
