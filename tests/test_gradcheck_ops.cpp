// A float64 gradcheck for every differentiable op, each on plain inputs, on non-contiguous views
// (a transpose or a strided slice inside f) and on broadcast inputs.
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

using Inputs = const std::vector<Tensor>&;

TEST_CASE("gradcheck: binary arithmetic, plain, transposed and broadcast") {
    Tensor a = leaf({3, 4}, 1), b = leaf({3, 4}, 2), row = leaf({4}, 3), col = leaf({3, 1}, 4);
    Tensor pos = leaf_in({3, 4}, 0.5, 2.0, 5);
    for (auto op : {add, sub, mul}) {
        expect_gradcheck([&](Inputs x) { return op(x[0], x[1]); }, {a, b});
        expect_gradcheck([&](Inputs x) { return op(x[0].t(), x[1].t()); }, {a, b});
        expect_gradcheck([&](Inputs x) { return op(x[0], x[1]); }, {a, row});
        expect_gradcheck([&](Inputs x) { return op(x[0], x[1]); }, {col, row});
    }
    expect_gradcheck([](Inputs x) { return div(x[0], x[1]); }, {a, pos});
    expect_gradcheck([](Inputs x) { return div(x[0].t(), x[1].t()); }, {a, pos});
    expect_gradcheck([](Inputs x) { return div(x[0], x[1]); }, {row, pos});
    expect_gradcheck([](Inputs x) { return pow(x[0], x[1]); }, {pos, b});
    expect_gradcheck([](Inputs x) { return pow(x[0], x[1]); }, {pos, row});
    expect_gradcheck([](Inputs x) { return maximum(x[0], x[1]); }, {a, b});
    expect_gradcheck([](Inputs x) { return minimum(x[0], x[1]); }, {a, row});
    expect_gradcheck([](Inputs x) { return minimum(x[0].t(), x[1].t()); }, {a, b});
}

TEST_CASE("gradcheck: scalar forms and operators") {
    Tensor a = leaf({2, 5}), pos = leaf_in({2, 5}, 0.5, 2.0);
    expect_gradcheck([](Inputs x) { return x[0] * 3.0 + 1.5; }, {a});
    expect_gradcheck([](Inputs x) { return 2.0 - x[0] / 4.0; }, {a});
    expect_gradcheck([](Inputs x) { return 1.0 / x[0]; }, {pos});
    expect_gradcheck([](Inputs x) { return -x[0]; }, {a});
    expect_gradcheck([](Inputs x) { return pow(x[0], 2.5); }, {pos});
    expect_gradcheck([](Inputs x) { return pow(x[0].t(), 3.0); }, {a});
    expect_gradcheck([](Inputs x) { return clamp(x[0], -0.5, 0.5); }, {a});
}

TEST_CASE("gradcheck: unary ops, plain and strided") {
    Tensor a = leaf({4, 3}), pos = leaf_in({4, 3}, 0.3, 3.0);
    using Unary = Tensor (*)(const Tensor&);
    std::vector<std::pair<const char*, Unary>> anywhere = {
        {"neg", neg},   {"exp", exp},         {"abs", abs},   {"sign", sign}, {"tanh", tanh},
        {"sigmoid", sigmoid}, {"relu", relu}, {"silu", silu},
    };
    for (auto [name, op] : anywhere) {
        CAPTURE(name);
        expect_gradcheck([op = op](Inputs x) { return op(x[0]); }, {a});
        expect_gradcheck([op = op](Inputs x) { return op(x[0].t()); }, {a});
        expect_gradcheck([op = op](Inputs x) { return op(x[0].slice(0, 0, 4, 2)); }, {a});
    }
    for (auto [name, op] : std::vector<std::pair<const char*, Unary>>{{"log", log}, {"sqrt", sqrt}, {"rsqrt", rsqrt}}) {
        CAPTURE(name);
        expect_gradcheck([op = op](Inputs x) { return op(x[0]); }, {pos});
        expect_gradcheck([op = op](Inputs x) { return op(x[0].t()); }, {pos});
    }
    expect_gradcheck([](Inputs x) { return gelu(x[0], GeluApprox::Tanh); }, {a});
    expect_gradcheck([](Inputs x) { return gelu(x[0], GeluApprox::None); }, {a});
    expect_gradcheck([](Inputs x) { return gelu(x[0].t(), GeluApprox::None); }, {a});
}

