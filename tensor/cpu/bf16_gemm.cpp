// C (M, N) = A (M, K) f32 @ B (K, N) bf16 with AVX-512 BF16 (tensor/bf16.h), compiled with
// -mavx512bf16 for this file only (see the Makefile) and called only when the CPU has it.
//
// The blocked scheme of gemm_blocked.h (Goto & van de Geijn, 2008), with one change: the unit of
// depth is a pair. vdpbf16ps takes, in each 32-bit lane, two bf16 values of each operand and adds
// both products to an f32 accumulator:
//     acc[j] += a[2q] * b[2q][j] + a[2q+1] * b[2q+1][j]
// so a packed panel holds, for each pair q of depths, one 32-bit word per row (A) or column (B):
// the pair's two bf16 values, the lower depth in the low half. A is rounded to bf16 as it is
// packed; an odd depth is padded with a zero. vdpbf16ps flushes subnormal inputs and results to
// zero (values below 1.2e-38), which the portable path in tensor/bf16.cpp does not.
#include <algorithm>
#include <vector>
#if defined(__x86_64__) && defined(EMBER_HAVE_AVX512_BF16)
#include <immintrin.h>
#endif

#include "tensor/bf16.h"
#include "tensor/cpu/gemm_bands.h"
#include "tensor/cpu/transpose_8x8.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {

#if defined(__x86_64__) && defined(EMBER_HAVE_AVX512_BF16)

namespace {

// 8 x 32 accumulators (16 zmm) as in the f32 AVX-512 GEMM. A slab of 384 pairs covers GPT-2's depth
// of 768 in one pass, so each block of C is written once, not written and then re-read and
// added to; its B panel (384 pairs x 32 words, 48 KB) still streams through L1 well. Against
// 256 pairs, the 256 x 768 x 50257 forward (the head) ran 7-15% faster and the other GPT-2 shapes
// the same or faster; 512 pairs was slower (bench/NOTES.md, 2026-12-07 18:40-19:20).
constexpr int MR = 8, NR = 32;
constexpr int64_t KP = 384;   // pairs of depth per packed slab
constexpr int64_t MC = 120;   // rows of A packed at once
constexpr int64_t NC = 2048;  // columns of B packed at once

inline uint32_t pair(uint16_t lo, uint16_t hi) { return uint32_t(lo) | uint32_t(hi) << 16; }

// Rows [i0, i0+mc) x depths [k0, k0+kc) of A into MR-row panels: word q * MR + r of panel p is the
// pair (A[i0+p*MR+r][k0+2q], A[..][k0+2q+1]) in bf16, zero past the last row or depth.
void pack_a(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
            uint32_t* packed) {
    const int64_t kp = (kc + 1) / 2;
    for (int64_t p = 0; p < mc; p += MR, packed += MR * kp) {
        const int rows = int(std::min<int64_t>(MR, mc - p));
        int64_t q0 = 0;  // pairs packed by the fast path
        if (rows == MR && cs == 1) {
            // Eight rows contiguous along k, 32 depths at a time: vcvtne2ps2bf16 rounds a row's 32
            // floats to the 16 pairs in depth order, and an 8 x 16 transpose of those words puts
            // them pair-major. It rounds to nearest even as float_to_bf16 does, but flushes
            // subnormal floats to zero, as vdpbf16ps does with its inputs anyway.
            alignas(64) uint32_t words[MR][16];
            for (; q0 + 16 <= kc / 2; q0 += 16) {
                for (int r = 0; r < MR; ++r) {
                    const float* src = a + (i0 + p + r) * rs + k0 + 2 * q0;
                    const __m512bh w = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
                    _mm512_store_si512(words[r], (__m512i)w);
                }
                transpose_8x8(reinterpret_cast<const float*>(&words[0][0]), 16,
                              reinterpret_cast<float*>(packed + q0 * MR), MR);
                transpose_8x8(reinterpret_cast<const float*>(&words[0][8]), 16,
                              reinterpret_cast<float*>(packed + (q0 + 8) * MR), MR);
            }
        }
        if (rows == MR && rs == 1) {
            // A = dy^T (a weight gradient): the panel's 8 rows are 8 adjacent columns of dy, so a
            // pair of depths is two 8-float loads, interleaved row by row and rounded in one go.
            const __m512i interleave = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
            for (; q0 < kc / 2; ++q0) {
                const float* src = a + i0 + p + (k0 + 2 * q0) * cs;
                const __m512 even = _mm512_maskz_loadu_ps(0xff, src), odd = _mm512_maskz_loadu_ps(0xff, src + cs);
                const __m256bh words = _mm512_cvtneps_pbh(_mm512_permutex2var_ps(even, interleave, odd));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + q0 * MR), (__m256i)words);
            }
        }
        for (int r = 0; r < MR; ++r) {
            if (r >= rows) {
                for (int64_t q = 0; q < kp; ++q) packed[q * MR + r] = 0;
                continue;
            }
            const float* row = a + (i0 + p + r) * rs + k0 * cs;
            for (int64_t q = q0; q < kc / 2; ++q)
                packed[q * MR + r] = pair(float_to_bf16(row[2 * q * cs]), float_to_bf16(row[(2 * q + 1) * cs]));
            if (kc % 2) packed[(kp - 1) * MR + r] = pair(float_to_bf16(row[(kc - 1) * cs]), 0);
        }
    }
}

