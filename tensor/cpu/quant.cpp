// CPU kernels for 4-bit weights (tensor/quant.h): quantize and dequantize here, and the products
// of quant_blocked.h, compiled here for AVX2 and in quant_avx512.cpp for AVX-512 (picked at run
// time, as the f32 GEMM is).
#include <cmath>
#include <limits>

namespace ember {
namespace cpu {
namespace {
// The f32 GEMM's AVX2 tiles (tensor/cpu/matmul.cpp): 6 x 16 accumulators.
template <typename T> struct Tiles;
template <> struct Tiles<float> { static constexpr int MR = 6, NR = 16; };
}  // namespace
}  // namespace cpu
}  // namespace ember

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/quant_blocked.h"

namespace ember {
namespace cpu {

void quant_matmul_avx512(const QuantView& w, const float* x, int64_t M, float* y);       // quant_avx512.cpp
void quant_matmul_t_avx512(const QuantView& w, const float* dy, int64_t M, float* dx);  // likewise

namespace {
inline uint8_t nf4_code(float x) {  // csrc/kernels.cu dQuantizeNF4: the mid-points x exceeds
    uint8_t q = 0;
    for (float m : NF4_MIDPOINTS) q += x > m;
    return q;
}

// The same for x[0, n) * inv into packed bytes; n even.
inline void nf4_codes(const float* x, int64_t n, float inv, uint8_t* out) {
    int64_t i = 0;
#ifdef EMBER_QUANT_AVX2
    const __m256 scale = _mm256_set1_ps(inv);
    for (; i + 8 <= n; i += 8) {
        const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), scale);
        __m256i q = _mm256_setzero_si256();
        for (float m : NF4_MIDPOINTS)  // a true compare is all ones: -1
            q = _mm256_sub_epi32(q, _mm256_castps_si256(_mm256_cmp_ps(y, _mm256_set1_ps(m), _CMP_GT_OQ)));
        alignas(32) int32_t c[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(c), q);
        for (int j = 0; j < 8; j += 2) out[(i + j) / 2] = uint8_t(c[j] << 4 | c[j + 1]);
    }
#endif
    for (; i < n; i += 2) out[i / 2] = uint8_t(nf4_code(x[i] * inv) << 4 | nf4_code(x[i + 1] * inv));
}
}  // namespace

// ---- quantize ----

void quantize_nf4(const float* w, int64_t n, int64_t blocksize, uint8_t* codes, float* absmax) {
    const int64_t blocks = (n + blocksize - 1) / blocksize;
    parallel_for(blocks, 64, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t lo = b * blocksize, hi = std::min(n, lo + blocksize);
            float m = -std::numeric_limits<float>::max();  // as kQuantizeBlockwise
            for (int64_t i = lo; i < hi; ++i) m = std::fmax(m, std::fabs(w[i]));
            absmax[b] = m;
            const float inv = 1.0f / m;  // bitsandbytes multiplies by the reciprocal
            const int64_t even = (hi - lo) / 2 * 2;  // blocks are even; only the last may be odd
            nf4_codes(w + lo, even, inv, codes + lo / 2);
            if (lo + even < hi) codes[(lo + even) / 2] = uint8_t(nf4_code(w[lo + even] * inv) << 4);
        }
    });
}

// GPTQ's asymmetric min-max quantizer (quant.py Quantizer.find_params, sym=False), per group:
// the range is widened to include 0, s = (max - min) / 15, z = round(-min / s),
// q = clamp(round(w / s) + z, 0, 15); an all-zero group gets the range [-1, 1].
void quantize_int4(const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* codes,
                   float* scales, float* zeros) {
    const int64_t groups = cols / group;
    parallel_for(rows * groups, 64, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
            const float* x = w + g * group;  // groups tile each row: flat index g * group
            float lo = 0, hi = 0;
            for (int64_t i = 0; i < group; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
            if (lo == 0 && hi == 0) lo = -1, hi = 1;
            const float s = (hi - lo) / 15.0f, z = std::nearbyint(-lo / s);
            scales[g] = s, zeros[g] = z;
            for (int64_t i = 0; i < group; i += 2) {
                auto q = [&](float v) { return uint8_t(std::clamp(std::nearbyint(v / s) + z, 0.0f, 15.0f)); };
                codes[(g * group + i) / 2] = uint8_t(q(x[i]) << 4 | q(x[i + 1]));
            }
        }
    });
}

// ---- dequantize ----

void dequantize(const QuantView& v, float* out) {
    if (v.rows_are_blocked()) {
        parallel_for(v.rows, 16, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) decode_run(v, r, 0, v.cols, out + r * v.cols);
        });
        return;
    }
    parallel_for(v.rows * v.cols, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) out[i] = decode_one(v, i);
    });
}

void dequantize(const QuantView& v, double* out) {  // the f32 values, widened
    for (int64_t i = 0; i < v.rows * v.cols; ++i) out[i] = double(decode_one(v, i));
}

// ---- products ----

static bool g_avx512_allowed = true;
void allow_avx512_quant(bool allow) { g_avx512_allowed = allow; }

void quant_matmul(const QuantView& v, const float* x, int64_t M, float* y) {
    if (g_avx512_allowed && cpu_has_avx512()) return quant_matmul_avx512(v, x, M, y);
    quant_matmul_blocked(v, x, M, y);
}

void quant_matmul_t(const QuantView& v, const float* dy, int64_t M, float* dx) {
    if (g_avx512_allowed && cpu_has_avx512()) return quant_matmul_t_avx512(v, dy, M, dx);
    quant_matmul_t_blocked(v, dy, M, dx);
}

}  // namespace cpu
}  // namespace ember
