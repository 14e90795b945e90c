// Raw ops, part 1: copies, elementwise ops, reductions and softmax. Forward values against
// hand-computed numbers, on contiguous, transposed and broadcast inputs, and error messages.
#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/cpu/row_math.h"
#include "tensor/parallel.h"
#include "tests/raw_test_helpers.h"

using namespace ember;
using namespace ember::testing;

static const double INF = std::numeric_limits<double>::infinity();
static const double NaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- copies

TEST_CASE("raw copy: contiguous, clone and to_dtype over any strides") {
    Tensor a = raw::reshape(arange(0, 6, 1, DType::F64), {2, 3});
    Tensor t = raw::transpose(a, 0, 1);  // (3, 2)
    Tensor c = raw::contiguous(t);
    CHECK(c.is_contiguous());
    CHECK_FALSE(c.same_storage(a));
    check_values(c, {0, 3, 1, 4, 2, 5});
    CHECK(raw::contiguous(a).same_storage(a));  // already contiguous: no copy

    Tensor k = raw::clone(a);
    raw::fill_(k, 7);
    check_values(a, {0, 1, 2, 3, 4, 5});
    check_values(k, {7, 7, 7, 7, 7, 7});

    Tensor f = tensor({1.7, -2.7, 3});
    Tensor i = raw::to_dtype(f, DType::I64);
    CHECK(i.dtype() == DType::I64);
    CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3});  // truncation toward zero
    Tensor ints = from_vector<int32_t>({1, 2, 3, 4}, {2, 2});
    check_values(raw::to_dtype(raw::transpose(ints, 0, 1), DType::F64), {1, 3, 2, 4});
    CHECK(raw::to_dtype(f, DType::F32).same_storage(f));
}

TEST_CASE("raw copy: every permutation of a 3-D tensor (the tiled transposing path too)") {
    const int64_t A = 3, B = 37, C = 41;  // not multiples of the tile size
    Tensor x = raw::reshape(arange(0, double(A * B * C), 1, DType::F64), {A, B, C});
    const int64_t sizes[3] = {A, B, C}, strides[3] = {B * C, C, 1};
    for (Shape order : {Shape{0, 2, 1}, Shape{1, 0, 2}, Shape{1, 2, 0}, Shape{2, 0, 1},
                        Shape{2, 1, 0}}) {
        CAPTURE(order);
        const int d0 = int(order[0]), d1 = int(order[1]), d2 = int(order[2]);
        std::vector<double> want;  // x's values are their own offsets
        for (int64_t i = 0; i < sizes[d0]; ++i)
            for (int64_t j = 0; j < sizes[d1]; ++j)
                for (int64_t k = 0; k < sizes[d2]; ++k)
                    want.push_back(double(i * strides[d0] + j * strides[d1] + k * strides[d2]));
        Tensor p = raw::permute(x, order);
        CHECK(raw::contiguous(p).to_vector<double>() == want);
        std::vector<int32_t> got = raw::to_dtype(p, DType::I32).to_vector<int32_t>();
        CHECK(std::vector<double>(got.begin(), got.end()) == want);
    }
}

TEST_CASE("raw copy_: broadcasts into strided views, converts dtypes, bumps the version") {
    Tensor dst = zeros({3, 4}, DType::F64);
    uint64_t before = dst.storage()->version();
    raw::copy_(raw::slice(dst, 1, 1, 4, 2), tensor({5, 6}, {1, 2}, DType::F64));  // columns 1 and 3
    check_values(dst, {0, 5, 0, 6, 0, 5, 0, 6, 0, 5, 0, 6});
    CHECK(dst.storage()->version() > before);

    Tensor ints = zeros({3}, DType::I32);
    raw::copy_(ints, tensor({1.9, 2.1, -3.5}));
    CHECK(ints.to_vector<int32_t>() == std::vector<int32_t>{1, 2, -3});

    // Overlapping source and destination: shifting right by one must read before writing.
    Tensor s = arange(0, 5, 1, DType::F64);
    raw::copy_(raw::slice(s, 0, 1, 5), raw::slice(s, 0, 0, 4));
    check_values(s, {0, 0, 1, 2, 3});

    Tensor g = zeros({2, 3});
    before = g.storage()->version();
    raw::fill_(raw::select(g, 1, 1), 9);  // a strided column
    check_values(g, {0, 9, 0, 0, 9, 0});
    CHECK(g.storage()->version() > before);

    check_error([] { raw::copy_(zeros({2, 3}), ones({3, 2})); }, {"copy_", "(3, 2)", "(2, 3)"});
}

