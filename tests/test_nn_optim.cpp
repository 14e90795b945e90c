// Optimizers against hand-computed updates, the decay / no-decay split, state save / restore
// continuing bit for bit, gradient clipping, schedules, and a tiny transformer that learns.
#include <cmath>

#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "nn/transformer.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

Tensor param(std::vector<double> values, DType dtype = DType::F64) {
    Tensor p = raw::to_dtype(from_vector(values, {int64_t(values.size())}), dtype);
    p.set_requires_grad();
    return p;
}

void set_grad(const Tensor& p, std::vector<double> g) {
    p.set_grad(raw::to_dtype(from_vector(g, p.shape()), p.dtype()));
}

}  // namespace

TEST_CASE("AdamW: two steps match torch.optim.AdamW's formulas by hand") {
    for (DType dtype : {DType::F64, DType::F32}) {
        CAPTURE(dtype);
        std::vector<double> w = {0.5, -1.0, 2.0};
        Tensor p = param(w, dtype);
        nn::AdamWOptions o;
        o.lr = 0.1, o.beta1 = 0.8, o.beta2 = 0.9, o.eps = 1e-3, o.weight_decay = 0.2;
        nn::AdamW opt(std::vector<Tensor>{p}, o);
        std::vector<std::vector<double>> grads = {{0.1, -0.2, 0.0}, {0.3, 0.1, -0.5}};
        std::vector<double> m(3, 0), v(3, 0);
        for (int t = 1; t <= 2; ++t) {
            set_grad(p, grads[size_t(t - 1)]);
            opt.step();
            for (size_t i = 0; i < 3; ++i) {
                double g = grads[size_t(t - 1)][i];
                w[i] *= 1 - o.lr * o.weight_decay;
                m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
                v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
                double mhat = m[i] / (1 - std::pow(o.beta1, t)), vhat = v[i] / (1 - std::pow(o.beta2, t));
                w[i] -= o.lr * mhat / (std::sqrt(vhat) + o.eps);
            }
        }
        auto got = p.to_vector<double>();
        for (size_t i = 0; i < 3; ++i) CHECK(got[i] == doctest::Approx(w[i]).epsilon(dtype == DType::F64 ? 1e-12 : 1e-6));
        CHECK(opt.step_count == 2);
    }
}

TEST_CASE("SGD: momentum, dampening and Nesterov match hand computations") {
    struct Case { double momentum, dampening, wd; bool nesterov; };
    for (Case c : {Case{0, 0, 0, false}, Case{0.9, 0, 0.1, false}, Case{0.9, 0.3, 0, false},
                   Case{0.5, 0, 0.1, true}}) {
        CAPTURE(c.momentum);
        CAPTURE(c.nesterov);
        std::vector<double> w = {1.0, -2.0};
        Tensor p = param(w);
        nn::SGDOptions o;
        o.lr = 0.1, o.momentum = c.momentum, o.dampening = c.dampening, o.weight_decay = c.wd;
        o.nesterov = c.nesterov;
        nn::SGD opt(std::vector<Tensor>{p}, o);
        std::vector<std::vector<double>> grads = {{0.5, -1.0}, {0.2, 0.4}, {-0.3, 0.1}};
        std::vector<double> buf(2, 0);
        for (size_t t = 0; t < grads.size(); ++t) {
            set_grad(p, grads[t]);
            opt.step();
            for (size_t i = 0; i < 2; ++i) {
                double d = grads[t][i] + c.wd * w[i];
                if (c.momentum != 0) {
                    buf[i] = t == 0 ? d : c.momentum * buf[i] + (1 - c.dampening) * d;
                    d = c.nesterov ? d + c.momentum * buf[i] : buf[i];
                }
                w[i] -= o.lr * d;
            }
        }
        auto got = p.to_vector<double>();
        for (size_t i = 0; i < 2; ++i) CHECK(got[i] == doctest::Approx(w[i]).epsilon(1e-12));
    }
    CHECK(contains(error_of([] { nn::SGDOptions o; o.nesterov = true; nn::SGD(std::vector<Tensor>{}, o); }),
                   "Nesterov"));
}

