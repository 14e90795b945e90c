// The 4-bit decode and the products through a quantized W (out, in), written once and compiled
// twice like gemm_blocked.h: for AVX2 in quant.cpp and with AVX-512 in quant_avx512.cpp, which
// quant.cpp calls when the CPU has it. Everything has internal linkage. Each compilation defines
// Tiles<float> (the GEMM's micro-tile) before including this file.
//
//   y = x W^T   batch 1: a fused decode-and-dot per row (memory bound: half a byte per weight);
//               2..8 rows: each W row decoded once, dotted with every input row;
//               larger batches: gemm_blocked.h's blocked GEMM with the codes decoded while B's
//               panels are packed, so each weight is decoded once per product and per band.
//   dx = dy W   the same GEMM, packing W's rows (contiguous runs of codes) instead.
// Decoding: 8 codes come from 4 bytes by one broadcast and a variable shift, NF4 values from the
// 16-entry table by two in-register permutes and a blend (AVX2), or 16 codes from 8 bytes and
// one permute (AVX-512). The matvec widens whole runs of bytes instead (block_dot): 32 codes a
// step with AVX-512, 16 with AVX2.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define EMBER_QUANT_AVX2 1
#endif
#if defined(__AVX512F__)
#define EMBER_QUANT_AVX512 1
#endif

#include "tensor/cpu/gemm_blocked.h"
#include "tensor/parallel.h"
#include "tensor/quant.h"
#include "tensor/quant_kernels.h"

namespace ember {
namespace cpu {
namespace {

// ---- one code at a time (tails, odd layouts, f64) ----

inline float decode_one(const QuantView& v, int64_t flat) {
    const int64_t b = flat / v.blocksize;  // NF4 block, or INT4 group (cols % L == 0)
    const uint8_t q = v.code(flat);
    if (v.int4) return (float(q) - v.zeros[b]) * v.scales[b];
    return NF4_VALUES[q] * v.block_absmax(b);
}

#ifdef EMBER_QUANT_AVX2
// Codes of elements 0..7 from the 4 bytes at p: element 2j is the high nibble of byte j.
inline __m256i codes8(const uint8_t* p) {
    int32_t word;
    std::memcpy(&word, p, 4);
    const __m256i shifts = _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), _mm256_set1_epi32(15));
}

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// NF4_VALUES[q] per lane: two 8-entry permutes, and bit 3 of q picks between them.
struct Nf4Table {
    __m256 lo = _mm256_loadu_ps(NF4_VALUES.data()), hi = _mm256_loadu_ps(NF4_VALUES.data() + 8);
    __m256 operator()(__m256i q) const {
        __m256 from_lo = _mm256_permutevar8x32_ps(lo, q), from_hi = _mm256_permutevar8x32_ps(hi, q);
        return _mm256_blendv_ps(from_lo, from_hi, _mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));
    }
};
#endif

#ifdef EMBER_QUANT_AVX512
// Codes of elements 0..15 from the 8 bytes at p: dword 0 feeds lanes 0-7, dword 1 lanes 8-15.
inline __m512i codes16(const uint8_t* p) {
    const __m512i words = _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m512i pick = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i shifts = _mm512_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24, 4, 0, 12, 8, 20, 16, 28, 24);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi32(pick, words), shifts),
                            _mm512_set1_epi32(15));
}
// NF4_VALUES[q] per lane: the whole table fits one register.
inline __m512 nf4_lookup16(__m512i q) { return _mm512_permutexvar_ps(q, _mm512_loadu_ps(NF4_VALUES.data())); }
#endif

// out[0, n) = the values of elements [flat, flat + n) that share one block (scale, zero).
inline void decode_piece(const QuantView& v, int64_t flat, int64_t n, float scale, float zero,
                         float* out) {
    int64_t j = 0;
#ifdef EMBER_QUANT_AVX2
    if (flat % 2 == 0) {
        const uint8_t* p = v.codes + flat / 2;
#ifdef EMBER_QUANT_AVX512
        const __m512 s16 = _mm512_set1_ps(scale), z16 = _mm512_set1_ps(zero);
        if (v.int4) {
            for (; j + 16 <= n; j += 16, p += 8)
                _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(codes16(p)), z16), s16));
        } else {
            for (; j + 16 <= n; j += 16, p += 8) _mm512_storeu_ps(out + j, _mm512_mul_ps(nf4_lookup16(codes16(p)), s16));
        }