// ---------------------------------------------------------------- elementwise

TEST_CASE("raw unary: values and derivatives of every op, on a transposed view") {
    struct Case {
        UnaryOp op;
        std::function<double(double)> f;
        bool positive_only;
    };
    auto sigmoid = [](double v) { return 1 / (1 + std::exp(-v)); };
    std::vector<Case> cases = {
        {UnaryOp::Neg, [](double v) { return -v; }, false},
        {UnaryOp::Exp, [](double v) { return std::exp(v); }, false},
        {UnaryOp::Log, [](double v) { return std::log(v); }, true},
        {UnaryOp::Sqrt, [](double v) { return std::sqrt(v); }, true},
        {UnaryOp::Rsqrt, [](double v) { return 1 / std::sqrt(v); }, true},
        {UnaryOp::Abs, [](double v) { return std::fabs(v); }, false},
        {UnaryOp::Sign, [](double v) { return double((v > 0) - (v < 0)); }, false},
        {UnaryOp::Tanh, [](double v) { return std::tanh(v); }, false},
        {UnaryOp::Sigmoid, sigmoid, false},
        {UnaryOp::Relu, [](double v) { return v > 0 ? v : 0; }, false},
        {UnaryOp::GeluTanh, [](double v) {
             const double c = std::sqrt(2 / std::acos(-1.0));
             return 0.5 * v * (1 + std::tanh(c * (v + 0.044715 * v * v * v)));
         }, false},
        {UnaryOp::GeluErf, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); },
         false},
        {UnaryOp::Silu, [&](double v) { return v * sigmoid(v); }, false},
    };
    for (const Case& c : cases) {
        CAPTURE(unary_name(c.op));
        std::vector<double> v = {-1.5, -0.3, 0.4, 2.0, 0.9, -2.2};
        if (c.positive_only) v = {0.3, 1.2, 2.5, 4.0, 0.7, 1.9};
        Tensor x = raw::transpose(from_vector(v, {2, 3}), 0, 1);  // (3, 2) view, row-major order:
        std::vector<double> order = {v[0], v[3], v[1], v[4], v[2], v[5]};
        Tensor g = from_vector(std::vector<double>{1, -2, 0.5, 3, -1, 2}, {3, 2});
        std::vector<double> want_y, want_dx;
        for (size_t i = 0; i < order.size(); ++i) {
            double h = 1e-6, slope = (c.f(order[i] + h) - c.f(order[i] - h)) / (2 * h);
            want_y.push_back(c.f(order[i]));
            want_dx.push_back(g.to_vector<double>()[i] * slope);
        }
        check_values(raw::unary(c.op, x), want_y, 1e-12);
        check_values(raw::unary_backward(c.op, x, g), want_dx, 1e-6);
        check_values(raw::unary(c.op, raw::to_dtype(x, DType::F32)), want_y, 1e-5);
    }
    check_error([] { raw::unary(UnaryOp::Exp, ones({2}, DType::I64)); },
                {"exp", "floating-point", "i64"});
    check_error([] { raw::unary_backward(UnaryOp::Tanh, ones({2, 3}), ones({3, 2})); },
                {"tanh_backward", "(2, 3)", "(3, 2)"});
}

