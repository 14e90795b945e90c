// The autograd engine: accumulation, grad mode, saved-tensor versions, shape checks, freed graphs,
// frozen inputs, and gradcheck catching a wrong backward.
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

TEST_CASE("autograd: gradients accumulate across backward calls until zero_grad") {
    Tensor x = tensor({1, 2, 3}, {3}, DType::F64);
    x.set_requires_grad();
    sum(x * x).backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 4, 6});
    sum(x * 3.0).backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
    x.zero_grad();
    CHECK_FALSE(x.grad().defined());
}

// A leaf takes a gradient the backward made for it alone without copying it, and adds later ones
// in place: neither may ever reach a tensor that someone else holds.
TEST_CASE("autograd: a leaf's .grad never shares memory with a tensor someone else holds") {
    Tensor x = tensor({1, 2, 3}, {3}, DType::F64);
    x.set_requires_grad();
    Tensor seed = tensor({1, 1, 1}, {3}, DType::F64);
    x.backward(seed);  // backward from a leaf: the seed is the caller's, so .grad is a copy
    CHECK_FALSE(x.grad().same_storage(seed));
    raw::mul_(x.grad(), 5);
    CHECK(seed.to_vector<double>() == std::vector<double>{1, 1, 1});

    x.zero_grad();
    Tensor y = x * 2.0;
    y.backward(seed);
    Tensor held = x.grad();  // a handle the caller keeps across the next backward
    CHECK(held.to_vector<double>() == std::vector<double>{2, 2, 2});
    (x * 3.0).backward(seed);  // .grad is held elsewhere, so the sum is a new tensor
    CHECK(held.to_vector<double>() == std::vector<double>{2, 2, 2});
    CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 5, 5});
    CHECK_FALSE(x.grad().same_storage(held));
    held = Tensor();
    Tensor before = x.grad();
    const void* memory = before.raw_data();
    before = Tensor();
    (x * 4.0).backward(seed);  // nobody else holds .grad now: added in place, same memory
    CHECK(x.grad().to_vector<double>() == std::vector<double>{9, 9, 9});
    CHECK(x.grad().raw_data() == memory);
}

// The caller's seed, passed through an add to both of its inputs, meets a second gradient at y:
// the sum must be a new tensor, never written into the seed the caller holds.
TEST_CASE("autograd: gradients meeting at an op never write into a tensor someone else holds") {
    Tensor x = tensor({1, 2, 3}, {3}, DType::F64);
    x.set_requires_grad();
    Tensor y = x * 2.0;
    Tensor z = y + y * 3.0;  // dz/dx = 2 (1 + 3)
    Tensor seed = tensor({1, 1, 1}, {3}, DType::F64);
    z.backward(seed);
    CHECK(seed.to_vector<double>() == std::vector<double>{1, 1, 1});
    CHECK(x.grad().to_vector<double>() == std::vector<double>{8, 8, 8});
}

TEST_CASE("autograd: a tensor used twice gets both contributions") {
    Tensor x = tensor({2}, {1}, DType::F64);
    x.set_requires_grad();
    Tensor y = x * x + exp(x);  // dy/dx = 2x + e^x
    y.backward(ones({1}, DType::F64));
    CHECK(x.grad().item<double>() == doctest::Approx(4 + std::exp(2.0)));
}

TEST_CASE("autograd: requires_grad propagates, and NoGradGuard stops it") {
    Tensor w = ones({2, 2});
    w.set_requires_grad();
    Tensor c = ones({2, 2});
    CHECK((w * c).requires_grad());
    CHECK_FALSE((c * c).requires_grad());
    {
        NoGradGuard guard;
        Tensor y = w * c;
        CHECK_FALSE(y.requires_grad());
        CHECK(y.is_leaf());
    }
    CHECK(GradMode::is_enabled());
    CHECK((w + c).requires_grad());
}

TEST_CASE("autograd: a frozen input gets no gradient, and its gradient product is never run") {
    Generator gen(3);
    Tensor input = randn({4, 3}, gen, DType::F64);  // frozen: requires_grad is false
    Tensor w = leaf({3, 2}, 4);
    Tensor out = matmul(input, w);
    // The node keeps no edge for the frozen input, so its backward is told needs = {false, true}
    // and matmul's backward skips the dX product (and saved only what dW needs).
    auto node = out.grad_fn();
    REQUIRE(node);
    CHECK(node->inputs()[0] == nullptr);
    CHECK(node->inputs()[1] != nullptr);
    sum(out).backward();
    CHECK(w.grad().defined());
    CHECK_FALSE(input.grad().defined());

    // A custom op sees exactly which gradients are wanted.
    Tensor frozen = ones({2}, DType::F64), trainable = leaf({2}, 5);
    Tensor y = raw::mul(frozen, trainable);
    Needs seen;
    record("probe", y, {frozen, trainable}, [&seen](const Tensor& g, const Needs& n) {
        seen = n;
        return Grads{Tensor(), g};
    });
    sum(y).backward();
    CHECK(seen == Needs{false, true});
}

