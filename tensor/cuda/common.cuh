// What every CUDA kernel file shares: CUDA_CHECK, the launch shape of a grid-stride loop, the
// strided layout passed to kernels by value, warp and block reductions, and the device-side
// error record that lets a kernel report a bad index to the host (a kernel cannot throw).
//
// Conventions of the .cu files: every kernel is a grid-stride loop over 64-bit indices, so any
// size works with any grid; grids stay within the hardware limits (grid.x <= 2^31 - 1, grid.y and
// grid.z <= 65,535); every launch goes on the one Ember stream and is followed by CUDA_LAUNCHED()
// (cudaGetLastError), so a bad launch throws where it happened.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "tensor/check.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/tensor.h"

namespace ember {
namespace cuda {

// Throws ember::Error naming the file, the line, the call and CUDA's own words for the error.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

#define CUDA_CHECK(call)                                                         \
    do {                                                                         \
        cudaError_t ember_err_ = (call);                                         \
        if (ember_err_ != cudaSuccess)                                           \
            ::ember::cuda::throw_cuda_error(ember_err_, #call, __FILE__, __LINE__); \
    } while (0)

// After a <<<...>>> launch: a bad configuration shows up here.
#define CUDA_LAUNCHED() CUDA_CHECK(cudaGetLastError())

cudaStream_t stream();          // Ember's one stream (made with the context on first use)
cublasHandle_t cublas_handle();  // bound to that stream
// Throws "no CUDA device ..." unless a GPU answers; makes the context on first use.
void ensure_context();

// The allocator behind allocate()/release() (tensor/cuda/allocator.cu).
void* allocator_malloc(size_t bytes);
void allocator_free(void* ptr, size_t bytes) noexcept;

constexpr int THREADS = 256;  // threads per block of the elementwise kernels

// Blocks for a grid-stride loop over n items: enough to fill the GPU, never past grid.x's limit.
inline unsigned grid_for(int64_t n, int threads = THREADS) {
    const int64_t MAX_BLOCKS = 65536L * 8;  // far below 2^31 - 1; the loop covers the rest
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks < 1) blocks = 1;
    return unsigned(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

#define GRID_STRIDE_LOOP(i, n)                                                        \
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);         \
         i += int64_t(blockDim.x) * gridDim.x)

// N operands walked over one shape: element `i` (row-major) of operand k is at offset(k).
// Built on the host by StridedLoop (size-1 dims dropped, contiguous runs merged, so contiguous
// operands collapse to one dim) and passed to the kernel by value.
template <int N>
struct Layout {
    int rank;
    int64_t sizes[MAX_DIMS];
    int64_t strides[N][MAX_DIMS];

    // offsets[k] = element offset of linear index i in operand k.
    __host__ __device__ __forceinline__ void offsets(int64_t i, int64_t* off) const {
        if (rank == 1) {  // the common case: one merged run
            for (int k = 0; k < N; ++k) off[k] = i * strides[k][0];
            return;
        }
        for (int k = 0; k < N; ++k) off[k] = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const int64_t idx = i % sizes[d];
            i /= sizes[d];
            for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
        }
    }
};

template <int N>
Layout<N> make_layout(const Shape& shape, const std::array<Shape, N>& strides) {
    cpu::StridedLoop<N> loop(shape, strides);
    Layout<N> l{};
    l.rank = loop.rank();
    for (int d = 0; d < l.rank; ++d) {
        l.sizes[d] = loop.size(d);
        for (int k = 0; k < N; ++k) l.strides[k][d] = loop.stride(k, d);
    }
    return l;
}

// ---- reductions within a warp and a block (blockDim.x a multiple of 32, at most 1024) ----

template <typename V>
__device__ __forceinline__ V shfl_xor(V v, int mask) {
    return __shfl_xor_sync(0xffffffffu, v, mask);
}

// Every lane ends with the combination of the 32 lanes' values (a butterfly).
template <typename V, typename Combine>
__device__ __forceinline__ V warp_reduce(V v, Combine combine) {
    for (int mask = 16; mask > 0; mask >>= 1) v = combine(v, shfl_xor(v, mask));
    return v;
}

// Every thread of the block ends with the combination of all the block's values. `scratch` is
// shared memory of at least 32 V. All threads of the block must call it (it syncs).
template <typename V, typename Combine>
__device__ __forceinline__ V block_reduce(V v, Combine combine, V identity, V* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_reduce(v, combine);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : identity;
    v = warp_reduce(v, combine);  // every warp reduces the per-warp values: no second broadcast
    return v;
}

// ---- kernels that find a bad index record it here; the launcher then throws on the host ----
struct IndexError {
    long long flag;   // 0: no error
    long long value;  // the offending index
    long long limit;  // the size it had to stay below
    long long where;  // the dim, or the row
};

IndexError* index_error_slot();  // device memory, cleared by begin_index_check()
void begin_index_check();        // clears the slot (async, on the stream)
// Waits for the stream and, if a kernel recorded a bad index, returns true with it in *err.
bool end_index_check(IndexError* err);

__device__ __forceinline__ void report_bad_index(IndexError* slot, long long value, long long limit,
                                                 long long where) {
    if (atomicCAS(reinterpret_cast<unsigned long long*>(&slot->flag), 0ull, 1ull) == 0ull) {
        slot->value = value;
        slot->limit = limit;
        slot->where = where;
    }
}

}  // namespace cuda
}  // namespace ember