TEST_CASE("decay_groups: biases, norm weights and 1-D params get no weight decay") {
    Generator gen(1);
    nn::BlockConfig cfg;
    cfg.attn.dim = 4, cfg.attn.heads = 2;
    auto block = std::make_shared<nn::TransformerBlock>(cfg, gen);
    block->ln1->requires_grad_(false);  // frozen: in no group
    std::vector<nn::ParamGroup> groups = nn::decay_groups(*block, 0.1, 0.5);
    REQUIRE(groups.size() == 2);
    CHECK(groups[0].weight_decay == 0.5);
    CHECK(groups[1].weight_decay == 0);
    CHECK(groups[0].params.size() == 4);  // c_attn, c_proj, c_fc, c_proj weights
    CHECK(groups[1].params.size() == 6);  // their 4 biases, ln_2 weight and bias
    for (const Tensor& p : groups[0].params) CHECK(p.dim() == 2);
    for (const Tensor& p : groups[1].params) CHECK(p.dim() == 1);

    // With zero gradients AdamW only decays: decayed params shrink by (1 - lr wd), the rest and
    // the frozen ones stay bit-identical.
    std::vector<Tensor> before;
    for (const Tensor& p : block->parameters()) before.push_back(p.clone());
    for (const Tensor& p : block->parameters())
        if (p.requires_grad()) p.set_grad(zeros_like(p));
    nn::AdamW opt(groups);
    opt.step();
    auto params = block->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
        bool decayed = false;
        for (const Tensor& d : groups[0].params) decayed = decayed || d.same_storage(params[i]);
        Tensor expect = decayed ? raw::mul_scalar(before[i], 1 - 0.1 * 0.5) : before[i];
        CHECK(max_abs_diff(params[i], expect) < (decayed ? 1e-7 : 0.0) + 1e-300);
    }
    // frozen parameters have no state
    nn::StateDict st = opt.state();
    CHECK(st.count("0.0.exp_avg") == 1);
    CHECK(st.count("1.5.exp_avg") == 1);
    CHECK(st.size() == 1 + 10 * 3);  // step_count + (exp_avg, exp_avg_sq, step) per trained param
}

TEST_CASE("Optimizers: parameters without a grad are skipped and get no state") {
    Tensor a = param({1, 2}), b = param({3, 4});
    nn::AdamW opt(std::vector<Tensor>{a, b});
    set_grad(a, {0.1, 0.1});
    opt.step();
    CHECK(b.to_vector<double>() == std::vector<double>{3, 4});
    CHECK(a.to_vector<double>() != std::vector<double>{1, 2});
    nn::StateDict st = opt.state();
    CHECK(st.count("0.0.exp_avg") == 1);
    CHECK(st.count("0.1.exp_avg") == 0);
    CHECK(st.at("0.0.step").item<int64_t>() == 1);
}

TEST_CASE("Optimizer state: save, restore into a fresh optimizer, continue bit-identically") {
    for (int kind = 0; kind < 2; ++kind) {
        CAPTURE(kind);
        Generator gen(2);
        auto make = [&](std::vector<Tensor> ps) -> std::unique_ptr<nn::Optimizer> {
            if (kind == 0) return std::make_unique<nn::AdamW>(std::vector<nn::ParamGroup>{{ps, 0.05, 0.1}});
            nn::SGDOptions o;
            o.momentum = 0.9, o.nesterov = true;
            return std::make_unique<nn::SGD>(std::vector<nn::ParamGroup>{{ps, 0.05, 0.1}}, o);
        };
        Tensor w = randn({3, 4}, gen);
        w.set_requires_grad();
        std::vector<Tensor> grads;
        for (int i = 0; i < 6; ++i) grads.push_back(randn({3, 4}, gen));
        auto opt = make({w});
        for (int i = 0; i < 3; ++i) {
            w.set_grad(grads[size_t(i)]);
            opt->step();
        }
        nn::StateDict saved = opt->state();
        Tensor w_saved = w.detach().clone();
        for (int i = 3; i < 6; ++i) {
            w.set_grad(grads[size_t(i)]);
            opt->step();
        }
        // resume: a copy of the weights and a new optimizer loaded from the saved state
        Tensor w2 = w_saved.clone();
        w2.set_requires_grad();
        auto resumed = make({w2});
        resumed->load_state(saved);
        CHECK(resumed->step_count == 3);
        for (int i = 3; i < 6; ++i) {
            w2.set_grad(grads[size_t(i)]);
            resumed->step();
        }
        CHECK(max_abs_diff(w, w2) == 0);
        // without the state the continuation differs (the test can fail)
        Tensor w3 = w_saved.clone();
        w3.set_requires_grad();
        auto fresh = make({w3});
        for (int i = 3; i < 6; ++i) {
            w3.set_grad(grads[size_t(i)]);
            fresh->step();
        }
        CHECK(max_abs_diff(w, w3) > 1e-6);
    }
    Tensor p = param({1, 2});
    nn::AdamW opt(std::vector<Tensor>{p});
    nn::StateDict bad = {{"0.0.exp_avg", zeros({3}, DType::F64)}};
    CHECK(contains(error_of([&] { opt.load_state(bad); }), "shape"));
    bad = {{"1.0.exp_avg", zeros({2}, DType::F64)}};
    CHECK(contains(error_of([&] { opt.load_state(bad); }), "does not have"));
    bad = {{"x.exp_avg", zeros({2}, DType::F64)}};
    CHECK(contains(error_of([&] { opt.load_state(bad); }), "<group>.<index>.<name>"));
}

