// CPU matrix product: C (M, N) = A (M, K) @ B (K, N), for each matrix of a batch. The blocked
// algorithm is in gemm_blocked.h; this file compiles it for AVX2 and picks the AVX-512 build of
// it (matmul_avx512.cpp) for f32 when the CPU has AVX-512. Products of one to four rows (batch-1
// inference) take the memory-bound path of matmul_small_m.h instead, and products with few
// columns and many rows are computed transposed (narrow_product below).
#include "tensor/cpu/kernels.h"
#include "tensor/ops.h"

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

int64_t avx512_tile_columns();                                       // matmul_avx512.cpp
void matmul_f32_avx512(const Tensor& a, const Tensor& b, const Tensor& out);  // likewise

static bool g_avx512_allowed = true;
void allow_avx512_matmul(bool allow) { g_avx512_allowed = allow; }

static bool use_avx512(DType dtype) { return dtype == DType::F32 && g_avx512_allowed && cpu_has_avx512(); }

// NR, the columns of a tile of C, in the build of the blocked GEMM that takes a product of dtype.
static int64_t tile_columns(DType dtype) {
    if (dtype == DType::F64) return Tiles<double>::NR;
    return use_avx512(dtype) ? avx512_tile_columns() : Tiles<float>::NR;
}

// A product with fewer columns than a tile (an adapter's x A^T at rank 8, or its gradients dy B
// and dy^T h) fills each MR x NR tile of C only N / NR of the way. Its transpose, C^T = B^T A^T,
// runs the long side along the tiles instead, and is copied back: 2-3x faster for N = 4-16 with
// AVX-512 at GPT-2's sizes (bench/NOTES.md, 2026-12-07 19:10-19:40). Below NR only: f64's 6 x 8
// tiles lost with N = 8-31 transposed.
static bool narrow_product(int64_t M, int64_t N, DType dtype) { return N < tile_columns(dtype) && M >= 2 * N; }

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
    if (narrow_product(out.size(1), out.size(2), a.dtype())) {
        Tensor out_t = make_tensor({out.size(0), out.size(2), out.size(1)}, out.dtype(), out.device());  // C^T
        matmul(raw::transpose(b, 1, 2), raw::transpose(a, 1, 2), out_t);
        copy(raw::transpose(out_t, 1, 2), out);
        return;
    }
    if (use_avx512(a.dtype())) {
        matmul_f32_avx512(a, b, out);
    } else if (a.dtype() == DType::F32) {
        matmul_typed<float>(a, b, out);
    } else {
        matmul_typed<double>(a, b, out);
    }
}

}  // namespace cpu
}  // namespace ember
