// Small per-row helpers shared by the CPU reduction, softmax, norm and loss kernels: a sum with
// a wide accumulator, a NaN-propagating max, an exp the compiler can vectorize, and a numerically
// stable (log-)softmax of one row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace ember {
namespace cpu {

// The type sums are accumulated in: double for floating types, int64 for integers.
template <typename T>
using Acc = std::conditional_t<std::is_floating_point<T>::value, double, int64_t>;

template <typename T>
inline bool is_nan(T v) {
    if constexpr (std::is_floating_point<T>::value) return std::isnan(v);
    else return false;
}

// Sum of p[0..n) (n >= 0). Eight independent partial sums break the add-latency chain (and let
// the compiler use vector adds) and are a little more accurate than one running sum.
template <typename T>
Acc<T> row_sum(const T* p, int64_t n) {  // p (n)
    constexpr int LANES = 8;
    Acc<T> lanes[LANES] = {};
    const int64_t full = n / LANES * LANES;
    for (int64_t i = 0; i < full; i += LANES)
        for (int k = 0; k < LANES; ++k) lanes[k] += Acc<T>(p[i + k]);
    Acc<T> tail = 0;
    for (int64_t i = full; i < n; ++i) tail += Acc<T>(p[i]);
    for (int k = 0; k < LANES; k += 2) lanes[k] += lanes[k + 1];
    return (lanes[0] + lanes[2]) + (lanes[4] + lanes[6]) + tail;
}

// Floats as ordered integers: the bits of a float, with the magnitude bits flipped when the sign
// bit is set, compare as integers the way the floats compare (-inf < -1 < -0 < 0 < 1 < inf).
// Integer max / min loops vectorize without fast-math flags; float ones do not.
template <typename T> struct OrderedBits;
template <> struct OrderedBits<float> { using type = int32_t; };
template <> struct OrderedBits<double> { using type = int64_t; };

template <typename T>
typename OrderedBits<T>::type order_key(T v) {
    using Bits = typename OrderedBits<T>::type;
    Bits k;
    std::memcpy(&k, &v, sizeof k);
    return k ^ ((k >> (8 * sizeof(Bits) - 1)) & std::numeric_limits<Bits>::max());
}

template <typename T>
T from_order_key(typename OrderedBits<T>::type k) {
    using Bits = typename OrderedBits<T>::type;
    k ^= (k >> (8 * sizeof(Bits) - 1)) & std::numeric_limits<Bits>::max();
    T v;
    std::memcpy(&v, &k, sizeof v);
    return v;
}

// The largest (MAX) or smallest of p[0..n) (n >= 1); a NaN anywhere makes it NaN, as in PyTorch.
template <bool MAX, typename T>
T row_extreme(const T* p, int64_t n) {  // p (n)
    if constexpr (std::is_floating_point<T>::value) {
        using Bits = typename OrderedBits<T>::type;
        Bits best = order_key(p[0]), nans = 0;
        for (int64_t i = 0; i < n; ++i) {
            const Bits k = order_key(p[i]);
            best = MAX ? (k > best ? k : best) : (k < best ? k : best);
            nans |= Bits(p[i] != p[i]);
        }
        return nans ? std::numeric_limits<T>::quiet_NaN() : from_order_key<T>(best);
    } else {
        T best = p[0];
        for (int64_t i = 1; i < n; ++i) best = MAX ? std::max(best, p[i]) : std::min(best, p[i]);
        return best;
    }
}

template <typename T>
T row_max(const T* p, int64_t n) { return row_extreme<true>(p, n); }

// exp(x) for float, written in plain arithmetic so that a loop of them vectorizes (the library
// expf is one call per element, 5-10x slower here). Cephes' method: x = n ln2 + r with
// |r| <= ln2/2, exp(r) by a degree-6 polynomial, times 2^n put together in the exponent bits.
// Within 2 ulp of exp for -87 < x <= 88 (the kernels call it on x - max <= 0); below about -87
// (exp < 3e-38) it gives 0, so exp(-inf) = 0, and NaN stays NaN. The one select is a bit mask on
// integers: with a `?:` on floats, GCC (which must assume FP ops may trap) will not vectorize.
inline float exp_fast(float x) {
    const float LO = -87.5f;  // exp(LO) is below the smallest normal float: the result is 0
    int32_t x_bits, lo_bits;
    std::memcpy(&x_bits, &x, sizeof x);
    std::memcpy(&lo_bits, &LO, sizeof LO);
    // x < LO, -inf included: a negative float's bits, read as int32, grow with its magnitude up
    // to -inf's; NaNs lie beyond and pass through unchanged.
    const int32_t NEG_INF_BITS = int32_t(0xFF800000u);
    const int32_t below = -int32_t((x_bits > lo_bits) & (x_bits <= NEG_INF_BITS));  // all ones or 0
    const int32_t c_bits = (x_bits & ~below) | (lo_bits & below);
    float xc;
    std::memcpy(&xc, &c_bits, sizeof xc);

    const float SHIFTER = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (low bits)
    const float shifted = xc * 1.44269504088896341f + SHIFTER;
    int32_t n_bits;
    std::memcpy(&n_bits, &shifted, sizeof n_bits);
    const float n = shifted - SHIFTER;                               // round(x / ln2)
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2, in two steps
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;  // exp(r)
    // 2^(n-1), then times 2, so that n = 128 still fits and n = -126 gives exactly 0.
    const uint32_t scale_bits = (uint32_t(n_bits) - 0x4B400000u + 126u) << 23;
    float half_scale;
    std::memcpy(&half_scale, &scale_bits, sizeof half_scale);
    return p * half_scale * 2.0f;
}

// exp in the kernels: the vectorizable one for float, the library's for double (the reference).
template <typename T>
T exp_of(T x) { return T(std::exp(x)); }
template <>
inline float exp_of<float>(float x) { return exp_fast(x); }

// sum_j exp(p[j] - shift) (n >= 0), in double. scratch (n) holds the exps, so that both loops
// vectorize.
template <typename T>
double sum_exp(const T* p, int64_t n, T shift, T* scratch) {  // p (n), scratch (n)
    for (int64_t j = 0; j < n; ++j) scratch[j] = exp_of(p[j] - shift);
    return double(row_sum(scratch, n));
}

// y = softmax(x) or log_softmax(x) over one row, shifted by the row max so exp never overflows.
template <typename T>
void softmax_row(const T* x, T* y, int64_t n, bool log) {  // x (n), y (n), not overlapping
    if (n == 0) return;
    const T m = row_max(x, n);
    if (log) {
        const T lse = T(std::log(sum_exp(x, n, m, y)));  // y is scratch until overwritten
        for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - m) - lse;
    } else {
        for (int64_t j = 0; j < n; ++j) y[j] = exp_of(x[j] - m);
        const T inv = T(1.0 / double(row_sum(y, n)));
        for (int64_t j = 0; j < n; ++j) y[j] *= inv;
    }
}

}  // namespace cpu
}  // namespace ember