TEST_CASE("gradcheck: where and masked_fill, with broadcast masks") {
    Tensor a = leaf({3, 4}, 1), b = leaf({4}, 2);
    Tensor cond = tensor({1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0}, {3, 4}, DType::F64);
    Tensor row_mask = tensor({0, 1, 0, 1}, {4}, DType::F64);
    expect_gradcheck([&](Inputs x) { return where(cond, x[0], x[1]); }, {a, b});
    expect_gradcheck([&](Inputs x) { return masked_fill(x[0], row_mask, -3.0); }, {a});
    expect_gradcheck([&](Inputs x) { return masked_fill(x[0].t(), cond.t(), 7.0); }, {a});
}

TEST_CASE("gradcheck: reductions over any dims, with and without keepdim") {
    Tensor a = leaf({2, 3, 4});
    for (bool keep : {false, true}) {
        CAPTURE(keep);
        expect_gradcheck([&](Inputs x) { return sum(x[0], {1}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return sum(x[0], {0, 2}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return mean(x[0], {-1}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return mean(x[0].transpose(0, 2), {0, 1}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return max(x[0], {1}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return min(x[0], {0, 2}, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return var(x[0], {2}, true, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return var(x[0], {0, 1}, false, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return std_dev(x[0], {2}, true, keep); }, {a});
        expect_gradcheck([&](Inputs x) { return logsumexp(x[0], {1}, keep); }, {a});
    }
    expect_gradcheck([](Inputs x) { return sum(x[0]); }, {a});
    expect_gradcheck([](Inputs x) { return mean(x[0].permute({2, 0, 1})); }, {a});
    expect_gradcheck([](Inputs x) { return max(x[0]); }, {a});
}

TEST_CASE("gradcheck: max and min share the gradient between ties") {
    Tensor t = tensor({1, 3, 3, 2}, {4}, DType::F64);
    t.set_requires_grad();
    max(t).backward();
    CHECK(t.grad().to_vector<double>() == std::vector<double>{0, 0.5, 0.5, 0});
}

TEST_CASE("gradcheck: softmax and log_softmax over every dim") {
    Tensor a = leaf({2, 3, 5});
    for (int dim : {0, 1, 2, -1}) {
        CAPTURE(dim);
        expect_gradcheck([dim](Inputs x) { return softmax(x[0], dim); }, {a});
        expect_gradcheck([dim](Inputs x) { return log_softmax(x[0], dim); }, {a});
    }
    expect_gradcheck([](Inputs x) { return softmax(x[0].transpose(0, 2), 1); }, {a});
}

TEST_CASE("gradcheck: attention's scaled softmax, causal (Tq < Tk, Tq > Tk) and unmasked") {
    expect_gradcheck([](Inputs x) { return scaled_softmax(x[0], 0.7, true); }, {leaf({2, 3, 5}, 41)});
    expect_gradcheck([](Inputs x) { return scaled_softmax(x[0], 1.3, true); }, {leaf({1, 5, 3}, 42)});
    expect_gradcheck([](Inputs x) { return scaled_softmax(x[0].t(), 0.5, false); }, {leaf({4, 3}, 43)});
}

TEST_CASE("gradcheck: matmul, 2-D, batched, broadcast and transposed") {
    Tensor a = leaf({3, 4}, 1), b = leaf({4, 5}, 2);
    expect_gradcheck([](Inputs x) { return matmul(x[0], x[1]); }, {a, b});
    expect_gradcheck([](Inputs x) { return matmul(x[1].t(), x[0].t()); }, {a, b});
    Tensor ba = leaf({2, 3, 4}, 3), bb = leaf({2, 4, 2}, 4);
    expect_gradcheck([](Inputs x) { return matmul(x[0], x[1]); }, {ba, bb});
    expect_gradcheck([](Inputs x) { return matmul(x[0], x[1]); }, {ba, b});   // weight shared
    Tensor c = leaf({2, 1, 3, 4}, 5), d = leaf({3, 4, 2}, 6);
    expect_gradcheck([](Inputs x) { return matmul(x[0], x[1]); }, {c, d});   // (2,1) x (3) batch
}

TEST_CASE("gradcheck: views backpropagate") {
    Tensor a = leaf({2, 3, 4});
    expect_gradcheck([](Inputs x) { return x[0].reshape({4, 6}); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].transpose(0, 1).reshape({-1}); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].view({6, 4}); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].permute({2, 0, 1}); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].slice(2, 1, 4, 2); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].narrow(1, 1, 2); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].select(1, -1); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].unsqueeze(1).expand({2, 5, 3, 4}); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].slice(0, 0, 1).squeeze(0); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].flatten(1); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].t().contiguous(); }, {a});
    expect_gradcheck([](Inputs x) { return x[0].clone() * x[0]; }, {a});
    GradcheckOptions through_f32;  // the f32 round trip rounds at 1e-7: use a coarser step
    through_f32.eps = 1e-3, through_f32.atol = 1e-3, through_f32.rtol = 1e-2;
    expect_gradcheck([](Inputs x) { return x[0].to(DType::F32).to(DType::F64); }, {a}, through_f32);
}

