// Shared test helpers: float64 inputs, gradcheck assertions and message checks.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"

namespace ember {
namespace testing {

// A leaf of standard-normal f64 values that requires a gradient, from a fixed seed.
inline Tensor leaf(const Shape& shape, uint64_t seed = 1) {
    Generator gen(seed);
    Tensor t = randn(shape, gen, DType::F64);
    t.set_requires_grad();
    return t;
}

// Standard-normal f32 values times `scale`, from a fixed seed (no gradient): test data.
inline Tensor seeded_normal(const Shape& shape, uint64_t seed, double scale = 1.0) {
    Generator gen(seed);
    return raw::mul_scalar(randn(shape, gen), scale);
}

// Like leaf(), with values in [lo, hi]: for ops defined only on part of the line (log, sqrt).
inline Tensor leaf_in(const Shape& shape, double lo, double hi, uint64_t seed = 1) {
    Generator gen(seed);
    Tensor t = raw::add_scalar(raw::mul_scalar(rand(shape, gen, DType::F64), hi - lo), lo);
    t.set_requires_grad();
    return t;
}

// Asserts that gradcheck passes, printing its report when it does not.
inline void expect_gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                             GradcheckOptions options = {}) {
    GradcheckResult result = gradcheck(f, inputs, options);
    INFO(result.report);
    CHECK(result.ok);
    CHECK(result.elements_checked > 0);
}

// Runs fn and returns the message of the ember::Error it throws ("" if it throws none).
template <typename Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// Same shape, dtype and every value (compared as doubles, so -0 equals 0 and NaN nothing).
inline bool bit_equal(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
    std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    for (size_t i = 0; i < x.size(); ++i)
        if (!(x[i] == y[i])) return false;
    return true;
}

// Max |a - b| over all elements (same shape required).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
    return m;
}

// The largest |got - want| of a product a b, relative to sum_k |a_ik| |b_kj|, the size of what
// each entry adds up: f32 sums of exact products stay within a few K * 2^-24 of it. want, a and b
// are f64 (a and b as the product met them: bf16-rounded values, say), got any float dtype.
inline double error_over_magnitude(const Tensor& got, const Tensor& want, const Tensor& a, const Tensor& b) {
    auto abs64 = [](const Tensor& t) {
        std::vector<double> v = raw::to_dtype(t, DType::F64).to_vector<double>();
        for (double& x : v) x = std::abs(x);
        return from_vector(v, t.shape());
    };
    Tensor mag = raw::matmul(abs64(a), abs64(b));
    std::vector<double> g = raw::to_dtype(got, DType::F64).to_vector<double>(), w = want.to_vector<double>(),
                        m = mag.to_vector<double>();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(g[i] - w[i]) / std::max(m[i], 1e-30));
    return worst;
}

}  // namespace testing
}  // namespace ember