// Depths [k0, k0+kc) x columns [j0, j0+nc) of B into NR-column panels: word q * NR + c of panel p
// is the pair (B[k0+2q][j0+p*NR+c], B[k0+2q+1][..]), zero past the last column or depth.
void pack_b(const uint16_t* b, int64_t rs, int64_t cs, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
            uint32_t* packed) {
    const int64_t kp = (kc + 1) / 2;
    for (int64_t p = 0; p < nc; p += NR, packed += NR * kp) {
        const int cols = int(std::min<int64_t>(NR, nc - p));
        const uint16_t* src = b + k0 * rs + (j0 + p) * cs;
        int64_t q = 0;
        if (cols == NR && rs == 1 && cs % 2 == 0 && k0 % 2 == 0) {
            // B = W^T (the forward): a column is a row of W, its pairs are aligned words.
            const uint32_t* words = reinterpret_cast<const uint32_t*>(src);
            for (; q + 8 <= kc / 2; q += 8)
                for (int c = 0; c < NR; c += 8)
                    transpose_8x8(reinterpret_cast<const float*>(words + c * (cs / 2) + q), cs / 2,
                                  reinterpret_cast<float*>(packed + q * NR + c), NR);
        } else if (cols == NR && cs == 1) {
            // B = W (the input gradient): two rows of 32 bf16 interleave into 32 pairs.
            const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                                    39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
            const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
            for (; q < kc / 2; ++q) {
                const __m512i r0 = _mm512_loadu_si512(src + 2 * q * rs), r1 = _mm512_loadu_si512(src + (2 * q + 1) * rs);
                _mm512_storeu_si512(packed + q * NR, _mm512_permutex2var_epi16(r0, lo_idx, r1));
                _mm512_storeu_si512(packed + q * NR + 16, _mm512_permutex2var_epi16(r0, hi_idx, r1));
            }
        }
        for (; q < kp; ++q)  // whatever the fast paths left: edges, odd depths, other strides
            for (int c = 0; c < NR; ++c) {
                const bool in = c < cols;
                const uint16_t lo = in ? src[2 * q * rs + c * cs] : 0;
                const uint16_t hi = in && 2 * q + 1 < kc ? src[(2 * q + 1) * rs + c * cs] : 0;
                packed[q * NR + c] = pair(lo, hi);
            }
    }
}