TEST_CASE("raw binary: arithmetic and comparisons with broadcasting") {
    Tensor a = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor row = tensor({10, 20, 30}, {3});
    Tensor col = tensor({2, 3}, {2, 1});
    check_values(raw::add(a, row), {11, 22, 33, 14, 25, 36});
    check_values(raw::sub(row, a), {9, 18, 27, 6, 15, 24});
    check_values(raw::mul(col, a), {2, 4, 6, 12, 15, 18});
    check_values(raw::div(a, row), {0.1, 0.1, 0.1, 0.4, 0.25, 0.2});
    check_values(raw::binary(BinaryOp::Pow, a, col), {1, 4, 9, 64, 125, 216});
    Tensor three = scalar_tensor(3);
    check_values(raw::binary(BinaryOp::Maximum, a, three), {3, 3, 3, 4, 5, 6});
    check_values(raw::binary(BinaryOp::Minimum, three, a), {1, 2, 3, 3, 3, 3});
    check_values(raw::binary(BinaryOp::Eq, a, three), {0, 0, 1, 0, 0, 0});
    check_values(raw::binary(BinaryOp::Ne, a, three), {1, 1, 0, 1, 1, 1});
    check_values(raw::binary(BinaryOp::Lt, a, three), {1, 1, 0, 0, 0, 0});
    check_values(raw::binary(BinaryOp::Le, a, three), {1, 1, 1, 0, 0, 0});
    check_values(raw::binary(BinaryOp::Gt, a, three), {0, 0, 0, 1, 1, 1});
    check_values(raw::binary(BinaryOp::Ge, a, three), {0, 0, 1, 1, 1, 1});
    CHECK(raw::binary(BinaryOp::Gt, a, three).dtype() == DType::F32);  // the inputs' dtype

    // (3, 1) + (1, 4) -> (3, 4): both sides broadcast.
    Tensor outer = raw::add(tensor({0, 10, 20}, {3, 1}), tensor({1, 2, 3, 4}, {1, 4}));
    CHECK(outer.shape() == Shape{3, 4});
    check_values(outer, {1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24});
    // Non-contiguous operands.
    Tensor at = raw::transpose(a, 0, 1);  // (3, 2)
    check_values(raw::mul(at, at), {1, 16, 4, 25, 9, 36});
    Tensor first_col = raw::slice(tensor({1, 0, 2, 0, 3, 0}, {3, 2}), 1, 0, 1);  // (3, 1), strided
    check_values(raw::sub(at, first_col), {0, 3, 0, 3, 0, 3});
    // Integer tensors.
    Tensor ia = from_vector<int64_t>({1, 2, 3}, {3}), ib = from_vector<int64_t>({10, 20, 30}, {3});
    CHECK(raw::add(ia, ib).to_vector<int64_t>() == std::vector<int64_t>{11, 22, 33});
    CHECK(raw::mul_scalar(ia, 3).to_vector<int64_t>() == std::vector<int64_t>{3, 6, 9});
}

TEST_CASE("raw binary: errors name the op, both shapes or dtypes, and the fix") {
    check_error([] { raw::add(ones({2, 3}), ones({4})); }, {"add", "(2, 3)", "(4,)", "broadcast"});
    check_error([] { raw::mul(ones({2}), ones({2}, DType::F64)); },
                {"mul", "dtypes differ", "f32", "f64"});
    check_error([] { raw::div(ones({2}, DType::I32), ones({2}, DType::I32)); },
                {"div", "i32", ".to(DType::F32)"});
    check_error([] { raw::where(ones({3}), ones({2}), ones({2})); }, {"where", "(3,)", "(2,)"});
    check_error([] { raw::masked_fill(ones({2, 3}), ones({2}), 0); },
                {"masked_fill", "(2, 3)", "(2,)"});
    check_error([] { raw::add(Tensor(), ones({2})); }, {"add", "undefined"});
}

TEST_CASE("raw scalar forms, where and masked_fill") {
    Tensor x = tensor({-2, -0.5, 0.5, 3}, {2, 2}, DType::F64);
    check_values(raw::add_scalar(x, 1.5), {-0.5, 1, 2, 4.5});
    check_values(raw::mul_scalar(x, -2), {4, 1, -1, -6});
    check_values(raw::pow_scalar(x, 2), {4, 0.25, 0.25, 9});
    Tensor floor = raw::binary(BinaryOp::Maximum, x, scalar_tensor(0.25, DType::F64));
    check_values(raw::pow_scalar(floor, 0.5), {0.5, 0.5, std::sqrt(0.5), std::sqrt(3.0)});
    check_values(raw::clamp(x, -1, 1), {-1, -0.5, 0.5, 1});

    Tensor cond = tensor({1, 0}, {2, 1}, DType::F64);  // broadcast along the rows
    check_values(raw::where(cond, x, raw::mul_scalar(x, 10)), {-2, -0.5, 5, 30});
    Tensor icond = from_vector<int64_t>({0, 3}, {2});  // any dtype: nonzero means true
    check_values(raw::where(icond, x, zeros({}, DType::F64)), {0, -0.5, 0, 3});
    check_values(raw::masked_fill(x, tensor({0, 1}, {2}, DType::F64), -INF), {-2, -INF, 0.5, -INF});
    Tensor diagonal = tensor({1, 0, 0, 1}, {2, 2});
    check_values(raw::masked_fill(raw::transpose(x, 0, 1), diagonal, 7), {7, 0.5, -0.5, 7});
}