TEST_CASE("autograd: modifying a saved tensor in place is caught at backward") {
    Tensor x = leaf({3}, 1);
    Tensor y = leaf({3}, 2);
    Tensor z = x * y;  // saves both
    {
        NoGradGuard guard;
        raw::add_(y, ones({3}, DType::F64));  // bumps y's version
    }
    std::string msg = error_of([&] { sum(z).backward(); });
    CHECK(contains(msg, "mul"));
    CHECK(contains(msg, "modified in place"));
}

TEST_CASE("autograd: a second backward through a freed graph is refused; retain_graph allows it") {
    Tensor x = leaf({3}, 1);
    Tensor y = sum(exp(x));
    y.backward();
    std::string msg = error_of([&] { y.backward(); });
    CHECK(contains(msg, "retain_graph"));

    Tensor x2 = leaf({3}, 2);
    Tensor y2 = sum(exp(x2));
    y2.backward(Tensor(), /*retain_graph=*/true);
    std::vector<double> once = x2.grad().to_vector<double>();
    y2.backward();
    std::vector<double> twice = x2.grad().to_vector<double>();
    for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[i]));
}

TEST_CASE("autograd: a backward returning the wrong shape is named in the error") {
    Tensor x = leaf({2, 3}, 1);
    Tensor y = raw::mul_scalar(x, 2);
    record("broken_op", y, {x}, [](const Tensor& g, const Needs&) {
        return Grads{raw::reshape(g, {3, 2})};
    });
    std::string msg = error_of([&] { sum(y).backward(); });
    CHECK(contains(msg, "broken_op"));
    CHECK(contains(msg, "(3, 2)"));
    CHECK(contains(msg, "(2, 3)"));
}

TEST_CASE("autograd: backward of a non-scalar needs a gradient; of a constant, an explanation") {
    Tensor x = leaf({3}, 1);
    CHECK(contains(error_of([&] { exp(x).backward(); }), "non-scalar"));
    Tensor c = ones({1});
    CHECK(contains(error_of([&] { c.backward(); }), "does not require a gradient"));
}

TEST_CASE("autograd: detach cuts the graph; only leaves can change requires_grad") {
    Tensor x = leaf({3}, 1);
    Tensor y = exp(x);
    Tensor d = y.detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.same_storage(y));
    CHECK(contains(error_of([&] { y.set_requires_grad(false); }), "exp"));
    CHECK(contains(error_of([] { ones({2}, DType::I64).set_requires_grad(); }), "floating-point"));
}

TEST_CASE("autograd: dump_graph lists the nodes") {
    Tensor x = leaf({2, 2}, 1);
    Tensor y = sum(softmax(matmul(x, x), 1));
    std::string g = dump_graph(y);
    CHECK(contains(g, "sum"));
    CHECK(contains(g, "softmax"));
    CHECK(contains(g, "matmul"));
    CHECK(contains(g, "leaf"));
}

TEST_CASE("autograd: a long chain does not overflow the stack") {
    Tensor x = leaf({1}, 1);
    Tensor y = x;
    for (int i = 0; i < 20000; ++i) y = y * 1.0;
    sum(y).backward();
    CHECK(x.grad().item<double>() == doctest::Approx(1.0));
}

// ---- gradcheck checks itself ----

// softmax with a plausible wrong backward: dx = y * (g - mean(g)) instead of y * (g - sum(g * y)).
// With g = ones (what a plain-sum check feeds in) both give exactly 0, so a plain-sum gradcheck
// passes it; the random projection must not.
static Tensor broken_softmax(const Tensor& x) {
    Tensor out = raw::softmax(x, -1);
    if (needs_graph({x})) {
        SavedTensor saved(out, "broken_softmax");
        record("broken_softmax", out, {x}, [saved](const Tensor& g, const Needs&) {
            Tensor y = saved.get();
            Tensor centered = raw::sub(g, raw::expand(raw::mean(g, {-1}, true), g.shape()));
            return Grads{raw::mul(y, centered)};
        });
    }
    return out;
}

TEST_CASE("gradcheck: catches a softmax backward that a plain sum would miss") {
    Tensor x = leaf({3, 4});
    // A plain sum: the broken backward gives the right answer (0), so it would pass.
    sum(broken_softmax(x)).backward();
    CHECK(max_abs_diff(x.grad(), zeros({3, 4}, DType::F64)) < 1e-12);
    x.zero_grad();

    GradcheckResult result = gradcheck([](const std::vector<Tensor>& v) { return broken_softmax(v[0]); }, {x});
    CHECK_FALSE(result.ok);
    CHECK(contains(result.report, "broken_softmax"));
    CHECK(contains(result.report, "input 0"));
    CHECK(contains(result.report, "numeric"));
    CHECK(contains(result.report, "analytic"));

    expect_gradcheck([](const std::vector<Tensor>& v) { return softmax(v[0], -1); }, {x});
}

TEST_CASE("gradcheck: refuses f32 inputs with a clear message") {
    Tensor x = ones({2});
    x.set_requires_grad();
    std::string msg = error_of([&] { gradcheck([](const std::vector<Tensor>& v) { return v[0]; }, {x}); });
    CHECK(contains(msg, "f64"));
}