// C tile (rows x cols, at most MR x NR; row stride ldc) (+)= A panel @ B panel over kp pairs.
void micro_kernel(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc, int rows, int cols,
                  bool accumulate) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t q = 0; q < kp; ++q, a += MR, b += NR) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const __m512bh ar = (__m512bh)_mm512_set1_epi32(int(a[r]));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? 0 : __mmask16((1u << (cols - 16)) - 1);
    for (int r = 0; r < rows; ++r) {
        float* cr = c + r * ldc;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

struct Operands {
    const float* a;
    int64_t a_rs, a_cs;
    const uint16_t* b;
    int64_t b_rs, b_cs;
    float* c;  // row stride ldc
    int64_t ldc, K;
};

// C[i0:i1, j0:j1] = A[i0:i1, :] @ B[:, j0:j1].
void gemm_band(const Operands& o, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    auto round_up = [](int64_t x, int64_t m) { return (x + m - 1) / m * m; };
    const int64_t kp_max = std::min(KP, (o.K + 1) / 2);
    // Per-thread packing buffers that only grow, as in gemm_blocked.h.
    static thread_local std::vector<uint32_t> a_packed, b_packed;
    a_packed.resize(std::max(a_packed.size(), size_t(round_up(std::min(MC, i1 - i0), MR) * kp_max)));
    b_packed.resize(std::max(b_packed.size(), size_t(round_up(std::min(NC, j1 - j0), NR) * kp_max)));
    if (o.K == 0) {
        for (int64_t i = i0; i < i1; ++i) std::fill(o.c + i * o.ldc + j0, o.c + i * o.ldc + j1, 0.0f);
        return;
    }
    for (int64_t jc = j0; jc < j1; jc += NC) {
        const int64_t nc = std::min(NC, j1 - jc);
        for (int64_t pc = 0; pc < o.K; pc += 2 * KP) {
            const int64_t kc = std::min(2 * KP, o.K - pc), kp = (kc + 1) / 2;
            pack_b(o.b, o.b_rs, o.b_cs, pc, kc, jc, nc, b_packed.data());
            for (int64_t ic = i0; ic < i1; ic += MC) {
                const int64_t mc = std::min(MC, i1 - ic);
                pack_a(o.a, o.a_rs, o.a_cs, ic, mc, pc, kc, a_packed.data());
                for (int64_t jr = 0; jr < nc; jr += NR)
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        micro_kernel(kp, a_packed.data() + ir * kp, b_packed.data() + jr * kp,
                                     o.c + (ic + ir) * o.ldc + jc + jr, o.ldc, int(std::min<int64_t>(MR, mc - ir)),
                                     int(std::min<int64_t>(NR, nc - jr)), pc > 0);
            }
        }
    }
}

bool g_allowed = true;

}  // namespace

bool cpu_has_avx512_bf16() {
    static const bool has = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl");
    return has;
}

void allow_avx512_bf16(bool allow) { g_allowed = allow; }

bool bf16_gemm(const float* a, int64_t a_rs, int64_t a_cs, const uint16_t* b, int64_t b_rs, int64_t b_cs,
               float* c, int64_t M, int64_t N, int64_t K) {
    if (!g_allowed || !cpu_has_avx512_bf16()) return false;
    const Operands o{a, a_rs, a_cs, b, b_rs, b_cs, c, N, K};
    // As the f32 GEMM: row bands when C is taller than wide, else column bands.
    const GemmBands bands(M, N, MR, NR, M >= N);
    parallel_for(bands.count, bands.worth_a_thread(K) ? 1 : bands.count, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
            int64_t i0, i1, j0, j1;
            bands.range(b, i0, i1, j0, j1);
            gemm_band(o, i0, i1, j0, j1);
        }
    });
    return true;
}

#else  // not x86-64, or built without -mavx512bf16: the portable path everywhere

bool cpu_has_avx512_bf16() { return false; }
void allow_avx512_bf16(bool) {}
bool bf16_gemm(const float*, int64_t, int64_t, const uint16_t*, int64_t, int64_t, float*, int64_t, int64_t,
               int64_t) {
    return false;
}

#endif

}  // namespace cpu
}  // namespace ember