#endif
        const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zero);
        if (v.int4) {
            for (; j + 8 <= n; j += 8, p += 4)
                _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(codes8(p)), z), s));
        } else {
            const Nf4Table table;
            for (; j + 8 <= n; j += 8, p += 4) _mm256_storeu_ps(out + j, _mm256_mul_ps(table(codes8(p)), s));
        }
    }
#endif
    for (; j < n; ++j) {
        const uint8_t q = v.code(flat + j);
        out[j] = v.int4 ? (float(q) - zero) * scale : NF4_VALUES[q] * scale;
    }
}

// out[0, len) = W[row][c0, c0 + len).
inline void decode_run(const QuantView& v, int64_t row, int64_t c0, int64_t len, float* out) {
    int64_t flat = row * v.cols + c0;
    const int64_t end = flat + len;
    while (flat < end) {
        const int64_t b = flat / v.blocksize, piece_end = std::min(end, (b + 1) * v.blocksize);
        const float scale = v.int4 ? v.scales[b] : v.block_absmax(b);
        const float zero = v.int4 ? v.zeros[b] : 0.0f;
        decode_piece(v, flat, piece_end - flat, scale, zero, out);
        out += piece_end - flat;
        flat = piece_end;
    }
}

// sum a[i] b[i]
inline float dot(const float* a, const float* b, int64_t n) {
    float sum = 0;
    int64_t i = 0;
#ifdef EMBER_QUANT_AVX2
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    sum = hsum(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

// ---- batch 1: y[o] = sum_i W[o][i] x[i], decoded in registers ----

// sum over i in [c0, c0 + n) of code-value(i) * x[i] for one block: NF4 table values, or the
// integer codes themselves for INT4 (the caller applies scale and zero).
inline float dot_piece(const QuantView& v, int64_t flat, int64_t n, const float* x) {
    float sum = 0;
    int64_t j = 0;
#ifdef EMBER_QUANT_AVX2
    if (flat % 2 == 0) {
        const uint8_t* p = v.codes + flat / 2;
        __m256 acc = _mm256_setzero_ps();
#ifdef EMBER_QUANT_AVX512
        __m512 acc16 = _mm512_setzero_ps();
        if (v.int4) {
            for (; j + 16 <= n; j += 16, p += 8)
                acc16 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(codes16(p)), _mm512_loadu_ps(x + j), acc16);
        } else {
            for (; j + 16 <= n; j += 16, p += 8)
                acc16 = _mm512_fmadd_ps(nf4_lookup16(codes16(p)), _mm512_loadu_ps(x + j), acc16);
        }
        acc = _mm256_add_ps(_mm512_castps512_ps256(acc16), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc16), 1)));
#endif
        if (v.int4) {
            for (; j + 8 <= n; j += 8, p += 4)
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(codes8(p)), _mm256_loadu_ps(x + j), acc);
        } else {
            const Nf4Table table;
            for (; j + 8 <= n; j += 8, p += 4)
                acc = _mm256_fmadd_ps(table(codes8(p)), _mm256_loadu_ps(x + j), acc);
        }
        sum = hsum(acc);
    }
#endif
    for (; j < n; ++j) {
        const uint8_t q = v.code(flat + j);
        sum += (v.int4 ? float(q) : NF4_VALUES[q]) * x[j];
    }
    return sum;
}

// ---- batch 1 over blocks of a multiple of RUN codes: whole runs widened at once ----
// Each step widens RUN / 2 bytes to as many lanes: lane i holds elements 2i (high nibble) and
// 2i + 1 (low nibble); a shift gives the first, and the table permutes read only an index's low
// bits, so the NF4 lookup of the second needs no mask. x is reordered once per call to match
// (split_even_odd), and each block's scale is applied to the vector sum, so there is no
// horizontal sum per block. Decoding 16 (AVX-512) or 8 (AVX2) codes at a time from their packed
// bytes took a broadcast or permute, a variable shift and a mask before the lookup.
#if defined(EMBER_QUANT_AVX512)
using Lanes = __m512;
constexpr int64_t RUN = 32;  // 16 bytes into 16 lanes
inline Lanes lanes_zero() { return _mm512_setzero_ps(); }
inline Lanes fma_scaled(Lanes a, float s, Lanes acc) { return _mm512_fmadd_ps(a, _mm512_set1_ps(s), acc); }
inline float lanes_sum(Lanes v) { return _mm512_reduce_add_ps(v); }

