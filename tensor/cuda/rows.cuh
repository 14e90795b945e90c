// Row-parallel kernels (reductions, softmax, norms, cross-entropy) over contiguous (rows, n)
// tensors: a group of threads owns a row and reduces across it with warp shuffles.
//
// Short rows (n <= 1024) get one warp each, 8 rows to a 256-thread block, so a tensor of many
// short rows still fills the GPU; long rows get a whole block each. Either way the row loop is a
// grid-stride loop over 64-bit row numbers on a 1-D grid (grid.x <= 524,288), so any row count
// works, well past grid.y's 65,535. Every thread of a group runs the same number of row
// iterations, so the shuffles and __syncthreads inside are reached by all of them.
//
// Sums accumulate in double (int64 for integers), as on the CPU; each group sums its row in a
// fixed order, so results are reproducible run to run.
#pragma once

#include <cmath>
#include <type_traits>

#include "tensor/cuda/common.cuh"

namespace ember {
namespace cuda {

constexpr int64_t WARP_ROW_LIMIT = 1024;  // rows up to this long get one warp each
constexpr int ROW_THREADS = 256;

template <typename T>
using Acc = std::conditional_t<std::is_floating_point<T>::value, double, long long>;

template <bool WARP>
struct RowGroup {
    __device__ __forceinline__ int lane() const { return WARP ? (threadIdx.x & 31) : threadIdx.x; }
    __device__ __forceinline__ int size() const { return WARP ? 32 : blockDim.x; }
    __device__ __forceinline__ int64_t first_row() const {
        return WARP ? int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5)
                    : int64_t(blockIdx.x);
    }
    __device__ __forceinline__ int64_t row_step() const {
        return WARP ? int64_t(gridDim.x) * (blockDim.x >> 5) : int64_t(gridDim.x);
    }
    // The combination over the group, in every thread of it. scratch: shared, >= 32 V.
    template <typename V, typename Combine>
    __device__ __forceinline__ V reduce(V v, Combine combine, V identity, V* scratch) const {
        if (WARP) return warp_reduce(v, combine);
        return block_reduce(v, combine, identity, scratch);
    }
};

// In WARP mode the row loop must be uniform per warp: rows past the end are skipped by the
// whole warp together (first_row is the same for its 32 lanes).
#define FOR_EACH_ROW(group, row, rows) \
    for (int64_t row = (group).first_row(); row < (rows); row += (group).row_step())

struct SumOp {
    template <typename V>
    __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};

// NaN-propagating max: a NaN on either side wins.
struct MaxOp {
    template <typename V>
    __device__ __forceinline__ V operator()(V a, V b) const { return (a != a || a > b) ? a : b; }
};

// -inf of T, usable in device code (std::numeric_limits is host-only there).
template <typename T>
__device__ __forceinline__ T neg_inf() { return -T(INFINITY); }

// The first half of softmax, log-softmax and cross-entropy over one row: its max m and
// sum_j exp(x_j - m), each reduced across the row's group (every lane gets both).
template <typename T>
struct RowMaxSumExp {
    T max;
    double sum_exp;
};
template <typename T, bool WARP>
__device__ __forceinline__ RowMaxSumExp<T> row_max_sum_exp(const RowGroup<WARP>& g, const T* xr, int64_t n,
                                                          double* scratch) {
    T m = neg_inf<T>();
    for (int64_t j = g.lane(); j < n; j += g.size()) m = MaxOp{}(m, xr[j]);
    m = T(g.reduce(double(m), MaxOp{}, neg_inf<double>(), scratch));
    double s = 0;
    for (int64_t j = g.lane(); j < n; j += g.size()) s += double(exp(xr[j] - m));
    return {m, g.reduce(s, SumOp{}, 0.0, scratch)};
}

inline bool warp_rows(int64_t n) { return n <= WARP_ROW_LIMIT; }

inline unsigned row_grid(int64_t rows, bool warp) {
    const int64_t per_block = warp ? ROW_THREADS / 32 : 1;
    return grid_for(rows, int(per_block));  // grid_for(n, k): ceil(n / k) blocks, capped
}

// Shared scratch for one block_reduce of V (16-byte aligned, room for 32 values of <= 16 bytes).
#define ROW_SCRATCH(V, name)                              \
    __shared__ alignas(16) unsigned char name##_raw[32 * 16]; \
    V* name = reinterpret_cast<V*>(name##_raw)

// launch<WARP>(grid, threads): runs the kernel in the mode n calls for.
template <typename Launch>
void launch_rows(int64_t rows, int64_t n, Launch&& launch) {
    if (rows == 0) return;
    if (warp_rows(n)) launch(std::true_type{}, row_grid(rows, true), ROW_THREADS);
    else launch(std::false_type{}, row_grid(rows, false), ROW_THREADS);
    CUDA_LAUNCHED();
}

}  // namespace cuda
}  // namespace ember
