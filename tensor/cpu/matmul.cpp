// CPU matrix product: C (M, N) = A (M, K) @ B (K, N), for each matrix of a batch. The blocked
// algorithm is in gemm_blocked.h; this file compiles it for AVX2 and picks the AVX-512 build of
// it (matmul_avx512.cpp) for f32 when the CPU has AVX-512. Products of one to four rows (batch-1
// inference) take the memory-bound path of matmul_small_m.h instead.
#include "tensor/cpu/kernels.h"

namespace ember {
namespace cpu {
namespace {
// 6 x 16 f32 accumulators: 12 of the 16 AVX2 registers.
template <typename T> struct Tiles;
template <> struct Tiles<float> { static constexpr int MR = 6, NR = 16; };
template <> struct Tiles<double> { static constexpr int MR = 6, NR = 8; };
}  // namespace
}  // namespace cpu
}  // namespace ember

#include "tensor/cpu/gemm_blocked.h"
#include "tensor/cpu/matmul_small_m.h"

namespace ember {
namespace cpu {

bool cpu_has_avx512();                                               // matmul_avx512.cpp
void matmul_f32_avx512(const Tensor& a, const Tensor& b, const Tensor& out);  // likewise

static bool g_avx512_allowed = true;
void allow_avx512_matmul(bool allow) { g_avx512_allowed = allow; }

void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
    if (out.numel() == 0) return;
    if (small_m_applies(a, b)) {
        if (a.dtype() == DType::F32) {
            small_m_matmul<float>(a, b, out);
        } else {
            small_m_matmul<double>(a, b, out);
        }
        return;
    }
    if (a.dtype() == DType::F32) {
        if (g_avx512_allowed && cpu_has_avx512()) {
            matmul_f32_avx512(a, b, out);
        } else {
            matmul_typed<float>(a, b, out);
        }
    } else {
        matmul_typed<double>(a, b, out);
    }
}

}  // namespace cpu
}  // namespace ember