// The dot product of n codes (n % RUN == 0) with x as split_even_odd orders it, unscaled.
template <bool Int4>
inline Lanes block_dot(const uint8_t* p, const float* xs, int64_t n) {
    const __m512 table = _mm512_loadu_ps(NF4_VALUES.data());
    __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += RUN, p += RUN / 2) {
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512i high = _mm512_srli_epi32(bytes, 4);
        const __m512 first = Int4 ? _mm512_cvtepi32_ps(high) : _mm512_permutexvar_ps(high, table);
        const __m512 second = Int4 ? _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)))
                                   : _mm512_permutexvar_ps(bytes, table);
        even = _mm512_fmadd_ps(first, _mm512_loadu_ps(xs + j), even);
        odd = _mm512_fmadd_ps(second, _mm512_loadu_ps(xs + j + RUN / 2), odd);
    }
    return _mm512_add_ps(even, odd);
}
#elif defined(EMBER_QUANT_AVX2)
using Lanes = __m256;
constexpr int64_t RUN = 16;  // 8 bytes into 8 lanes
inline Lanes lanes_zero() { return _mm256_setzero_ps(); }
inline Lanes fma_scaled(Lanes a, float s, Lanes acc) { return _mm256_fmadd_ps(a, _mm256_set1_ps(s), acc); }
inline float lanes_sum(Lanes v) { return hsum(v); }

// As above. Nf4Table blends its two 8-entry halves on bit 3 of the index, which for the raw
// bytes is the low nibble's: the high nibble is looked up as bytes >> 4.
template <bool Int4>
inline Lanes block_dot(const uint8_t* p, const float* xs, int64_t n) {
    const Nf4Table table;
    __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += RUN, p += RUN / 2) {
        const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        const __m256i high = _mm256_srli_epi32(bytes, 4);
        const __m256 first = Int4 ? _mm256_cvtepi32_ps(high) : table(high);
        const __m256 second = Int4 ? _mm256_cvtepi32_ps(_mm256_and_si256(bytes, _mm256_set1_epi32(15))) : table(bytes);
        even = _mm256_fmadd_ps(first, _mm256_loadu_ps(xs + j), even);
        odd = _mm256_fmadd_ps(second, _mm256_loadu_ps(xs + j + RUN / 2), odd);
    }
    return _mm256_add_ps(even, odd);
}
#endif

#ifdef EMBER_QUANT_AVX2  // (defined in the AVX-512 build too)
// x (n, n % RUN == 0) reordered for block_dot: each run of RUN as its even then its odd elements.
inline std::vector<float> split_even_odd(const float* x, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; j += RUN)
        for (int64_t i = 0; i < RUN / 2; ++i) {
            out[size_t(j + i)] = x[j + 2 * i];
            out[size_t(j + RUN / 2 + i)] = x[j + 2 * i + 1];
        }
    return out;
}

// The absmaxes of NF4 blocks [b0, b0 + n), decoded ahead of the dot products: with double
// quantization each needs its nested block, b / nested_blocksize, and a division per block inside
// the matvec's loop cost as much as a block's decoding. The nested block is tracked instead.
inline void block_absmaxes(const QuantView& v, int64_t b0, int64_t n, float* out) {
    if (v.absmax) {
        std::copy(v.absmax + b0, v.absmax + b0 + n, out);
        return;
    }
    int64_t nested = b0 / v.nested_blocksize, left = v.nested_blocksize - b0 % v.nested_blocksize;
    for (int64_t i = 0; i < n; ++i) {
        out[i] = v.nested_code[v.absmax_codes[b0 + i]] * v.nested_absmax[nested] + v.absmax_offset;
        if (--left == 0) ++nested, left = v.nested_blocksize;
    }
}

