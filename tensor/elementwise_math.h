// The formulas of Ember's elementwise ops, written once for the CPU loops and the CUDA kernels.
// Each unary op has its value f(x) and its derivative f'(x) side by side.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "tensor/random.h"  // HOST_DEVICE

namespace ember {

// A float argument must reach the float overload (tanhf), not the C function on a promoted
// double, which is several times slower. On the host the overloads live in std::; in device
// code CUDA's headers declare them at global scope.
#ifndef __CUDA_ARCH__
using std::abs;
using std::erf;
using std::exp;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;
#endif

enum class UnaryOp {
    Neg, Exp, Log, Sqrt, Rsqrt, Abs, Sign, Tanh, Sigmoid, Relu, GeluTanh, GeluErf, Silu,
};

enum class BinaryOp {
    Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge,
};

const char* unary_name(UnaryOp op);
const char* binary_name(BinaryOp op);

// tanh and the logistic sigmoid, the two transcendental functions of the activations. f64 (and
// the GPU) use the library's functions; f32 on the CPU uses a branch-free exp below, because the
// C library's tanhf and expf are calls the compiler cannot vectorize, and they took a fifth of a
// small GPT's training step (perf, GELU forward and backward).
template <typename T>
HOST_DEVICE T tanh_value(T x) {
    return tanh(x);
}
template <typename T>
HOST_DEVICE T sigmoid_value(T x) {
    return T(1) / (T(1) + exp(-x));
}

#ifndef __CUDA_ARCH__
// e^x for f32 as 2^k e^r, k = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series to r^6
// (truncation below 2e-7 relative). x is clamped to [-87, 88] so 2^k stays a normal float.
inline float vector_expf(float x) {
    x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
    float k = std::floor(x * 1.44269504f + 0.5f);
    float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;  // ln 2 in two parts
    float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
    int32_t bits = (int32_t(k) + 127) << 23;  // 2^k
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
// tanh x = (e^2x - 1) / (e^2x + 1); absolute error about 1e-7, which is what GELU needs.
template <>
inline float tanh_value<float>(float x) {
    x = x < -9.f ? -9.f : (x > 9.f ? 9.f : x);
    float e = vector_expf(2.f * x);
    return (e - 1.f) / (e + 1.f);
}
template <>
inline float sigmoid_value<float>(float x) {
    return 1.f / (1.f + vector_expf(-x));
}
#endif

// f(x)
template <typename T>
HOST_DEVICE T unary_forward(UnaryOp op, T x) {
    const T SQRT_2_OVER_PI = T(0.7978845608028654), GELU_C = T(0.044715);
    switch (op) {
        case UnaryOp::Neg: return -x;
        case UnaryOp::Exp: return exp(x);
        case UnaryOp::Log: return log(x);
        case UnaryOp::Sqrt: return sqrt(x);
        case UnaryOp::Rsqrt: return T(1) / sqrt(x);
        case UnaryOp::Abs: return x < T(0) ? -x : x;
        case UnaryOp::Sign: return T((x > T(0)) - (x < T(0)));
        case UnaryOp::Tanh: return tanh(x);
        case UnaryOp::Sigmoid: return sigmoid_value(x);
        case UnaryOp::Relu: return x > T(0) ? x : T(0);
        case UnaryOp::GeluTanh:  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            return T(0.5) * x * (T(1) + tanh_value(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)));
        case UnaryOp::GeluErf:  // x Phi(x)
            return T(0.5) * x * (T(1) + erf(x * T(0.7071067811865476)));
        case UnaryOp::Silu: return x * sigmoid_value(x);
    }
    return x;
}

// f'(x): the backward pass multiplies the incoming gradient by this.
template <typename T>
HOST_DEVICE T unary_derivative(UnaryOp op, T x) {
    const T SQRT_2_OVER_PI = T(0.7978845608028654), GELU_C = T(0.044715);
    switch (op) {
        case UnaryOp::Neg: return T(-1);
        case UnaryOp::Exp: return exp(x);
        case UnaryOp::Log: return T(1) / x;
        case UnaryOp::Sqrt: return T(0.5) / sqrt(x);
        case UnaryOp::Rsqrt: return T(-0.5) / (x * sqrt(x));
        case UnaryOp::Abs: return T((x > T(0)) - (x < T(0)));
        case UnaryOp::Sign: return T(0);
        case UnaryOp::Tanh: { T t = tanh(x); return T(1) - t * t; }
        case UnaryOp::Sigmoid: { T s = sigmoid_value(x); return s * (T(1) - s); }
        case UnaryOp::Relu: return x > T(0) ? T(1) : T(0);
        case UnaryOp::GeluTanh: {
            T inner = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
            T t = tanh_value(inner);
            T d_inner = SQRT_2_OVER_PI * (T(1) + T(3) * GELU_C * x * x);
            return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * d_inner;
        }
        case UnaryOp::GeluErf: {
            T cdf = T(0.5) * (T(1) + erf(x * T(0.7071067811865476)));
            T pdf = exp(T(-0.5) * x * x) * T(0.3989422804014327);
            return cdf + x * pdf;
        }
        case UnaryOp::Silu: { T s = sigmoid_value(x); return s * (T(1) + x * (T(1) - s)); }
    }
    return T(0);
}

template <typename T>
HOST_DEVICE T binary_forward(BinaryOp op, T a, T b) {
    switch (op) {
        case BinaryOp::Add: return a + b;
        case BinaryOp::Sub: return a - b;
        case BinaryOp::Mul: return a * b;
        case BinaryOp::Div: return a / b;
        case BinaryOp::Pow: return T(pow(double(a), double(b)));
        case BinaryOp::Maximum: return a > b ? a : b;
        case BinaryOp::Minimum: return a < b ? a : b;
        case BinaryOp::Eq: return T(a == b);
        case BinaryOp::Ne: return T(a != b);
        case BinaryOp::Lt: return T(a < b);
        case BinaryOp::Le: return T(a <= b);
        case BinaryOp::Gt: return T(a > b);
        case BinaryOp::Ge: return T(a >= b);
    }
    return a;
}

}  // namespace ember