TEST_CASE("raw add_ and mul_ work in place, broadcast and bump the version") {
    Tensor x = tensor({1, 2, 3, 4}, {2, 2}, DType::F64);
    uint64_t v0 = x.storage()->version();
    raw::add_(x, tensor({10, 20}, {2}, DType::F64), 0.5);
    check_values(x, {6, 12, 8, 14});
    CHECK(x.storage()->version() == v0 + 1);
    raw::mul_(x, 0.5);
    check_values(x, {3, 6, 4, 7});
    CHECK(x.storage()->version() == v0 + 2);
    raw::add_(raw::transpose(x, 0, 1), x, 1);  // x^T += x, reading the original x
    check_values(x, {6, 10, 10, 14});
    raw::add_(x, x, -1);
    check_values(x, {0, 0, 0, 0});
    check_error([&] { raw::add_(x, ones({3}, DType::F64)); }, {"add_", "(3,)", "(2, 2)"});
}

TEST_CASE("raw elementwise: large strided inputs split across threads give the same values") {
    int saved = num_threads();
    Generator gen(3);
    Tensor big = randn({301, 257}, gen, DType::F64);  // 77357 elements: several chunks
    Tensor bt = raw::transpose(big, 0, 1);           // (257, 301), not contiguous
    Tensor row = randn({301}, gen, DType::F64);
    std::vector<double> b = big.to_vector<double>(), r = row.to_vector<double>();
    std::vector<double> want;
    for (int64_t i = 0; i < 257; ++i)
        for (int64_t j = 0; j < 301; ++j) want.push_back(b[size_t(j * 257 + i)] * r[size_t(j)]);
    for (int threads : {1, 2, 3}) {
        set_num_threads(threads);
        CHECK(raw::mul(bt, row).to_vector<double>() == want);
        Tensor times_one = raw::mul(bt, ones({}, DType::F64));  // the elementwise path
        CHECK(raw::contiguous(bt).to_vector<double>() == times_one.to_vector<double>());
    }
    set_num_threads(saved);
}

// ---------------------------------------------------------------- reductions

TEST_CASE("raw reductions: sum, mean, max, min over any dims, keepdim, negative dims") {
    Tensor x = raw::reshape(arange(0, 24, 1, DType::F64), {2, 3, 4});  // x[i][j][k] = 12i + 4j + k
    CHECK(raw::sum(x).shape() == Shape{});
    check_values(raw::sum(x), {276});
    check_values(raw::sum(x, {0}), {12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34});
    Tensor rows = raw::sum(x, {-1}, true);
    CHECK(rows.shape() == Shape{2, 3, 1});
    check_values(rows, {6, 22, 38, 54, 70, 86});
    check_values(raw::sum(x, {2, 0}), {60, 92, 124});
    check_values(raw::mean(x, {1}), {4, 5, 6, 7, 16, 17, 18, 19});
    Tensor mx = raw::max(x, {-2}, true);
    CHECK(mx.shape() == Shape{2, 1, 4});
    check_values(mx, {8, 9, 10, 11, 20, 21, 22, 23});
    check_values(raw::min(x, {2}), {0, 4, 8, 12, 16, 20});
    check_values(raw::mean(x), {11.5});
    // A transposed input: sums over dim 0 of x^T are the row sums of x.
    Tensor m = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
    check_values(raw::sum(raw::transpose(m, 0, 1), {0}), {6, 15});
    check_values(raw::max(raw::transpose(m, 0, 1), {1}), {4, 5, 6});
    // Integers, a 0-dim tensor, NaN and an empty dim.
    Tensor ints = from_vector<int64_t>({3, -7, 5, 1}, {2, 2});
    CHECK(raw::sum(ints, {1}).to_vector<int64_t>() == std::vector<int64_t>{-4, 6});
    CHECK(raw::max(ints).item<int64_t>() == 5);
    CHECK(raw::min(ints).item<int64_t>() == -7);
    check_values(raw::sum(scalar_tensor(5)), {5});
    check_values(raw::max(tensor({1, NaN, 3})), {NaN});
    check_values(raw::min(tensor({NaN, 1, 3})), {NaN});
    check_values(raw::sum(zeros({2, 0}), {1}), {0, 0});
}