// One output of y = W x; xs is x as split_even_odd orders it. Needs blocksize % RUN == 0.
inline float row_dot(const QuantView& v, int64_t r, const float* xs, const float* group_sum) {
    const int64_t row = r * v.cols, blocks = v.cols / v.blocksize;
    const uint8_t* p = v.codes + row / 2;
    Lanes total = lanes_zero();
    if (v.int4) {
        float correction = 0;  // - s z sum(x) per group
        for (int64_t g = 0; g < blocks; ++g, p += v.blocksize / 2) {
            const int64_t b = row / v.blocksize + g;
            total = fma_scaled(block_dot<true>(p, xs + g * v.blocksize, v.blocksize), v.scales[b], total);
            correction -= v.scales[b] * v.zeros[b] * group_sum[g];
        }
        return lanes_sum(total) + correction;
    }
    constexpr int64_t CHUNK = 64;
    float absmax[CHUNK];
    for (int64_t g0 = 0; g0 < blocks; g0 += CHUNK) {
        const int64_t n = std::min(CHUNK, blocks - g0);
        block_absmaxes(v, row / v.blocksize + g0, n, absmax);
        for (int64_t g = 0; g < n; ++g, p += v.blocksize / 2)
            total = fma_scaled(block_dot<false>(p, xs + (g0 + g) * v.blocksize, v.blocksize), absmax[g], total);
    }
    return lanes_sum(total);
}
#endif

void matvec(const QuantView& v, const float* x, float* y) {
    // INT4: sum (q - z) s x = s (sum q x - z sum x), so each group needs sum x once.
    std::vector<float> group_sum;
    if (v.int4) {
        group_sum.resize(size_t(v.cols / v.blocksize));
        for (size_t g = 0; g < group_sum.size(); ++g) {
            float s = 0;
            for (int64_t i = 0; i < v.blocksize; ++i) s += x[int64_t(g) * v.blocksize + i];
            group_sum[g] = s;
        }
    }
#ifdef EMBER_QUANT_AVX2
    const bool by_run = v.blocksize % RUN == 0;
    const std::vector<float> xs = by_run ? split_even_odd(x, v.cols) : std::vector<float>();
#endif
    parallel_for(v.rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
#ifdef EMBER_QUANT_AVX2
            if (by_run) {
                y[r] = row_dot(v, r, xs.data(), group_sum.data());
                continue;
            }
#endif
            const int64_t row_flat = r * v.cols;
            float total = 0;
            for (int64_t c = 0; c < v.cols; c += v.blocksize) {
                const int64_t b = (row_flat + c) / v.blocksize;
                const float d = dot_piece(v, row_flat + c, v.blocksize, x + c);
                if (v.int4)
                    total += v.scales[b] * (d - v.zeros[b] * group_sum[size_t(c / v.blocksize)]);
                else
                    total += v.block_absmax(b) * d;
            }
            y[r] = total;
        }
    });
}

// ---- the GEMM with decoding in B's packing ----

constexpr int MR = Tiles<float>::MR, NR = Tiles<float>::NR;
static_assert(NR % 2 == 0, "packing decodes runs of NR codes that start on a byte");

// Forward, B = W^T (K = in, N = out): panel p holds B[k][j] = W[j0 + p*NR + c][k0 + k] for each k
// and c. Each W row's run of kc codes is decoded into a scratch row, then interleaved.
static_assert(NR % 8 == 0, "the forward's packing transposes 8 x 8 blocks");
void pack_b_transposed(const QuantView& v, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                       float* packed) {
    static thread_local std::vector<float> rows;
    rows.resize(std::max(rows.size(), size_t(NR * kc)));
    for (int64_t p = 0; p < nc; p += NR, packed += NR * kc) {
        const int live = int(std::min<int64_t>(NR, nc - p));
        for (int c = 0; c < live; ++c) decode_run(v, j0 + p + c, k0, kc, rows.data() + c * kc);
        int64_t k = 0;
#ifdef EMBER_QUANT_AVX2
        if (live == NR)  // 8 x 8 blocks transposed in registers, as gemm_blocked.h packs a Linear's weight
            for (; k + 8 <= kc; k += 8)
                for (int c = 0; c < NR; c += 8) transpose_8x8(rows.data() + c * kc + k, kc, packed + k * NR + c, NR);
#endif
        for (; k < kc; ++k) {
            float* dst = packed + k * NR;
            for (int c = 0; c < live; ++c) dst[c] = rows[size_t(c * kc + k)];
            for (int c = live; c < NR; ++c) dst[c] = 0.0f;
        }
    }
}

