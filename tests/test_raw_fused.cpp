// Raw ops, part 3: the fused kernels (layer norm, RMS norm, cross-entropy), dropout and the
// random fills. Forward values against hand-computed numbers, backward passes against central
// differences in float64, dropout statistics and determinism, and error messages.
#include <cmath>

#include "tensor/parallel.h"
#include "tests/raw_test_helpers.h"

using namespace ember;
using namespace ember::testing;

static Tensor f64(std::initializer_list<double> values, const Shape& shape) {
    return tensor(values, shape, DType::F64);
}

// ---------------------------------------------------------------- layer norm / RMS norm

TEST_CASE("raw layernorm_forward: values, statistics and their shapes") {
    const double eps = 1e-5;
    Tensor x = f64({1, 2, 3, 0, 4, 8}, {2, 3});
    Tensor w = f64({1, 2, 3}, {3}), b = f64({0.5, 0, -0.5}, {3});
    raw::NormOutput out = raw::layernorm_forward(x, w, b, eps);
    double r0 = 1 / std::sqrt(2.0 / 3 + eps), r1 = 1 / std::sqrt(32.0 / 3 + eps);
    check_values(out.y, {-r0 + 0.5, 0, r0 * 3 - 0.5, -4 * r1 + 0.5, 0, 4 * r1 * 3 - 0.5}, 1e-12);
    CHECK(out.mean.shape() == Shape{2});
    check_values(out.mean, {2, 4}, 1e-12);
    check_values(out.rstd, {r0, r1}, 1e-12);
    // No weight, no bias; a 3-D input; a transposed input.
    Tensor plain_y = raw::layernorm_forward(x, Tensor(), Tensor(), eps).y;
    check_values(plain_y, {-r0, 0, r0, -4 * r1, 0, 4 * r1}, 1e-12);
    Tensor x3 = raw::reshape(raw::cat({x, x}, 0), {2, 2, 3});
    raw::NormOutput out3 = raw::layernorm_forward(x3, w, b, eps);
    CHECK(out3.y.shape() == Shape{2, 2, 3});
    CHECK(out3.rstd.shape() == Shape{2, 2});
    Tensor xt = raw::transpose(x, 0, 1), xt_copy = raw::contiguous(xt);
    Tensor w2 = f64({2, -1}, {2});
    CHECK(max_abs_diff(raw::layernorm_forward(xt, w2, Tensor(), eps).y,
                       raw::layernorm_forward(xt_copy, w2, Tensor(), eps).y) < 1e-15);

    check_error([&] { raw::layernorm_forward(x, f64({1, 2}, {2}), b, eps); },
                {"layernorm", "weight", "(2,)", "(2, 3)", "(3,)"});
    check_error([&] { raw::layernorm_forward(x, w, ones({3}), eps); },
                {"layernorm", "dtypes differ"});
    check_error([] { raw::layernorm_forward(ones({2}, DType::I32), Tensor(), Tensor(), 1e-5); },
                {"layernorm", "floating-point"});
}

TEST_CASE("raw layernorm_backward matches finite differences, each output only when asked") {
    const double eps = 1e-5;
    Generator gen(31);
    Tensor x = randn({2, 3, 5}, gen, DType::F64), g = randn({2, 3, 5}, gen, DType::F64);
    Tensor w = randn({5}, gen, DType::F64), b = randn({5}, gen, DType::F64);
    raw::NormOutput saved = raw::layernorm_forward(x, w, b, eps);
    raw::NormGrads d = raw::layernorm_backward(g, x, w, saved, true, true, true);
    auto y_of_x = [&](const Tensor& v) { return raw::layernorm_forward(v, w, b, eps).y; };
    auto y_of_w = [&](const Tensor& v) { return raw::layernorm_forward(x, v, b, eps).y; };
    auto y_of_b = [&](const Tensor& v) { return raw::layernorm_forward(x, w, v, eps).y; };
    check_values(d.dx, numeric_grad(y_of_x, x, g), 1e-6);
    check_values(d.dweight, numeric_grad(y_of_w, w, g), 1e-6);
    check_values(d.dbias, numeric_grad(y_of_b, b, g), 1e-6);

    raw::NormGrads only_w = raw::layernorm_backward(g, x, w, saved, false, true, false);
    CHECK_FALSE(only_w.dx.defined());
    CHECK_FALSE(only_w.dbias.defined());
    CHECK(max_abs_diff(only_w.dweight, d.dweight) == 0);
    raw::NormOutput plain = raw::layernorm_forward(x, Tensor(), Tensor(), eps);
    raw::NormGrads no_w = raw::layernorm_backward(g, x, Tensor(), plain, true, true, true);
    CHECK_FALSE(no_w.dweight.defined());  // no weight, no weight gradient
    auto plain_y_of_x = [&](const Tensor& v) {
        return raw::layernorm_forward(v, Tensor(), Tensor(), eps).y;
    };
    check_values(no_w.dx, numeric_grad(plain_y_of_x, x, g), 1e-6);
    Tensor bad_grad = ones({3, 5}, DType::F64);
    check_error([&] { raw::layernorm_backward(bad_grad, x, w, saved, true, false, false); },
                {"layernorm_backward", "(3, 5)", "(2, 3, 5)"});
}

