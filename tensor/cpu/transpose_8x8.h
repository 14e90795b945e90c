// The in-register 8 x 8 transpose of 32-bit values (AVX), for packing: eight rows of a matrix
// that are contiguous along k become eight rows of a packed panel. The f32 GEMM packs a Linear's
// weight with it (gemm_blocked.h), the bf16 GEMM both operands' pairs of bf16 (bf16_gemm.cpp: the
// shuffles move bits and never round), and the fused attention its key and value tiles
// (attention.cpp). Internal linkage, so each file keeps its own build of it for the instruction
// set it is compiled for.
#pragma once

#if defined(__AVX__)
#include <immintrin.h>

#include <cstdint>

namespace ember {
namespace cpu {
namespace {

// dst[k * ld + c] = src[c * cs + k] for c, k in 0..7: eight columns of B that are contiguous
// along k (eight rows of a Linear weight) become eight rows of a packed panel, by the usual
// in-register 8 x 8 transpose (unpack pairs, shuffle quads, swap 128-bit halves).
inline void transpose_8x8(const float* src, int64_t cs, float* dst, int64_t ld) {
    __m256 r[8], t[8], u[8];
    for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(src + c * cs);
    for (int c = 0; c < 8; c += 2) {
        t[c] = _mm256_unpacklo_ps(r[c], r[c + 1]);
        t[c + 1] = _mm256_unpackhi_ps(r[c], r[c + 1]);
    }
    for (int c = 0; c < 8; c += 4) {
        u[c + 0] = _mm256_shuffle_ps(t[c], t[c + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[c + 1] = _mm256_shuffle_ps(t[c], t[c + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[c + 2] = _mm256_shuffle_ps(t[c + 1], t[c + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[c + 3] = _mm256_shuffle_ps(t[c + 1], t[c + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * ld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * ld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

}  // namespace
}  // namespace cpu
}  // namespace ember
#endif