TEST_CASE("raw argmax, var and logsumexp") {
    Tensor t = tensor({1, 3, 3, 2, 0, 5, 5, 1}, {2, 4});
    Tensor am = raw::argmax(t, 1);
    CHECK(am.dtype() == DType::I64);
    CHECK(am.to_vector<int64_t>() == std::vector<int64_t>{1, 1});  // the first of tied maxima
    Tensor am0 = raw::argmax(t, -2, true);
    CHECK(am0.shape() == Shape{1, 4});
    CHECK(am0.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1, 0});
    Tensor along_rows = raw::argmax(raw::transpose(t, 0, 1), 0);
    CHECK(along_rows.to_vector<int64_t>() == std::vector<int64_t>{1, 1});

    Tensor v = tensor({1, 2, 3, 4}, {4}, DType::F64);
    check_values(raw::var(v), {5.0 / 3});
    check_values(raw::var(v, {}, false), {1.25});
    Tensor w = tensor({1, 2, 3, 2, 4, 6}, {2, 3}, DType::F64);
    check_values(raw::var(w, {1}), {1, 4});
    Tensor wk = raw::var(w, {0}, true, true);
    CHECK(wk.shape() == Shape{1, 3});
    check_values(wk, {0.5, 2, 4.5});
    check_values(raw::var(tensor({3}, {1}, DType::F64)), {NaN});  // n - 1 = 0

    Tensor big = tensor({1000, 1000}, {2}, DType::F64);
    check_values(raw::logsumexp(big, {0}), {1000 + std::log(2.0)});
    check_values(raw::logsumexp(tensor({-INF, -INF}, {2}), {0}), {-INF});
    Tensor l = raw::logsumexp(tensor({0, std::log(3.0), 1, 1}, {2, 2}, DType::F64), {-1}, true);
    CHECK(l.shape() == Shape{2, 1});
    check_values(l, {std::log(4.0), 1 + std::log(2.0)});
}

TEST_CASE("raw max, min and argmax on long rows: signs, infinities, NaN anywhere") {
    std::vector<double> v;
    for (int i = 0; i < 37; ++i) v.push_back(std::sin(i * 1.7) * 100 - 20);  // mixed signs
    Tensor x = from_vector(v, {37});
    double hi = *std::max_element(v.begin(), v.end()), lo = *std::min_element(v.begin(), v.end());
    CHECK(raw::max(x).item<double>() == hi);
    CHECK(raw::min(x).item<double>() == lo);
    CHECK(raw::max(raw::to_dtype(x, DType::F32)).item<float>() == float(hi));
    const int64_t at_max = int64_t(std::max_element(v.begin(), v.end()) - v.begin());
    CHECK(raw::argmax(x, 0).item<int64_t>() == at_max);
    check_values(raw::max(tensor({-5, -INF, -3}, {3})), {-3});
    check_values(raw::min(tensor({-5, INF, -0.5}, {3}, DType::F64)), {-5});
    check_values(raw::max(tensor({-INF, -INF}, {2})), {-INF});
    for (size_t at : {size_t(0), size_t(9), size_t(36)}) {  // NaN at the start, middle, tail
        std::vector<double> w = v;
        w[at] = NaN;
        Tensor y = from_vector(w, {37});
        check_values(raw::max(y), {NaN});
        check_values(raw::min(raw::to_dtype(y, DType::F32)), {NaN});
        CHECK(raw::argmax(y, 0).item<int64_t>() == int64_t(at));
    }
    // A NaN made by arithmetic (inf - inf) carries the sign bit on x86; it must count too.
    Tensor made = raw::sub(tensor({INF, 1, 2}, {3}), tensor({INF, 0, 0}, {3}));
    check_values(raw::max(made), {NaN});
}