// Input gradient, B = W (K = out, N = in): panel p holds B[k][j] = W[k0 + k][j0 + p*NR + c], a
// contiguous run of NR codes of one row, decoded straight into place.
void pack_b_rows(const QuantView& v, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* packed) {
    for (int64_t p = 0; p < nc; p += NR, packed += NR * kc) {
        const int live = int(std::min<int64_t>(NR, nc - p));
        for (int64_t k = 0; k < kc; ++k) {
            float* dst = packed + k * NR;
            decode_run(v, k0 + k, j0 + p, live, dst);
            for (int c = live; c < NR; ++c) dst[c] = 0.0f;
        }
    }
}

// C[i0:i1, j0:j1] = A[i0:i1, :] @ B[:, j0:j1] with A (M, K) contiguous f32, B decoded by `pack`;
// gemm_blocked.h's gemm_band with its B packing swapped for the decoder.
template <typename PackB>
void quant_gemm_band(const float* a, float* c, int64_t ldc, int64_t K, int64_t i0, int64_t i1,
                     int64_t j0, int64_t j1, const PackB& pack) {
    auto round_up = [](int64_t x, int64_t m) { return (x + m - 1) / m * m; };
    const int64_t kc_max = std::min(KC, K);
    static thread_local std::vector<float> a_packed, b_packed;
    a_packed.resize(std::max(a_packed.size(), size_t(round_up(std::min(MC, i1 - i0), MR) * kc_max)));
    b_packed.resize(std::max(b_packed.size(), size_t(round_up(std::min(NC, j1 - j0), NR) * kc_max)));
    const MatrixView<float> av{a, K, 1};
    for (int64_t jc = j0; jc < j1; jc += NC) {
        const int64_t nc = std::min(NC, j1 - jc);
        for (int64_t pc = 0; pc < K; pc += KC) {
            const int64_t kc = std::min(KC, K - pc);
            pack(pc, kc, jc, nc, b_packed.data());
            for (int64_t ic = i0; ic < i1; ic += MC) {
                const int64_t mc = std::min(MC, i1 - ic);
                pack_a(av, ic, mc, pc, kc, a_packed.data());
                for (int64_t jr = 0; jr < nc; jr += NR)
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        micro_kernel(kc, a_packed.data() + ir * kc, b_packed.data() + jr * kc,
                                     c + (ic + ir) * ldc + jc + jr, ldc,
                                     int(std::min<int64_t>(MR, mc - ir)),
                                     int(std::min<int64_t>(NR, nc - jr)), pc > 0);
            }
        }
    }
}

// C (M, N) = A (M, K) @ B. Threads take column bands, so each decodes only its own part of W;
// when C is too narrow for that, row bands (each thread then decodes all of W).
template <typename PackB>
void quant_gemm(const float* a, float* c, int64_t M, int64_t N, int64_t K, const PackB& pack) {
    const int64_t threads = num_threads();
    const bool split_cols = N >= 2 * NR * threads || M < 2 * MR * threads;
    const GemmBands bands(M, N, MR, NR, !split_cols);
    parallel_for(bands.count, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
            int64_t i0, i1, j0, j1;
            bands.range(b, i0, i1, j0, j1);
            quant_gemm_band(a, c, N, K, i0, i1, j0, j1, pack);
        }
    });
}

// 2 <= M <= SMALL_BATCH: decode each row of W once and dot it with every input row.
constexpr int64_t SMALL_BATCH = 8;

void small_batch(const QuantView& v, const float* x, int64_t M, float* y) {
    parallel_for(v.rows, 16, [&](int64_t r0, int64_t r1) {
        static thread_local std::vector<float> row;
        row.resize(size_t(v.cols));
        for (int64_t r = r0; r < r1; ++r) {
            decode_run(v, r, 0, v.cols, row.data());
            for (int64_t m = 0; m < M; ++m) {
                y[m * v.rows + r] = dot(row.data(), x + m * v.cols, v.cols);
            }
        }
    });
}


void quant_matmul_blocked(const QuantView& v, const float* x, int64_t M, float* y) {
    if (M == 1) return matvec(v, x, y);
    if (M <= SMALL_BATCH) return small_batch(v, x, M, y);
    quant_gemm(x, y, M, v.rows, v.cols, [&](int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* p) {
        pack_b_transposed(v, k0, kc, j0, nc, p);
    });
}

void quant_matmul_t_blocked(const QuantView& v, const float* dy, int64_t M, float* dx) {
    quant_gemm(dy, dx, M, v.cols, v.rows, [&](int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* p) {
        pack_b_rows(v, k0, kc, j0, nc, p);
    });
}

}  // namespace
}  // namespace cpu
}  // namespace ember