TEST_CASE("gradcheck: cat, stack, split and chunk") {
    Tensor a = leaf({2, 3}, 1), b = leaf({2, 2}, 2), c = leaf({2, 3}, 3);
    expect_gradcheck([](Inputs x) { return cat({x[0], x[1]}, 1); }, {a, b});
    expect_gradcheck([](Inputs x) { return cat({x[0].t(), x[1].t()}, 0); }, {a, b});
    expect_gradcheck([](Inputs x) { return stack({x[0], x[1]}, 1); }, {a, c});
    expect_gradcheck([](Inputs x) {
        auto parts = split(x[0], {1, 2}, 1);
        return parts[0] * 2.0 + sum(parts[1], {1}, true);
    }, {a});
    expect_gradcheck([](Inputs x) {
        auto parts = chunk(x[0], 3, 1);
        return parts[0] * parts[2];
    }, {a});
}

TEST_CASE("gradcheck: gather, scatter_add, index_select, embedding") {
    Tensor x = leaf({3, 4}, 1), src = leaf({2, 4}, 2);
    Tensor idx = from_vector<int64_t>({2, 0, 1, 2, 0, 0, 1, 2}, {2, 4});
    expect_gradcheck([&](Inputs v) { return gather(v[0], 0, idx); }, {x});
    Tensor idx1 = from_vector<int64_t>({3, 3, 0, 1, 1, 2}, {3, 2});
    expect_gradcheck([&](Inputs v) { return gather(v[0], 1, idx1); }, {x});
    expect_gradcheck([&](Inputs v) { return scatter_add(v[0], 0, idx, v[1]); }, {x, src});
    Tensor rows = from_vector<int64_t>({2, 0, 2}, {3});
    expect_gradcheck([&](Inputs v) { return index_select(v[0], 0, rows); }, {x});
    expect_gradcheck([&](Inputs v) { return index_select(v[0].t(), 1, rows); }, {x});
    Tensor ids = from_vector<int64_t>({1, 1, 0, 2, 1, 0}, {2, 3});
    expect_gradcheck([&](Inputs v) { return embedding(v[0], ids); }, {x});
}

TEST_CASE("gradcheck: triu and tril") {
    Tensor a = leaf({2, 4, 4});
    expect_gradcheck([](Inputs x) { return triu(x[0], 1); }, {a});
    expect_gradcheck([](Inputs x) { return tril(x[0].transpose(1, 2), -1); }, {a});
}

TEST_CASE("gradcheck: layer_norm and rms_norm, with and without affine weights") {
    Tensor x = leaf({3, 5}, 1), w = leaf({5}, 2), b = leaf({5}, 3);
    expect_gradcheck([](Inputs v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b});
    expect_gradcheck([](Inputs v) { return layer_norm(v[0], Tensor(), Tensor()); }, {x});
    expect_gradcheck([](Inputs v) { return layer_norm(v[0].t().t(), v[1], v[2], 1e-3); }, {x, w, b});
    Tensor x3 = leaf({2, 5, 3}, 4);
    expect_gradcheck([](Inputs v) { return layer_norm(v[0].transpose(1, 2), v[1], v[2]); }, {x3, w, b});
    expect_gradcheck([](Inputs v) { return rms_norm(v[0], v[1]); }, {x, w});
    expect_gradcheck([](Inputs v) { return rms_norm(v[0].transpose(1, 2), Tensor()); }, {x3});
}

TEST_CASE("gradcheck: cross_entropy with ignore_index and label smoothing") {
    Tensor logits = leaf({5, 4});
    Tensor targets = from_vector<int64_t>({0, 3, -100, 1, 2}, {5});
    expect_gradcheck([&](Inputs v) { return cross_entropy(v[0], targets); }, {logits});
    expect_gradcheck([&](Inputs v) { return cross_entropy(v[0], targets, -100, 0.1); }, {logits});
    Tensor t2 = from_vector<int64_t>({0, 3, 3, 1}, {2, 2});
    Tensor l3 = leaf({2, 2, 4}, 7);
    expect_gradcheck([&](Inputs v) { return cross_entropy(v[0], t2, 3, 0.2); }, {l3});
    expect_gradcheck([&](Inputs v) { return cross_entropy(v[0].transpose(0, 1), t2); }, {l3});
}

TEST_CASE("gradcheck: dropout with a fixed generator") {
    Tensor a = leaf({4, 6});
    expect_gradcheck([](Inputs x) {
        Generator gen(7);  // the same mask on every call, as gradcheck needs
        return dropout(x[0], 0.3, gen);
    }, {a});
}