TEST_CASE("raw float32 softmax and logsumexp agree with float64, and -inf gives exactly 0") {
    Generator gen(12);
    Tensor x32 = raw::mul_scalar(randn({16, 1000}, gen), 4);
    Tensor x = raw::to_dtype(x32, DType::F64);  // the same values: only the arithmetic differs
    Tensor ref = raw::softmax(x, -1), got = raw::to_dtype(raw::softmax(x32, -1), DType::F64);
    // Relative error: float's own rounding of x - max (|x - max| < 30 here) is about 2e-6.
    Tensor relative = raw::div(raw::unary(UnaryOp::Abs, raw::sub(got, ref)), ref);
    CHECK(raw::max(relative).item<double>() < 3e-6);
    Tensor log_got = raw::to_dtype(raw::log_softmax(x32, -1), DType::F64);
    CHECK(max_abs_diff(log_got, raw::log_softmax(x, -1)) < 1e-5);
    Tensor lse_got = raw::to_dtype(raw::logsumexp(x32, {1}), DType::F64);
    CHECK(max_abs_diff(lse_got, raw::logsumexp(x, {1})) < 1e-5);

    // [[0.5, -inf], [1, -1]]
    Tensor masked = raw::add(tensor({0.5, 2, 1, -1}, {2, 2}), raw::causal_mask(2));
    std::vector<float> p = raw::softmax(masked, -1).to_vector<float>();
    CHECK(p[0] == 1.f);
    CHECK(p[1] == 0.f);
    CHECK(p[2] + p[3] == doctest::Approx(1.0));
    check_values(raw::softmax(tensor({NaN, 1}, {2}), 0), {NaN, NaN});
}

TEST_CASE("raw reductions: errors for repeated dims, empty max and integer mean") {
    Tensor x = ones({2, 3, 4});
    check_error([&] { raw::sum(x, {1, -2}); }, {"sum", "twice"});
    check_error([&] { raw::mean(x, {3}); }, {"mean", "out of range"});
    check_error([] { raw::max(zeros({2, 0}), {1}); }, {"max", "(2, 0)", "size 0"});
    check_error([] { raw::mean(ones({2}, DType::I64)); }, {"mean", "floating-point"});
}

TEST_CASE("raw sum_to undoes broadcasting") {
    Tensor g = ones({2, 3, 4});
    Tensor a = raw::sum_to(g, {3, 1});
    CHECK(a.shape() == Shape{3, 1});
    check_values(a, {8, 8, 8});
    check_values(raw::sum_to(g, {4}), {6, 6, 6, 6});
    CHECK(raw::sum_to(g, {1, 3, 1}).shape() == Shape{1, 3, 1});
    CHECK(raw::sum_to(g, {}).shape() == Shape{});
    check_values(raw::sum_to(g, {}), {24});
    Tensor same = raw::sum_to(g, {2, 3, 4});
    CHECK(same.same_storage(g));
    Tensor h = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
    check_values(raw::sum_to(raw::transpose(h, 0, 1), {3, 1}), {5, 7, 9});
    check_error([&] { raw::sum_to(g, {5}); }, {"sum_to", "(5,)", "(2, 3, 4)"});
    check_error([&] { raw::sum_to(g, {2, 2, 3, 4}); }, {"sum_to", "(2, 2, 3, 4)"});
}

// ---------------------------------------------------------------- softmax

TEST_CASE("raw softmax and log_softmax over any dim, stable for large inputs") {
    Tensor x = tensor({1, 2, 3, 1, 1, 1}, {2, 3}, DType::F64);
    double s = std::exp(1) + std::exp(2) + std::exp(3);
    std::vector<double> last = {std::exp(1) / s, std::exp(2) / s, std::exp(3) / s,
                                1. / 3,          1. / 3,          1. / 3};
    check_values(raw::softmax(x, -1), last, 1e-12);
    std::vector<double> log_last;
    for (double p : last) log_last.push_back(std::log(p));
    check_values(raw::log_softmax(x, 1), log_last, 1e-12);
    double e = std::exp(1.0), e2 = std::exp(2.0);
    check_values(raw::softmax(x, 0),
                 {0.5, e / (e + 1), e2 / (e2 + 1), 0.5, 1 / (e + 1), 1 / (e2 + 1)}, 1e-12);
    // Through a transposed view: softmax over dim 1 of x^T is softmax over dim 0 of x, transposed.
    Tensor y = raw::softmax(raw::transpose(x, 0, 1), 1);
    CHECK(y.shape() == Shape{3, 2});
    CHECK(max_abs_diff(y, raw::contiguous(raw::transpose(raw::softmax(x, 0), 0, 1))) < 1e-15);
    // Huge logits: no overflow.
    check_values(raw::softmax(tensor({1000, 1001}, {2}), 0), {1 / (1 + e), e / (1 + e)}, 1e-6);
    check_values(raw::log_softmax(tensor({-1000, 0}, {2}, DType::F64), 0), {-1000, 0}, 1e-12);
    // 3-D, over the middle dim: each (i, :, k) column sums to 1.
    Generator gen(4);
    Tensor z = randn({2, 5, 3}, gen, DType::F64);
    check_values(raw::sum(raw::softmax(z, 1), {1}), std::vector<double>(6, 1.0), 1e-12);
    check_error([] { raw::softmax(ones({2, 3}), 2); }, {"softmax", "out of range"});
}

