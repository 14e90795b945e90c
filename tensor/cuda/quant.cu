// CUDA kernels for 4-bit weights (tensor/quant.h), the same entry points as tensor/cpu/quant.cpp:
//   quantize_nf4     one warp per block: absmax by a warp max, then bitsandbytes' mid-point rule
//   quantize_int4    one thread per (row, group): GPTQ's min-max quantizer
//   dequantize       one thread per element
//   quant_matmul     batch 1: one warp per output row, 8 codes per lane from one 32-bit load;
//                    otherwise a 64 x 64 shared-memory tiled GEMM whose W tiles are decoded from
//                    the codes as they are loaded: the f32 weight never exists in global memory
//   quant_matmul_t   the same tiled GEMM with W's tiles read row-wise (dx = dy W)
// The NF4 table and mid-points travel as kernel arguments and are copied to shared memory.
#include <cfloat>

#include "tensor/cuda/common.cuh"
#include "tensor/quant.h"
#include "tensor/quant_kernels.h"

namespace ember {
namespace cuda {
namespace {

struct Table16 {
    float v[16];
};

Table16 nf4_table() {
    Table16 t{};
    for (int i = 0; i < 16; ++i) t.v[i] = NF4_VALUES[size_t(i)];
    return t;
}

Table16 nf4_midpoints() {
    Table16 t{};
    for (int i = 0; i < 15; ++i) t.v[i] = NF4_MIDPOINTS[size_t(i)];
    return t;
}

// The value of element `flat` of W (row-major), with the NF4 table in shared memory.
__device__ __forceinline__ float decode_at(const QuantView& w, const float* table, int64_t flat) {
    const int64_t b = flat / w.blocksize;
    const uint8_t q = w.code(flat);
    if (w.int4) return (float(q) - w.zeros[b]) * w.scales[b];
    return table[q] * w.block_absmax(b);
}

#define LOAD_TABLE(name, source)                                     \
    __shared__ float name[16];                                       \
    if (threadIdx.x < 16) name[threadIdx.x] = (source).v[threadIdx.x]; \
    __syncthreads()

// ---- quantize ----

__global__ void quantize_nf4_kernel(const float* w, int64_t n, int64_t blocksize, uint8_t* codes,
                                    float* absmax, Table16 mids) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
    const int64_t blocks = (n + blocksize - 1) / blocksize;
    for (int64_t b = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; b < blocks; b += warps) {
        const int64_t lo = b * blocksize, hi = min(n, lo + blocksize);
        float m = -FLT_MAX;
        for (int64_t i = lo + lane; i < hi; i += 32) m = fmaxf(m, fabsf(w[i]));
        m = warp_reduce(m, [](float a, float c) { return fmaxf(a, c); });
        if (lane == 0) absmax[b] = m;
        const float inv = 1.0f / m;
        for (int64_t i = lo + 2 * lane; i < hi; i += 64) {
            uint8_t high = 0, low = 0;
            const float x0 = w[i] * inv, x1 = i + 1 < hi ? w[i + 1] * inv : 0.0f;
            for (int k = 0; k < 15; ++k) high += x0 > mids.v[k], low += x1 > mids.v[k];
            if (i + 1 >= hi) low = 0;
            codes[i / 2] = uint8_t(high << 4 | low);
        }
    }
}

__global__ void quantize_int4_kernel(const float* w, int64_t groups, int64_t group, uint8_t* codes,
                                     float* scales, float* zeros) {
    GRID_STRIDE_LOOP(g, groups) {
        const float* x = w + g * group;
        float lo = 0, hi = 0;
        for (int64_t i = 0; i < group; ++i) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        const float s = (hi - lo) / 15.0f, z = nearbyintf(-lo / s);
        scales[g] = s, zeros[g] = z;
        for (int64_t i = 0; i < group; i += 2) {
            const float q0 = fminf(fmaxf(nearbyintf(x[i] / s) + z, 0.0f), 15.0f);
            const float q1 = fminf(fmaxf(nearbyintf(x[i + 1] / s) + z, 0.0f), 15.0f);
            codes[(g * group + i) / 2] = uint8_t(int(q0) << 4 | int(q1));
        }
    }
}

// ---- dequantize ----

template <typename T>
__global__ void dequantize_kernel(QuantView w, Table16 nf4, T* out) {
    LOAD_TABLE(table, nf4);
    GRID_STRIDE_LOOP(i, w.rows * w.cols) out[i] = T(decode_at(w, table, i));
}

// ---- batch 1: one warp per row ----
// VECTOR (rows of whole blocks, in % 8 == 0, blocks of a multiple of 8): each lane reads 4 bytes
// (8 codes) at a time, so a warp reads 128 contiguous bytes per step; otherwise one element per
// lane and step.
template <bool VECTOR>
__global__ void matvec_kernel(QuantView w, Table16 nf4, const float* x, float* y) {
    LOAD_TABLE(table, nf4);
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
    for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < w.rows; r += warps) {
        const int64_t row = r * w.cols;
        float acc = 0;
        if (VECTOR) {
            for (int64_t c = 8 * lane; c < w.cols; c += 8 * 32) {
                const uint32_t word = *reinterpret_cast<const uint32_t*>(w.codes + (row + c) / 2);
                const int64_t b = (row + c) / w.blocksize;
                const float scale = w.int4 ? w.scales[b] : w.block_absmax(b);
                const float zero = w.int4 ? w.zeros[b] : 0.0f;
                float part = 0;
                for (int j = 0; j < 8; ++j) {  // byte j/2: high nibble first
                    const uint32_t q = (word >> (8 * (j / 2) + (j % 2 ? 0 : 4))) & 15u;
                    part += (w.int4 ? float(q) - zero : table[q]) * x[c + j];
                }
                acc += part * scale;
            }
        } else {
            for (int64_t c = lane; c < w.cols; c += 32) acc += decode_at(w, table, row + c) * x[c];
        }
        acc = warp_reduce(acc, [](float a, float b) { return a + b; });
        if (lane == 0) y[r] = acc;
    }
}

// ---- tiled GEMM, C (M, N) = A (M, K) @ B (K, N), B decoded from W ----
// TRANSPOSED: B = W^T (forward: K = in, N = out); otherwise B = W (input gradient: K = out, N = in).
constexpr int TILE = 64, TILE_K = 16, PER_THREAD = 4;  // 256 threads, 4 x 4 outputs each

template <bool TRANSPOSED>
__global__ void quant_gemm_kernel(QuantView w, Table16 nf4, const float* a, float* c, int64_t M,
                                  int64_t N, int64_t K) {
    LOAD_TABLE(table, nf4);
    __shared__ float As[TILE_K][TILE + 1], Bs[TILE_K][TILE + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t m0 = int64_t(blockIdx.y) * TILE, n0 = int64_t(blockIdx.x) * TILE;
    float acc[PER_THREAD][PER_THREAD] = {};
    for (int64_t k0 = 0; k0 < K; k0 += TILE_K) {
        for (int e = threadIdx.x; e < TILE * TILE_K; e += blockDim.x) {
            const int kk = e % TILE_K, mm = e / TILE_K;  // A tile: consecutive threads along k
            const int64_t m = m0 + mm, k = k0 + kk;
            As[kk][mm] = m < M && k < K ? a[m * K + k] : 0.0f;
            const int nn = TRANSPOSED ? e / TILE_K : e % TILE, kb = TRANSPOSED ? e % TILE_K : e / TILE;
            const int64_t n = n0 + nn, kw = k0 + kb;
            float v = 0.0f;
            if (n < N && kw < K) v = decode_at(w, table, TRANSPOSED ? n * w.cols + kw : kw * w.cols + n);
            Bs[kb][nn] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < TILE_K; ++kk) {
            float av[PER_THREAD], bv[PER_THREAD];
            for (int i = 0; i < PER_THREAD; ++i) av[i] = As[kk][ty * PER_THREAD + i];
            for (int j = 0; j < PER_THREAD; ++j) bv[j] = Bs[kk][tx * PER_THREAD + j];
            for (int i = 0; i < PER_THREAD; ++i)
                for (int j = 0; j < PER_THREAD; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < PER_THREAD; ++i)
        for (int j = 0; j < PER_THREAD; ++j) {
            const int64_t m = m0 + ty * PER_THREAD + i, n = n0 + tx * PER_THREAD + j;
            if (m < M && n < N) c[m * N + n] = acc[i][j];
        }
}

template <bool TRANSPOSED>
void launch_gemm(const QuantView& w, const float* a, float* c, int64_t M, int64_t N, int64_t K) {
    const int64_t grid_y = (M + TILE - 1) / TILE;
    EMBER_CHECK(grid_y <= 65535, "quant_matmul (CUDA): ", M, " input rows exceed the grid's "
                "limit of ", 65535 * TILE, "; split the batch");
    dim3 grid(unsigned((N + TILE - 1) / TILE), unsigned(grid_y));
    quant_gemm_kernel<TRANSPOSED><<<grid, 256, 0, stream()>>>(w, nf4_table(), a, c, M, N, K);
    CUDA_LAUNCHED();
}

unsigned warp_grid(int64_t items) { return grid_for(items * 32); }  // one warp per item

}  // namespace

void quantize_nf4(const float* w, int64_t n, int64_t blocksize, uint8_t* codes, float* absmax) {
    const int64_t blocks = (n + blocksize - 1) / blocksize;
    quantize_nf4_kernel<<<warp_grid(blocks), THREADS, 0, stream()>>>(w, n, blocksize, codes, absmax,
                                                                     nf4_midpoints());
    CUDA_LAUNCHED();
}

void quantize_int4(const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* codes,
                   float* scales, float* zeros) {
    const int64_t groups = rows * (cols / group);
    quantize_int4_kernel<<<grid_for(groups), THREADS, 0, stream()>>>(w, groups, group, codes, scales, zeros);
    CUDA_LAUNCHED();
}

void dequantize(const QuantView& w, float* out) {
    dequantize_kernel<float><<<grid_for(w.rows * w.cols), THREADS, 0, stream()>>>(w, nf4_table(), out);
    CUDA_LAUNCHED();
}

void dequantize(const QuantView& w, double* out) {
    dequantize_kernel<double><<<grid_for(w.rows * w.cols), THREADS, 0, stream()>>>(w, nf4_table(), out);
    CUDA_LAUNCHED();
}

void quant_matmul(const QuantView& w, const float* x, int64_t M, float* y) {
    if (M == 1) {
        if (w.rows_are_blocked() && w.cols % 8 == 0 && w.blocksize % 8 == 0)
            matvec_kernel<true><<<warp_grid(w.rows), THREADS, 0, stream()>>>(w, nf4_table(), x, y);
        else
            matvec_kernel<false><<<warp_grid(w.rows), THREADS, 0, stream()>>>(w, nf4_table(), x, y);
        CUDA_LAUNCHED();
        return;
    }
    launch_gemm<true>(w, x, y, M, w.rows, w.cols);
}

void quant_matmul_t(const QuantView& w, const float* dy, int64_t M, float* dx) {
    launch_gemm<false>(w, dy, dx, M, w.cols, w.rows);
}

}  // namespace cuda
}  // namespace ember
