// The blocked GEMM of tensor/cpu/matmul.cpp, written once and compiled twice: for AVX2 (the
// build's baseline) in matmul.cpp, and with AVX-512 enabled in matmul_avx512.cpp, which the
// dispatcher picks when the CPU has it. Everything here has internal linkage, so the two
// compilations never mix.
//
// The classic blocked scheme (Goto & van de Geijn, "Anatomy of high-performance matrix
// multiplication", 2008):
//   for each KC-deep slab of K:       pack B's slab into NR-wide column panels (contiguous)
//     for each MC-tall block of rows: pack A's block into MR-tall row panels (contiguous)
//       for each (MR x NR) tile of C: micro_kernel: KC rank-1 updates held in registers
// Packing makes the inner loop read memory in order whatever A's and B's strides are (so a
// transposed operand costs nothing extra) and keeps the working set in cache. The micro-kernel is
// plain C++ with fixed trip counts that the compiler unrolls and vectorizes, except the AVX2
// build's f32 one, written in intrinsics because that vectorization was poor.
// Threads split C into row bands (or column bands when C is wide and short), one per thread
// (gemm_bands.h).
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include "tensor/cpu/gemm_bands.h"
#include "tensor/cpu/transpose_8x8.h"
#include "tensor/parallel.h"
#include "tensor/tensor.h"

