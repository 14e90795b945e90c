// nn layers against hand computations (loops over plain vectors), their initializers, dropout
// modes, and float64 gradchecks of the feed-forward blocks.
#include <cmath>

#include "nn/init.h"
#include "nn/layers.h"
#include "nn/loss.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

// y[r][o] = sum_i x[r][i] w[o][i] + b[o], with x flattened to rows of `in`.
std::vector<double> linear_ref(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& b, int64_t in, int64_t out) {
    int64_t rows = int64_t(x.size()) / in;
    std::vector<double> y(size_t(rows * out));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) {
            double s = b.empty() ? 0 : b[size_t(o)];
            for (int64_t i = 0; i < in; ++i) s += x[size_t(r * in + i)] * w[size_t(o * in + i)];
            y[size_t(r * out + o)] = s;
        }
    return y;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}

}  // namespace

TEST_CASE("nn::Linear: forward over leading dims matches a hand computation") {
    Generator gen(1);
    nn::Linear lin(5, 3, true, gen);
    CHECK(lin.weight.shape() == Shape{3, 5});
    CHECK(lin.bias.shape() == Shape{3});
    Tensor x = randn({2, 4, 5}, gen);
    Tensor y = lin(x);
    CHECK(y.shape() == Shape{2, 4, 3});
    auto ref = linear_ref(x.to_vector<double>(), lin.weight.to_vector<double>(),
                          lin.bias.to_vector<double>(), 5, 3);
    CHECK(max_diff(y.to_vector<double>(), ref) < 1e-5);
    // a transposed (non-contiguous) input gives the same rows
    Tensor xt = x.transpose(0, 1).contiguous().transpose(0, 1);
    CHECK(max_abs_diff(lin(xt), y) < 1e-6);

    nn::Linear no_bias(5, 2, false, gen);
    CHECK_FALSE(no_bias.bias.defined());
    CHECK(no_bias.named_parameters().size() == 1);
    CHECK(contains(error_of([&] { lin(randn({2, 4}, gen)); }), "last dim must be 5"));
}

TEST_CASE("nn::Linear: PyTorch's init bound 1/sqrt(in)") {
    Generator gen(2);
    nn::Linear lin(64, 32, true, gen);
    double bound = 1.0 / 8.0, wmax = 0, bmax = 0;
    for (double v : lin.weight.to_vector<double>()) wmax = std::max(wmax, std::abs(v));
    for (double v : lin.bias.to_vector<double>()) bmax = std::max(bmax, std::abs(v));
    CHECK(wmax <= bound);
    CHECK(wmax > 0.9 * bound);  // fills the range, not a narrower one
    CHECK(bmax <= bound);
    CHECK(bmax > 0.5 * bound);
    // the same seed gives the same weights
    Generator again(2);
    nn::Linear twin(64, 32, true, again);
    CHECK(max_abs_diff(twin.weight, lin.weight) == 0);
}

TEST_CASE("nn::LayerNorm and RMSNorm: forward matches a hand computation") {
    Generator gen(3);
    const int64_t C = 6;
    Tensor x = randn({4, C}, gen, DType::F64);
    nn::LayerNorm ln(C, 1e-5);
    nn::RMSNorm rms(C, 1e-6);
    ln.to(DType::F64);
    rms.to(DType::F64);
    nn::init::normal_(ln.weight, 1, 0.5, gen);
    nn::init::normal_(ln.bias, 0, 0.5, gen);
    nn::init::normal_(rms.weight, 1, 0.5, gen);
    std::vector<double> xv = x.to_vector<double>(), w = ln.weight.to_vector<double>(),
                        b = ln.bias.to_vector<double>(), rw = rms.weight.to_vector<double>();
    std::vector<double> ref_ln, ref_rms;
    for (int64_t r = 0; r < 4; ++r) {
        double mean = 0, var = 0, ms = 0;
        for (int64_t c = 0; c < C; ++c) mean += xv[size_t(r * C + c)] / C;
        for (int64_t c = 0; c < C; ++c) {
            double d = xv[size_t(r * C + c)] - mean;
            var += d * d / C;
            ms += xv[size_t(r * C + c)] * xv[size_t(r * C + c)] / C;
        }
        for (int64_t c = 0; c < C; ++c) {
            double v = xv[size_t(r * C + c)];
            ref_ln.push_back((v - mean) / std::sqrt(var + 1e-5) * w[size_t(c)] + b[size_t(c)]);
            ref_rms.push_back(v / std::sqrt(ms + 1e-6) * rw[size_t(c)]);
        }
    }
    CHECK(max_diff(ln(x).to_vector<double>(), ref_ln) < 1e-12);
    CHECK(max_diff(rms(x).to_vector<double>(), ref_rms) < 1e-12);
    CHECK(nn::LayerNorm(C, 1e-5, false).named_parameters().size() == 1);
}