TEST_CASE("raw rmsnorm forward values and backward against finite differences") {
    const double eps = 1e-6;
    Tensor x = f64({1, 2, 3, -2, 0, 2}, {2, 3}), w = f64({1, 0.5, 2}, {3});
    raw::NormOutput out = raw::rmsnorm_forward(x, w, eps);
    double r0 = 1 / std::sqrt(14.0 / 3 + eps), r1 = 1 / std::sqrt(8.0 / 3 + eps);
    check_values(out.y, {r0, 2 * r0 * 0.5, 3 * r0 * 2, -2 * r1, 0, 2 * r1 * 2}, 1e-12);
    check_values(out.rstd, {r0, r1}, 1e-12);
    CHECK_FALSE(out.mean.defined());

    Generator gen(32);
    Tensor x2 = randn({4, 6}, gen, DType::F64), g = randn({4, 6}, gen, DType::F64);
    Tensor w2 = randn({6}, gen, DType::F64);
    raw::NormOutput saved = raw::rmsnorm_forward(x2, w2, eps);
    raw::NormGrads d = raw::rmsnorm_backward(g, x2, w2, saved, true, true);
    auto y_of_x = [&](const Tensor& v) { return raw::rmsnorm_forward(v, w2, eps).y; };
    auto y_of_w = [&](const Tensor& v) { return raw::rmsnorm_forward(x2, v, eps).y; };
    check_values(d.dx, numeric_grad(y_of_x, x2, g), 1e-6);
    check_values(d.dweight, numeric_grad(y_of_w, w2, g), 1e-6);
    CHECK_FALSE(d.dbias.defined());
    raw::NormGrads dx_only = raw::rmsnorm_backward(g, x2, w2, saved, true, false);
    CHECK_FALSE(dx_only.dweight.defined());
    check_error([&] { raw::rmsnorm_backward(g, x2, w2, raw::NormOutput{}, true, true); },
                {"rmsnorm_backward", "rstd", "undefined"});
}

// ---------------------------------------------------------------- cross-entropy

TEST_CASE("raw cross_entropy_forward: values, ignore_index and label smoothing") {
    Tensor logits = f64({0, 0, 0, 1, 2, 3}, {2, 3});
    Tensor targets = from_vector<int64_t>({0, 2}, {2});
    const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    const double row0 = std::log(3.0), row1 = lse - 3;
    raw::CrossEntropyOutput out = raw::cross_entropy_forward(logits, targets);
    CHECK(out.loss.shape() == Shape{});
    CHECK(out.counted == 2);
    check_values(out.loss, {(row0 + row1) / 2}, 1e-12);
    check_values(out.log_probs, {-row0, -row0, -row0, 1 - lse, 2 - lse, 3 - lse}, 1e-12);

    // i32 targets; the default ignore_index -100, and a custom one.
    Tensor padded = from_vector<int32_t>({0, -100}, {2});
    raw::CrossEntropyOutput ignored = raw::cross_entropy_forward(logits, padded);
    CHECK(ignored.counted == 1);
    check_values(ignored.loss, {row0}, 1e-12);
    check_values(raw::cross_entropy_forward(logits, targets, 2).loss, {row0}, 1e-12);

    // Label smoothing 0.1: -(0.9 logp[t] + 0.1 / 3 * sum logp).
    const double eps = 0.1;
    double sum1 = (1 - lse) + (2 - lse) + (3 - lse);
    double smooth1 = -((1 - eps) * (3 - lse) + eps / 3 * sum1);
    check_values(raw::cross_entropy_forward(logits, targets, -100, eps).loss,
                 {(row0 + smooth1) / 2}, 1e-12);

    // Every row ignored: loss 0, gradient 0.
    Tensor none = from_vector<int64_t>({-100, -100}, {2});
    raw::CrossEntropyOutput empty = raw::cross_entropy_forward(logits, none);
    CHECK(empty.counted == 0);
    check_values(empty.loss, {0});
    check_values(raw::cross_entropy_backward(scalar_tensor(1, DType::F64), empty, none, -100, 0),
                 std::vector<double>(6, 0.0));

    check_error([&] { raw::cross_entropy_forward(logits, from_vector<int64_t>({3, 0}, {2})); },
                {"cross_entropy", "target 3", "3 classes"});
    check_error([&] { raw::cross_entropy_forward(logits, from_vector<int64_t>({0, 0, 0}, {3})); },
                {"cross_entropy", "(3,)", "(2, 3)"});
    check_error([&] { raw::cross_entropy_forward(logits, tensor({0, 1}, {2})); },
                {"cross_entropy", "i32 or i64"});
    check_error([&] { raw::cross_entropy_forward(logits, targets, -100, 1.5); },
                {"cross_entropy", "label_smoothing", "1.5"});
}