namespace ember {
namespace cpu {
namespace {

// Tile sizes: the micro-kernel's MR x NR accumulators fill most of the vector registers. Each
// compilation defines Tiles<float> and Tiles<double> before including this file.
constexpr int64_t KC = 256;   // depth of a packed slab: an A panel and a B panel stay in L1
constexpr int64_t MC = 120;   // rows of A packed at once (a multiple of MR): fits in L2
constexpr int64_t NC = 2048;  // columns of B packed at once

// A strided matrix view: element (r, c) is at ptr[r * row_stride + c * col_stride].
template <typename T>
struct MatrixView {
    const T* ptr;
    int64_t row_stride, col_stride;
};

// Packs rows [i0, i0+mc) x depth [k0, k0+kc) of A into MR-row panels: panel p holds, for each k,
// the MR values A[i0 + p*MR + 0..MR-1][k0 + k], zero-padded past the last row. The loops walk A
// along its unit stride (k for a row-major A, the rows for a transposed one).
template <typename T>
void pack_a(MatrixView<T> a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* packed) {
    constexpr int MR = Tiles<T>::MR;
    for (int64_t p = 0; p < mc; p += MR, packed += MR * kc) {
        const int rows = int(std::min<int64_t>(MR, mc - p));
        if (rows < MR) std::fill(packed, packed + MR * kc, T(0));
        const T* src = a.ptr + (i0 + p) * a.row_stride + k0 * a.col_stride;
        if (a.row_stride == 1 && rows == MR) {  // a column of the panel is contiguous
            for (int64_t k = 0; k < kc; ++k)
                for (int r = 0; r < MR; ++r) packed[k * MR + r] = src[k * a.col_stride + r];
        } else {
            for (int r = 0; r < rows; ++r)
                for (int64_t k = 0; k < kc; ++k)
                    packed[k * MR + r] = src[r * a.row_stride + k * a.col_stride];
        }
    }
}


// Packs depth [k0, k0+kc) x columns [j0, j0+nc) of B into NR-column panels: panel p holds, for
// each k, the NR values B[k0 + k][j0 + p*NR + 0..NR-1], zero-padded past the last column. A
// row-major B copies NR-wide rows; a transposed one (a Linear weight) is read down its columns,
// along its unit stride.
template <typename T>
void pack_b(MatrixView<T> b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* packed) {
    constexpr int NR = Tiles<T>::NR;
    for (int64_t p = 0; p < nc; p += NR, packed += NR * kc) {
        const int cols = int(std::min<int64_t>(NR, nc - p));
        if (cols < NR) std::fill(packed, packed + NR * kc, T(0));
        const T* src = b.ptr + k0 * b.row_stride + (j0 + p) * b.col_stride;
        if (b.col_stride == 1 && cols == NR) {
            for (int64_t k = 0; k < kc; ++k)
                for (int c = 0; c < NR; ++c) packed[k * NR + c] = src[k * b.row_stride + c];
#if defined(__AVX__)
        } else if (std::is_same<T, float>::value && b.row_stride == 1 && cols == NR && NR % 8 == 0) {
            // B = W^T (a Linear's forward): 8 x 8 blocks transposed in registers; the scalar
            // loop below cost an eighth of the forward products at 256 rows (perf, GPT-2 LoRA).
            const float* s = reinterpret_cast<const float*>(src);
            float* d = reinterpret_cast<float*>(packed);
            int64_t k = 0;
            for (; k + 8 <= kc; k += 8)
                for (int c = 0; c < NR; c += 8) transpose_8x8(s + c * b.col_stride + k, b.col_stride, d + k * NR + c, NR);
            for (; k < kc; ++k)
                for (int c = 0; c < NR; ++c) d[k * NR + c] = s[c * b.col_stride + k];
#endif
        } else {
            for (int c = 0; c < cols; ++c)
                for (int64_t k = 0; k < kc; ++k)
                    packed[k * NR + c] = src[k * b.row_stride + c * b.col_stride];
        }
    }
}

// C tile (rows x cols, at most MR x NR; row stride ldc) (+)= packed A panel @ packed B panel.
template <typename T>
void micro_kernel(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t ldc, int rows,
                  int cols, bool accumulate) {
    constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
    // The first rank-1 update initialises the accumulators (kc >= 1 here): `acc = {}` compiled to
    // a 1 KB rep stos per tile, 5% of the demo GPT's products (perf annotate). 0 + a*b == a*b, so
    // the sums are unchanged to the bit.
    T acc[MR][NR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) acc[r][j] = a_panel[r] * b_panel[j];
    for (int64_t k = 1; k < kc; ++k) {
        const T* a = a_panel + k * MR;
        const T* b = b_panel + k * NR;
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
            for (int j = 0; j < NR; ++j) acc[r][j] += a[r] * b[j];
    }
    if (rows == MR && cols == NR) {  // a whole tile: fixed trip counts, vector stores
        for (int r = 0; r < MR; ++r) {
            T* cr = c + r * ldc;
            if (accumulate) {
                for (int j = 0; j < NR; ++j) cr[j] += acc[r][j];
            } else {
                for (int j = 0; j < NR; ++j) cr[j] = acc[r][j];
            }
        }
        return;
    }
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < cols; ++j)
            c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// The AVX2 build's f32 tile (6 x 16: twelve ymm accumulators, two B vectors, one broadcast) in
// intrinsics. GCC's vectorization of the loop above kept four accumulators on the stack and
// shuffled B with vpermd on every step: 47 GFLOP/s on one core, 44% of the 256-bit FMA roof
// (bench/NOTES.md, "The AVX2 GEMM's micro-kernel"). The sums are the same: a * b, then FMAs.
template <>
inline void micro_kernel<float>(int64_t kc, const float* a_panel, const float* b_panel, float* c, int64_t ldc,
                                int rows, int cols, bool accumulate) {
    constexpr int MR = Tiles<float>::MR, NR = Tiles<float>::NR;
    static_assert(MR == 6 && NR == 16, "the AVX2 f32 micro-kernel is written for 6 x 16 tiles");
    __m256 acc[MR][2];
    {
        const __m256 b0 = _mm256_loadu_ps(b_panel), b1 = _mm256_loadu_ps(b_panel + 8);
        for (int r = 0; r < MR; ++r) {
            const __m256 ar = _mm256_broadcast_ss(a_panel + r);
            acc[r][0] = _mm256_mul_ps(ar, b0);
            acc[r][1] = _mm256_mul_ps(ar, b1);
        }
    }
    for (int64_t k = 1; k < kc; ++k) {
        const float* a = a_panel + k * MR;
        const __m256 b0 = _mm256_loadu_ps(b_panel + k * NR), b1 = _mm256_loadu_ps(b_panel + k * NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
            const __m256 ar = _mm256_broadcast_ss(a + r);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (rows == MR && cols == NR) {
        for (int r = 0; r < MR; ++r) {
            float* cr = c + r * ldc;
            if (accumulate) {
                acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
                acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
            }
            _mm256_storeu_ps(cr, acc[r][0]);
            _mm256_storeu_ps(cr + 8, acc[r][1]);
        }
        return;
    }
    alignas(32) float tile[MR][NR];  // an edge tile: only rows x cols of C are written
    for (int r = 0; r < MR; ++r) {
        _mm256_store_ps(tile[r], acc[r][0]);
        _mm256_store_ps(tile[r] + 8, acc[r][1]);
    }
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < cols; ++j)
            c[r * ldc + j] = accumulate ? c[r * ldc + j] + tile[r][j] : tile[r][j];
}
#endif

// C[i0:i1, j0:j1] = A[i0:i1, :] @ B[:, j0:j1], with C contiguous of row stride ldc.
template <typename T>
void gemm_band(MatrixView<T> a, MatrixView<T> b, T* c, int64_t ldc, int64_t K, int64_t i0,
               int64_t i1, int64_t j0, int64_t j1) {
    constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
    auto round_up = [](int64_t x, int64_t m) { return (x + m - 1) / m * m; };
    const int64_t kc_max = std::min(KC, K);
    // Packing buffers live as long as the thread and only grow: a product allocates nothing
    // (and zeroes nothing) once the pool's threads have seen its sizes.
    static thread_local std::vector<T> a_packed, b_packed;
    a_packed.resize(std::max(a_packed.size(), size_t(round_up(std::min(MC, i1 - i0), MR) * kc_max)));
    b_packed.resize(std::max(b_packed.size(), size_t(round_up(std::min(NC, j1 - j0), NR) * kc_max)));
    if (K == 0) {  // an empty sum: C is zero
        for (int64_t i = i0; i < i1; ++i) std::fill(c + i * ldc + j0, c + i * ldc + j1, T(0));
        return;
    }
    for (int64_t jc = j0; jc < j1; jc += NC) {
        int64_t nc = std::min(NC, j1 - jc);
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = std::min(KC, K - pc);
            pack_b(b, pc, kc, jc, nc, b_packed.data());
            for (int64_t ic = i0; ic < i1; ic += MC) {
                int64_t mc = std::min(MC, i1 - ic);
                pack_a(a, ic, mc, pc, kc, a_packed.data());
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

template <typename T>
void matmul_typed(const Tensor& a, const Tensor& b, const Tensor& out) {
    constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
    const int64_t batch = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
    const T* a_base = static_cast<const T*>(a.raw_data());  // (batch, M, K), any strides
    const T* b_base = static_cast<const T*>(b.raw_data());  // (batch, K, N), any strides
    T* c_base = out.data<T>();                               // (batch, M, N), contiguous

    // Work items: (matrix, band), enough bands to give every thread work even for a single
    // matrix: row bands when C is taller than wide, else column bands.
    const GemmBands bands(M, N, MR, NR, M >= N);
    parallel_for(batch * bands.count, bands.worth_a_thread(K) ? 1 : 64, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t m = item / bands.count;
            int64_t i0, i1, j0, j1;
            bands.range(item % bands.count, i0, i1, j0, j1);
            MatrixView<T> av{a_base + m * a.stride(0), a.stride(1), a.stride(2)};
            MatrixView<T> bv{b_base + m * b.stride(0), b.stride(1), b.stride(2)};
            gemm_band(av, bv, c_base + m * M * N, N, K, i0, i1, j0, j1);
        }
    });
}

}  // namespace
}  // namespace cpu
}  // namespace ember