TEST_CASE("nn::MLP: fc -> gelu -> proj matches a hand computation; names are configurable") {
    Generator gen(4);
    nn::MLP mlp(4, 8, nn::Activation::GeluTanh, true, 0.0, nullptr, gen, {"c_fc", "c_proj"});
    std::vector<std::string> names;
    for (auto& [n, p] : mlp.named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{"c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"});
    mlp.to(DType::F64);
    Tensor x = randn({3, 4}, gen, DType::F64);
    auto& fc = static_cast<nn::Linear&>(*mlp.fc);
    auto& proj = static_cast<nn::Linear&>(*mlp.proj);
    auto h = linear_ref(x.to_vector<double>(), fc.weight.to_vector<double>(),
                        fc.bias.to_vector<double>(), 4, 8);
    for (double& v : h)
        v = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    auto ref = linear_ref(h, proj.weight.to_vector<double>(), proj.bias.to_vector<double>(), 8, 4);
    CHECK(max_diff(mlp(x).to_vector<double>(), ref) < 1e-12);
}

TEST_CASE("nn::SwiGLU: down(silu(gate x) * up x) by hand, and LLaMA names") {
    Generator gen(5);
    nn::SwiGLU ff(4, 6, false, gen);
    std::vector<std::string> names;
    for (auto& [n, p] : ff.named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"});
    ff.to(DType::F64);
    Tensor x = randn({2, 4}, gen, DType::F64);
    auto w = [&](const std::shared_ptr<nn::Module>& m) {
        return static_cast<nn::Linear&>(*m).weight.to_vector<double>();
    };
    auto g = linear_ref(x.to_vector<double>(), w(ff.gate), {}, 4, 6);
    auto u = linear_ref(x.to_vector<double>(), w(ff.up), {}, 4, 6);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    auto ref = linear_ref(g, w(ff.down), {}, 6, 4);
    CHECK(max_diff(ff(x).to_vector<double>(), ref) < 1e-12);
}

TEST_CASE("nn feed-forward blocks: float64 gradcheck through input and parameters") {
    Generator gen(6);
    nn::MLP mlp(3, 5, nn::Activation::GeluErf, true, 0.0, nullptr, gen);
    nn::SwiGLU swiglu(3, 4, true, gen);
    for (nn::Module* m : std::vector<nn::Module*>{&mlp, &swiglu}) {
        CAPTURE(m->type_name());
        m->to(DType::F64);
        Tensor x = leaf({2, 2, 3}, 7);
        std::vector<Tensor> inputs = {x};
        for (Tensor& p : m->parameters()) inputs.push_back(p);
        expect_gradcheck([m](const std::vector<Tensor>& in) { return m->forward(in[0]); }, inputs);
    }
}

TEST_CASE("nn::Embedding, Dropout and activations") {
    Generator gen(7);
    nn::Embedding emb(10, 4, gen);
    Tensor ids = from_vector<int64_t>({3, 0, 9, 3}, {2, 2});
    Tensor e = emb(ids);
    CHECK(e.shape() == Shape{2, 2, 4});
    auto w = emb.weight.to_vector<double>(), ev = e.to_vector<double>();
    for (int k = 0; k < 4; ++k) {
        CHECK(ev[size_t(k)] == w[size_t(12 + k)]);
        CHECK(ev[size_t(8 + k)] == w[size_t(36 + k)]);
    }

    auto rng = std::make_shared<Generator>(8);
    nn::Dropout drop(0.5, rng);
    Tensor x = ones({1000});
    Tensor y = drop(x);
    int zeros_seen = 0;
    for (double v : y.to_vector<double>()) {
        CHECK((v == 0 || v == 2));
        zeros_seen += v == 0;
    }
    CHECK(zeros_seen > 400);
    CHECK(zeros_seen < 600);
    drop.eval();
    CHECK(max_abs_diff(drop(x), x) == 0);
    CHECK(contains(error_of([] { nn::Dropout(0.1, nullptr); }), "generator"));

    Tensor v = tensor({-1, 0.5});
    CHECK(nn::ReLU()(v).to_vector<double>() == std::vector<double>{0, 0.5});
    CHECK(max_abs_diff(nn::SiLU()(v), silu(v)) == 0);
    CHECK(max_abs_diff(nn::GELU(GeluApprox::None)(v), gelu(v, GeluApprox::None)) == 0);
    CHECK(max_abs_diff(nn::Identity()(v), v) == 0);
}

TEST_CASE("nn::init: ranges, moments and the refusal of 1-D fans") {
    Generator gen(9);
    Tensor t = empty({200, 100});
    nn::init::trunc_normal_(t, 0, 1, gen, -0.5, 0.5);
    double mn = 1e9, mx = -1e9;
    for (double v : t.to_vector<double>()) mn = std::min(mn, v), mx = std::max(mx, v);
    CHECK(mn >= -0.5);
    CHECK(mx <= 0.5);
    CHECK(mx > 0.49);

    nn::init::xavier_uniform_(t, gen);
    double b = std::sqrt(6.0 / 300.0);
    mx = 0;
    for (double v : t.to_vector<double>()) mx = std::max(mx, std::abs(v));
    CHECK(mx <= b + 1e-7);
    CHECK(mx > 0.95 * b);

    nn::init::kaiming_normal_(t, 0, gen);  // std sqrt(2 / fan_in) = sqrt(2 / 100)
    double sd = std_dev(t).item<double>();
    CHECK(std::abs(sd - std::sqrt(0.02)) < 0.01);
    nn::init::normal_(t, 3, 0.5, gen);
    CHECK(std::abs(mean(t).item<double>() - 3) < 0.02);

    Tensor bias = empty({5});
    CHECK(contains(error_of([&] { nn::init::kaiming_uniform_(bias, 1, gen); }), "rank >= 2"));
    nn::init::ones_(bias);
    CHECK(sum(bias).item<double>() == 5);
    nn::init::zeros_(bias);
    CHECK(sum(bias).item<double>() == 0);
}

TEST_CASE("nn losses: cross_entropy wraps the fused op, mse_loss by hand") {
    Generator gen(10);
    Tensor logits = randn({2, 3, 5}, gen);
    Tensor targets = from_vector<int64_t>({0, 4, -100, 2, 2, 1}, {2, 3});
    Tensor a = nn::cross_entropy(logits, targets, -100, 0.1);
    Tensor b = cross_entropy(logits, targets, -100, 0.1);
    CHECK(a.item<double>() == b.item<double>());
    CHECK(contains(error_of([&] { nn::cross_entropy(logits, from_vector<int64_t>({0, 1}, {2})); }),
                   "one more dim"));
    Tensor p = tensor({1, 2, 3}), q = tensor({1, 0, 5});
    CHECK(nn::mse_loss(p, q).item<double>() == doctest::Approx((0 + 4 + 4) / 3.0));
}