TEST_CASE("raw cross_entropy_backward matches finite differences, 0 on ignored rows") {
    Generator gen(41);
    Tensor logits = randn({4, 5}, gen, DType::F64);
    Tensor targets = from_vector<int64_t>({1, -100, 4, 0}, {4});
    Tensor upstream = scalar_tensor(2.0, DType::F64);
    for (double eps : {0.0, 0.1}) {
        CAPTURE(eps);
        raw::CrossEntropyOutput saved = raw::cross_entropy_forward(logits, targets, -100, eps);
        Tensor d = raw::cross_entropy_backward(upstream, saved, targets, -100, eps);
        CHECK(d.shape() == Shape{4, 5});
        auto loss_of = [&](const Tensor& v) {
            return raw::cross_entropy_forward(v, targets, -100, eps).loss;
        };
        check_values(d, numeric_grad(loss_of, logits, upstream), 1e-6);
        check_values(raw::select(d, 0, 1), std::vector<double>(5, 0.0));
    }
}

// ---------------------------------------------------------------- dropout and random fills

TEST_CASE("raw dropout: statistics, scaling and the mask it returns") {
    Generator gen(5);
    const double p = 0.3;
    Tensor x = ones({200000});
    auto [out, mask] = raw::dropout(x, p, gen);
    CHECK(mask.dtype() == DType::F32);
    double kept = raw::mean(mask).item<double>();
    CHECK(std::abs(kept - (1 - p)) < 0.005);
    Tensor want = raw::mul_scalar(mask, 1 / (1 - p));  // x is all ones
    CHECK(raw::max(raw::binary(BinaryOp::Ne, out, want)).item<float>() == 0);
    std::vector<float> m = mask.to_vector<float>();
    for (uint64_t i : {0ull, 1ull, 2ull, 3ull, 4ull, 77ull, 199999ull})
        CHECK(m[i] == (philox_uniform(5, 0, i) > p ? 1.f : 0.f));
    CHECK(gen.offset() == 1);

    Tensor y = f64({1, -2, 3, -4}, {4});
    Generator all(9);
    auto [same, ones_mask] = raw::dropout(y, 0.0, all);  // p = 0 keeps everything
    check_values(same, {1, -2, 3, -4});
    check_values(ones_mask, {1, 1, 1, 1});
    check_error([&] { raw::dropout(y, 1.0, all); }, {"dropout", "[0, 1)", "1"});
    check_error([&] { raw::dropout(y, -0.1, all); }, {"dropout", "-0.1"});
    check_error([&] { raw::dropout(ones({2}, DType::I64), 0.5, all); },
                {"dropout", "floating-point"});
}

TEST_CASE("raw dropout: the mask depends only on (seed, offset, index)") {
    int saved = num_threads();
    Generator g1(77), g2(77);
    Tensor x = ones({300, 301});
    set_num_threads(1);
    Tensor m1 = raw::dropout(x, 0.5, g1).second;
    set_num_threads(3);
    Tensor m2 = raw::dropout(x, 0.5, g2).second;
    CHECK(m1.to_vector<float>() == m2.to_vector<float>());  // same state, any thread count
    Tensor m3 = raw::dropout(x, 0.5, g2).second;  // next offset: a different mask
    CHECK(m1.to_vector<float>() != m3.to_vector<float>());
    g1.set_state(77, 0);
    CHECK(raw::dropout(x, 0.5, g1).second.to_vector<float>() == m1.to_vector<float>());

    // A transposed input: element i is the i-th in x's own row-major order.
    Generator gen(8), gen_copy(8);
    Tensor base = randn({257, 300}, gen, DType::F64);
    gen_copy.set_state(gen.seed(), gen.offset());
    Tensor xt = raw::transpose(base, 0, 1);
    auto [out_t, mask_t] = raw::dropout(xt, 0.25, gen);
    auto [out_c, mask_c] = raw::dropout(raw::contiguous(xt), 0.25, gen_copy);
    CHECK(mask_t.to_vector<double>() == mask_c.to_vector<double>());
    CHECK(out_t.to_vector<double>() == out_c.to_vector<double>());
    CHECK(max_abs_diff(out_t, raw::mul_scalar(raw::mul(xt, mask_t), 1 / 0.75)) < 1e-12);
    set_num_threads(saved);
}

TEST_CASE("raw random fills: element i is philox_uniform / philox_normal of (seed, offset, i)") {
    Generator gen(9);
    gen.next_offset();  // start at offset 1
    std::vector<float> u = rand({11}, gen).to_vector<float>();
    std::vector<double> n = randn({7}, gen, DType::F64).to_vector<double>();
    for (uint64_t i = 0; i < u.size(); ++i) CHECK(u[i] == philox_uniform(9, 1, i));
    for (uint64_t i = 0; i < n.size(); ++i) CHECK(n[i] == double(philox_normal(9, 2, i)));
}
