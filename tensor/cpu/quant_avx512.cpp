// The 4-bit products of quant_blocked.h compiled with AVX-512 (see the Makefile's flags for this
// file): 8 x 32 GEMM tiles as in matmul_avx512.cpp, and 16 codes decoded per permute.
// quant.cpp calls these only when cpu_has_avx512() says so.
//
// GCC 12 warns "'__Y' may be used uninitialized" inside its own avx512fintrin.h when the masked
// builtins behind _mm512_srlv_epi32 / _mm512_permutexvar_* are inlined (their pass-through
// operand is _mm512_undefined_*, which the warning does not understand); nothing of ours is
// uninitialized, so the warning is off for this file only (clang has no such warning).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace ember {
namespace cpu {
namespace {
template <typename T> struct Tiles;
template <> struct Tiles<float> { static constexpr int MR = 8, NR = 32; };
}  // namespace
}  // namespace cpu
}  // namespace ember

#include "tensor/cpu/quant_blocked.h"

namespace ember {
namespace cpu {

void quant_matmul_avx512(const QuantView& v, const float* x, int64_t M, float* y) {
    quant_matmul_blocked(v, x, M, y);
}

void quant_matmul_t_avx512(const QuantView& v, const float* dy, int64_t M, float* dx) {
    quant_matmul_t_blocked(v, dy, M, dx);
}

}  // namespace cpu
}  // namespace ember
