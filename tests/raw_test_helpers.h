// Helpers for the raw-op tests: compare a tensor's values with hand-computed numbers, check that
// an error names what it should, and take numeric gradients by central differences in float64.
#pragma once

#include <cmath>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace ember {
namespace testing {

// t's values (row-major, any layout) against `want`, within tol (absolute plus relative).
// NaN must meet NaN and an infinity the same infinity.
inline void check_values(const Tensor& t, const std::vector<double>& want, double tol = 1e-6) {
    std::vector<double> got = t.to_vector<double>();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        CAPTURE(i);
        if (std::isnan(want[i]))
            CHECK(std::isnan(got[i]));
        else if (std::isinf(want[i]))
            CHECK(got[i] == want[i]);
        else
            CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol));
    }
}

// fn must throw an ember::Error whose message holds every piece (the op, the shapes, the fix).
template <typename Fn>
void check_error(Fn&& fn, std::initializer_list<const char*> pieces) {
    CHECK_THROWS_AS(fn(), Error);
    std::string message = error_of(fn);
    INFO("message: ", message);
    for (const char* piece : pieces) {
        CAPTURE(piece);
        CHECK(contains(message, piece));
    }
}

// d/dx of sum(f(x) * weights), by central differences over every element of the f64 tensor x.
inline std::vector<double> numeric_grad(const std::function<Tensor(const Tensor&)>& f,
                                        const Tensor& x, const Tensor& weights, double h = 1e-6) {
    std::vector<double> values = x.to_vector<double>(), grad(values.size());
    auto objective = [&](const std::vector<double>& v) {
        Tensor y = f(from_vector(v, x.shape()));
        return raw::sum(raw::mul(y, weights)).item<double>();
    };
    for (size_t i = 0; i < values.size(); ++i) {
        std::vector<double> up = values, down = values;
        up[i] += h;
        down[i] -= h;
        grad[i] = (objective(up) - objective(down)) / (2 * h);
    }
    return grad;
}

}  // namespace testing
}  // namespace ember
