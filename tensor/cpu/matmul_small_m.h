// The matrix product for a few rows of A (batch-1 inference: a matrix-vector product, or M <= 4).
// There the blocked GEMM of gemm_blocked.h pads A to a full MR-row panel (8x the work at M = 1)
// and copies all of B into packed panels, while the product only needs to stream B from memory
// once. This path reads B in place, along its unit stride, and threads split B's columns:
//   B's columns contiguous (B = W^T, a Linear weight (N, K) row-major): out[m][n] = dot(A[m], W[n])
//   B's rows contiguous (a plain (K, N) matrix):                out[m][:] += A[m][k] * B[k][:]
// Either way each element of B is loaded once for all M rows. Included by matmul.cpp only.
#pragma once

#include <algorithm>

#include "tensor/parallel.h"
#include "tensor/tensor.h"

namespace ember {
namespace cpu {
namespace {

constexpr int64_t SMALL_M_MAX = 4;  // rows of A up to which small_m_matmul is used

// True when small_m_matmul handles a (batch, M, K) @ (batch, K, N) product: few rows, A's rows
// contiguous, and B contiguous along one of its dims.
inline bool small_m_applies(const Tensor& a, const Tensor& b) {
    const int64_t M = a.size(1), K = a.size(2);
    return M <= SMALL_M_MAX && K > 0 && (a.stride(2) == 1 || K == 1) &&
           (b.stride(1) == 1 || b.stride(2) == 1);
}

// sum_k x[k] y[k] (x, y: K contiguous). 32 partial sums: four independent vector chains, which
// is enough to keep up with memory; summed in a fixed order, so the result is deterministic.
template <typename T>
T dot(const T* x, const T* y, int64_t K) {
    constexpr int LANES = 32;
    T acc[LANES] = {};
    int64_t k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int j = 0; j < LANES; ++j) acc[j] += x[k + j] * y[k + j];
    T s = 0;
    for (; k < K; ++k) s += x[k] * y[k];
    for (int j = 0; j < LANES; ++j) s += acc[j];
    return s;
}

template <typename T>
void small_m_matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
    const int64_t batch = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
    const T* a_base = static_cast<const T*>(a.raw_data());  // (batch, M, K), rows contiguous
    const T* b_base = static_cast<const T*>(b.raw_data());  // (batch, K, N), one dim contiguous
    T* c_base = out.data<T>();                               // (batch, M, N), contiguous
    const bool columns_contiguous = b.stride(1) == 1;        // B = W^T with W (N, K) row-major
    // Work items are column blocks of each matrix: 16 or more dot products over W's rows (at
    // least 64 KB of B), or 512 columns of each row of B (the block of C stays in L1).
    const int64_t block = columns_contiguous ? std::max<int64_t>(16, (int64_t(1) << 14) / K / 16 * 16) : 512;
    const int64_t blocks = (N + block - 1) / block;
    parallel_for(batch * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t m = item / blocks, j0 = item % blocks * block, j1 = std::min(N, j0 + block);
            const T* A = a_base + m * a.stride(0);
            const T* B = b_base + m * b.stride(0);
            T* C = c_base + m * M * N;
            if (columns_contiguous) {
                for (int64_t j = j0; j < j1; ++j)
                    for (int64_t r = 0; r < M; ++r)
                        C[r * N + j] = dot(A + r * a.stride(1), B + j * b.stride(2), K);
            } else {
                for (int64_t r = 0; r < M; ++r) std::fill(C + r * N + j0, C + r * N + j1, T(0));
                for (int64_t k = 0; k < K; ++k) {
                    const T* row = B + k * b.stride(1);
                    for (int64_t r = 0; r < M; ++r) {
                        const T s = A[r * a.stride(1) + k];
                        T* c = C + r * N;
                        for (int64_t j = j0; j < j1; ++j) c[j] += s * row[j];
                    }
                }
            }
        }
    });
}

}  // namespace
}  // namespace cpu
}  // namespace ember
