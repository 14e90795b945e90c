// End to end: a 2-layer MLP trained with plain SGD fits a smooth regression problem.
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

TEST_CASE("training: a 2-layer MLP with SGD drives its loss down by 100x") {
    Generator gen(11);
    const int64_t N = 128, H = 32;
    // y = tanh(2x) + 0.5 x on x in [-2, 2]
    Tensor x = raw::add_scalar(raw::mul_scalar(rand({N, 1}, gen), 4.0), -2.0);
    Tensor y = raw::add(raw::unary(UnaryOp::Tanh, raw::mul_scalar(x, 2.0)), raw::mul_scalar(x, 0.5));

    auto param = [&](const Shape& shape, double scale) {
        Tensor p = raw::mul_scalar(randn(shape, gen), scale);
        p.set_requires_grad();
        return p;
    };
    Tensor w1 = param({1, H}, 1.0), b1 = param({H}, 0.1);
    Tensor w2 = param({H, 1}, 1.0 / std::sqrt(double(H))), b2 = param({1}, 0.1);
    std::vector<Tensor> params = {w1, b1, w2, b2};

    auto loss_fn = [&] {
        Tensor h = tanh(matmul(x, w1) + b1);
        Tensor pred = matmul(h, w2) + b2;
        return mean(pow(pred - y, 2.0));
    };
    double first = loss_fn().item<double>(), last = first;
    for (int step = 0; step < 3000; ++step) {
        for (Tensor& p : params) p.zero_grad();
        Tensor loss = loss_fn();
        loss.backward();
        NoGradGuard no_grad;
        for (Tensor& p : params) raw::add_(p, p.grad(), -0.1);
        last = loss.item<double>();
    }
    INFO("first loss ", first, ", last loss ", last);
    CHECK(last < first / 100);
}