TEST_CASE("raw softmax_backward and log_softmax_backward match finite differences") {
    Generator gen(11);
    Tensor x = randn({3, 4}, gen, DType::F64), g = randn({3, 4}, gen, DType::F64);
    for (int dim : {1, 0, -1}) {
        CAPTURE(dim);
        auto softmax_of = [&](const Tensor& v) { return raw::softmax(v, dim); };
        auto log_softmax_of = [&](const Tensor& v) { return raw::log_softmax(v, dim); };
        check_values(raw::softmax_backward(raw::softmax(x, dim), g, dim),
                     numeric_grad(softmax_of, x, g), 1e-6);
        check_values(raw::log_softmax_backward(raw::log_softmax(x, dim), g, dim),
                     numeric_grad(log_softmax_of, x, g), 1e-6);
    }
    // The closed forms, by hand, on one row: dx = y * (g - sum(g * y)).
    Tensor y1 = tensor({0.2, 0.3, 0.5}, {3}, DType::F64), g1 = tensor({1, 0, 2}, {3}, DType::F64);
    double dot = 0.2 * 1 + 0.5 * 2;
    check_values(raw::softmax_backward(y1, g1, 0),
                 {0.2 * (1 - dot), 0.3 * (0 - dot), 0.5 * (2 - dot)}, 1e-12);
    Tensor ly1 = tensor({std::log(0.2), std::log(0.3), std::log(0.5)}, {3}, DType::F64);
    check_values(raw::log_softmax_backward(ly1, g1, 0),
                 {1 - 0.2 * 3, 0 - 0.3 * 3, 2 - 0.5 * 3}, 1e-12);
    check_error([&] { raw::softmax_backward(y1, ones({4}, DType::F64), 0); },
                {"softmax_backward", "(4,)", "(3,)"});
}

// ---------------------------------------------------------------- the kernels' own exp

TEST_CASE("cpu exp_fast: within 2 ulp of exp on the kernels' range, exact at the edges") {
    double worst = 0;
    for (double v = -86.0; v <= 10.0; v += 0.00137) {  // below about -87 results flush to 0
        float x = float(v);
        double want = std::exp(double(x));
        worst = std::max(worst, std::abs(double(cpu::exp_fast(x)) - want) / want);
    }
    CHECK(worst < 2 * 5.97e-8);  // 2 ulp of float
    CHECK(cpu::exp_fast(0.0f) == 1.0f);
    CHECK(cpu::exp_fast(-INFINITY) == 0.0f);
    CHECK(cpu::exp_fast(-100.0f) == 0.0f);
    CHECK(std::isnan(cpu::exp_fast(NAN)));
    CHECK(std::isnan(cpu::exp_fast(-NAN)));
    CHECK(cpu::exp_fast(88.5f) == doctest::Approx(std::exp(88.5)).epsilon(1e-6));
    CHECK(std::isinf(cpu::exp_fast(89.0f)));
}

TEST_CASE("f32 GELU and SiLU (vectorizable exp) stay within 1e-6 of the f64 formulas") {
    Tensor x = arange(-12, 12, 0.001, DType::F64);
    for (UnaryOp op : {UnaryOp::GeluTanh, UnaryOp::Silu, UnaryOp::Sigmoid}) {
        CAPTURE(std::string(unary_name(op)));
        std::vector<double> xs = x.to_vector<double>();
        double worst = 0, worst_grad = 0;
        for (double v : xs) {
            float f = float(v);
            worst = std::max(worst, std::abs(double(unary_forward(op, f)) - unary_forward(op, double(f))));
            worst_grad = std::max(worst_grad, std::abs(double(unary_derivative(op, f)) - unary_derivative(op, double(f))));
        }
        CHECK(worst < 2e-6);
        CHECK(worst_grad < 5e-6);  // the derivative grows like x^2 0.13 at |x| = 12
    }
    CHECK(std::abs(vector_expf(1.0f) - std::exp(1.0f)) < 1e-6);
    CHECK(vector_expf(-1000.0f) >= 0.0f);
    CHECK(std::isfinite(vector_expf(1000.0f)));
}