TEST_CASE("raw::adamw_: refuses mismatched state") {
    Tensor p = zeros({3}), g = zeros({3}), m = zeros({3}), v = zeros({4});
    raw::AdamWParams hp{0.1, 0.9, 0.999, 1e-8, 0, 1};
    CHECK(contains(error_of([&] { raw::adamw_(p, g, m, v, hp); }), "exp_avg_sq has shape (4,)"));
    hp.step = 0;
    CHECK(contains(error_of([&] { raw::adamw_(p, g, m, zeros({3}), hp); }), "1-based"));
    CHECK(contains(error_of([&] { raw::adamw_(p, g, zeros({3}, DType::F64), zeros({3}), hp); }), "dtypes"));
}

TEST_CASE("clip_grad_norm: returns the total norm and scales down to max_norm") {
    Tensor a = param({0, 0}), b = param({0, 0, 0}), c = param({5});
    set_grad(a, {3, 0});
    set_grad(b, {0, 4, 0});  // total sqrt(9 + 16) = 5; c has no grad
    double total = nn::clip_grad_norm({a, b, c}, 1.0);
    CHECK(total == doctest::Approx(5));
    CHECK(a.grad().to_vector<double>()[0] == doctest::Approx(0.6).epsilon(1e-6));
    CHECK(b.grad().to_vector<double>()[1] == doctest::Approx(0.8).epsilon(1e-6));
    // under the limit nothing changes
    total = nn::clip_grad_norm({a, b}, 10.0);
    CHECK(total == doctest::Approx(1).epsilon(1e-6));
    CHECK(a.grad().to_vector<double>()[0] == doctest::Approx(0.6).epsilon(1e-6));
}

TEST_CASE("LR schedules: warmup, cosine and linear decay to the floor") {
    nn::LRSchedule s{nn::ScheduleKind::Cosine, 1.0, 10, 110, 0.1};
    CHECK(s.lr_at(0) == 0);
    CHECK(s.lr_at(5) == doctest::Approx(0.5));
    CHECK(s.lr_at(10) == doctest::Approx(1.0));
    CHECK(s.lr_at(60) == doctest::Approx(0.1 + 0.9 * 0.5));
    CHECK(s.lr_at(110) == doctest::Approx(0.1));
    CHECK(s.lr_at(500) == doctest::Approx(0.1));
    CHECK(nn::linear_with_warmup(35, 10, 110, 0) == doctest::Approx(0.75));
    CHECK(nn::linear_with_warmup(200, 10, 110, 0.2) == doctest::Approx(0.2));
    for (int64_t t = 11; t < 110; ++t) CHECK(s.lr_at(t) < s.lr_at(t - 1));
}

TEST_CASE("training: a one-block transformer learns a sequence task with AdamW, clipping, cosine") {
    Generator gen(3);
    const int64_t V = 7, C = 16, B = 4, T = 6;
    nn::BlockConfig cfg;
    cfg.attn.dim = C, cfg.attn.heads = 2;
    auto block = std::make_shared<nn::TransformerBlock>(cfg, gen);
    nn::Embedding emb(V, C, gen);
    nn::Linear head(C, V, false, gen);
    // next token = (token + 1) mod V on random sequences
    std::vector<int64_t> ids_v, tgt_v;
    for (int64_t i = 0; i < B * T; ++i) {
        int64_t start = (i * 5) % V;
        ids_v.push_back(start);
        tgt_v.push_back((start + 1) % V);
    }
    Tensor ids = from_vector(ids_v, {B, T}), targets = from_vector(tgt_v, {B, T});
    std::vector<Tensor> params = block->parameters();
    params.push_back(emb.weight);
    params.push_back(head.weight);
    nn::AdamW opt(std::vector<nn::ParamGroup>{{params, 1e-2, 0.01}});
    nn::LRSchedule sched{nn::ScheduleKind::Cosine, 1e-2, 5, 60, 0.1};
    auto loss_fn = [&] { return nn::cross_entropy(head(block->forward(emb.forward_ids(ids))), targets); };
    double first = loss_fn().item<double>(), last = first;
    for (int step = 0; step < 60; ++step) {
        opt.zero_grad();
        Tensor loss = loss_fn();
        loss.backward();
        nn::clip_grad_norm(params, 1.0);
        opt.set_lr_factor(sched.factor(opt.step_count));
        opt.step();
        last = loss.item<double>();
    }
    INFO("first ", first, " last ", last);
    CHECK(last < first * 0.3);
}
