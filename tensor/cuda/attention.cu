// Fused CUDA attention, forward and backward, the GPU twin of tensor/cpu/attention.cpp: the same
// arguments, the same visibility rule (attention_keys::visible_keys, shared with the CPU kernel),
// the same saved log-sum-exp, the same uniform row for a query that sees no key. Memory stays
// linear in T: no (Tq, Tk) score matrix is ever formed (FlashAttention-2's scheme: Dao, 2023,
// "FlashAttention-2: faster attention with better parallelism and work partitioning").
//
// Layout of the work (chosen for being simple and checkable, not for peak speed):
//   - one warp owns ROWS_PER_WARP rows (queries in forward and dq, keys in dk/dv); its 32 lanes
//     split the head dim D (lane d holds elements d, d + 32, ...: D <= MAX_D = 256), and a dot
//     product is a warp sum. WARPS warps make a block, so a block owns ROW_TILE rows of one
//     (batch, head).
//   - the other side (keys in forward and dq, queries in dk/dv) streams through shared memory in
//     tiles of TILE rows; a tile that none of the block's rows can see is skipped (block vote),
//     so S2-Attn's groups and the causal triangle cost only their visible tiles.
//   - forward: online softmax per query row (running max m, sum l, output acc, rescaled by
//     exp(m_old - m_new) when a key raises the max), then out = acc / l and lse = m + log l.
//   - backward: delta_i = dout_i . out_i (its own small kernel), then two passes that recompute
//     p_ij = exp(scale q_i . k_j - lse_i): a query-major pass for dq_i = scale sum_j ds_ij k_j,
//     and a key-major pass for dv_j = sum_i p_ij dout_i and dk_j = scale sum_i ds_ij q_i, with
//     ds_ij = p_ij (dout_i . v_j - delta_i). The key-major pass walks the G query heads that share
//     kv head j's head, so every dk/dv row has one owner: no atomics, results that do not depend
//     on scheduling (as the CPU kernel's per-kv-head split), at the price of computing the scores
//     twice in the backward.
// Accumulation is in T (f32 for f32, f64 for f64), as on the CPU.
//
// NOTE: written and compiled without a GPU; its parity cases are in tests/test_cuda.cpp.
#include <cmath>

#include "tensor/check.h"
#include "tensor/cpu/attention_keys.h"
#include "tensor/cuda/common.cuh"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"

namespace ember {
namespace cuda {
namespace {

using attention_keys::KeySpans;
using attention_keys::Rule;
using attention_keys::visible_keys;

constexpr int WARPS = 8;
constexpr int ROWS_PER_WARP = 2;
constexpr int ROW_TILE = WARPS * ROWS_PER_WARP;  // rows a block owns
constexpr int TILE = 32;                         // streamed rows per shared-memory tile
constexpr int MAX_D = 256;
constexpr int CHUNKS = MAX_D / 32;               // head-dim elements per lane

// Strided (B, heads, T, D) access with a unit stride along D.
template <typename T>
struct Heads {
    T* ptr;
    int64_t sb, sh, st;
    __device__ __forceinline__ T* row(int64_t b, int64_t h, int64_t t) const {
        return ptr + b * sb + h * sh + t * st;
    }
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
    return v;
}

// This lane's share of a D-vector in registers: x[c] = src[lane + 32 c].
template <typename T>
__device__ __forceinline__ void load_lanes(T (&x)[CHUNKS], const T* src, int D, int lane) {
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) x[c] = lane + 32 * c < D ? src[lane + 32 * c] : T(0);
}

// The dot product of a lane-split vector with a row of D in memory, summed over the warp.
template <typename T>
__device__ __forceinline__ T warp_dot(const T (&x)[CHUNKS], const T* row, int D, int lane) {
    T part = 0;
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
        if (lane + 32 * c < D) part += x[c] * row[lane + 32 * c];
    return warp_sum(part);
}

template <typename T>
__device__ __forceinline__ void axpy_lanes(T (&y)[CHUNKS], T alpha, const T* row, int D, int lane) {
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
        if (lane + 32 * c < D) y[c] += alpha * row[lane + 32 * c];
}

template <typename T>
__device__ __forceinline__ void store_lanes(T* dst, const T (&x)[CHUNKS], T factor, int D, int lane) {
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
        if (lane + 32 * c < D) dst[lane + 32 * c] = x[c] * factor;
}

// Copies n rows of D from src (row stride st, unit stride along D) into dst (n, D), contiguous.
template <typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t st, int n, int D) {
    for (int idx = threadIdx.x; idx < n * D; idx += blockDim.x) dst[idx] = src[(idx / D) * st + idx % D];
}

template <typename T>
__device__ __forceinline__ bool padded(const T* real, int64_t b, int64_t Tk, int64_t j) {
    return real != nullptr && real[b * Tk + j] == T(0);
}

// ---- forward ----------------------------------------------------------------------------------
// grid (ceil(Tq / ROW_TILE), H, B), WARPS * 32 threads, 2 * TILE * D * sizeof(T) shared bytes.
template <typename T>
__global__ void attention_forward_kernel(Heads<const T> q,  // (B, H, Tq, D)
                                         Heads<const T> k,  // (B, Hkv, Tk, D)
                                         Heads<const T> v,  // (B, Hkv, Tk, D)
                                         const T* real,     // (B, Tk): 0 = padding; or null
                                         Rule rule, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk,
                                         int D, T scale,
                                         T* out,   // (B, H, Tq, D), contiguous
                                         T* lse) {  // (B, H, Tq): NaN where no key was visible
    extern __shared__ __align__(16) unsigned char shared_raw[];
    T* ks = reinterpret_cast<T*>(shared_raw);  // (TILE, D)
    T* vs = ks + TILE * D;                     // (TILE, D)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (H / Hkv);
    const int64_t first = int64_t(blockIdx.x) * ROW_TILE + warp * ROWS_PER_WARP;

    T qr[ROWS_PER_WARP][CHUNKS], acc[ROWS_PER_WARP][CHUNKS], m[ROWS_PER_WARP], l[ROWS_PER_WARP];
    KeySpans spans[ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t i = first + r;
        m[r] = -T(INFINITY), l[r] = 0;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) qr[r][c] = acc[r][c] = 0;
        if (i < Tq) {
            spans[r] = visible_keys(rule, h, H, i, Tq, Tk);
            load_lanes(qr[r], q.row(b, h, i), D, lane);
        }
    }
    for (int64_t j0 = 0; j0 < Tk; j0 += TILE) {
        const int n = int(Tk - j0 < TILE ? Tk - j0 : TILE);
        bool wanted = false;
        for (int r = 0; r < ROWS_PER_WARP; ++r)
            wanted |= first + r < Tq && spans[r].meets(j0, j0 + n);
        if (!__syncthreads_or(wanted)) continue;  // the same answer in every thread
        load_tile(ks, k.row(b, hk, j0), k.st, n, D);
        load_tile(vs, v.row(b, hk, j0), v.st, n, D);
        __syncthreads();
        for (int r = 0; r < ROWS_PER_WARP; ++r) {
            if (first + r >= Tq) continue;  // uniform over the warp
            for (int t = 0; t < n; ++t) {
                const int64_t j = j0 + t;
                if (!spans[r].contains(j) || padded(real, b, Tk, j)) continue;
                const T s = scale * warp_dot(qr[r], ks + t * D, D, lane);
                if (s > m[r]) {
                    const T rescale = exp(m[r] - s);  // 0 on the first visible key
                    l[r] *= rescale;
#pragma unroll
                    for (int c = 0; c < CHUNKS; ++c) acc[r][c] *= rescale;
                    m[r] = s;
                }
                const T p = exp(s - m[r]);
                l[r] += p;
                axpy_lanes(acc[r], p, vs + t * D, D, lane);
            }
        }
        __syncthreads();  // the tile is read before the next one overwrites it
    }
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t i = first + r;
        if (i >= Tq) continue;
        const int64_t row = (b * H + h) * Tq + i;
        if (l[r] > 0) {
            store_lanes(out + row * D, acc[r], T(1) / l[r], D, lane);
            if (lane == 0) lse[row] = m[r] + log(l[r]);
        } else {  // nothing visible: the mean of every value row
            T mean[CHUNKS] = {};
            for (int64_t j = 0; j < Tk; ++j) axpy_lanes(mean, T(1), v.row(b, hk, j), D, lane);
            store_lanes(out + row * D, mean, T(1) / T(Tk), D, lane);
            if (lane == 0) lse[row] = T(NAN);  // marks the row for the backward
        }
    }
}

// ---- backward ---------------------------------------------------------------------------------
// delta_i = dout_i . out_i, one warp per row; grid-stride over the rows.
template <typename T>
__global__ void attention_delta_kernel(const T* dout,  // (rows, D), contiguous
                                       const T* out,   // (rows, D), contiguous
                                       int64_t rows, int D,
                                       T* delta) {     // (rows)
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
    for (int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows;
         row += warps) {
        T part = 0;
        for (int d = lane; d < D; d += 32) part += dout[row * D + d] * out[row * D + d];
        part = warp_sum(part);
        if (lane == 0) delta[row] = part;
    }
}

// dq, query-major: the forward's layout, p recomputed from the saved lse.
// grid (ceil(Tq / ROW_TILE), H, B), WARPS * 32 threads, 2 * TILE * D * sizeof(T) shared bytes.
template <typename T>
__global__ void attention_dq_kernel(Heads<const T> q,  // (B, H, Tq, D)
                                    Heads<const T> k,  // (B, Hkv, Tk, D)
                                    Heads<const T> v,  // (B, Hkv, Tk, D)
                                    const T* dout,     // (B, H, Tq, D), contiguous
                                    const T* lse,      // (B, H, Tq)
                                    const T* delta,    // (B, H, Tq)
                                    const T* real,     // (B, Tk): 0 = padding; or null
                                    Rule rule, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk,
                                    int D, T scale,
                                    T* dq) {  // (B, H, Tq, D), contiguous
    extern __shared__ __align__(16) unsigned char shared_raw[];
    T* ks = reinterpret_cast<T*>(shared_raw);  // (TILE, D)
    T* vs = ks + TILE * D;                     // (TILE, D)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y, hk = h / (H / Hkv);
    const int64_t first = int64_t(blockIdx.x) * ROW_TILE + warp * ROWS_PER_WARP;

    T qr[ROWS_PER_WARP][CHUNKS], gr[ROWS_PER_WARP][CHUNKS], acc[ROWS_PER_WARP][CHUNKS];
    T lr[ROWS_PER_WARP], dr[ROWS_PER_WARP];
    bool live[ROWS_PER_WARP];
    KeySpans spans[ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t i = first + r, row = (b * H + h) * Tq + i;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) qr[r][c] = gr[r][c] = acc[r][c] = 0;
        lr[r] = dr[r] = 0;
        live[r] = false;
        if (i < Tq) {
            lr[r] = lse[row], dr[r] = delta[row];
            live[r] = !isnan(lr[r]);  // a row that saw no key has constant scores: dq = 0
            spans[r] = visible_keys(rule, h, H, i, Tq, Tk);
            load_lanes(qr[r], q.row(b, h, i), D, lane);
            load_lanes(gr[r], dout + row * D, D, lane);
        }
    }
    for (int64_t j0 = 0; j0 < Tk; j0 += TILE) {
        const int n = int(Tk - j0 < TILE ? Tk - j0 : TILE);
        bool wanted = false;
        for (int r = 0; r < ROWS_PER_WARP; ++r) wanted |= live[r] && spans[r].meets(j0, j0 + n);
        if (!__syncthreads_or(wanted)) continue;
        load_tile(ks, k.row(b, hk, j0), k.st, n, D);
        load_tile(vs, v.row(b, hk, j0), v.st, n, D);
        __syncthreads();
        for (int r = 0; r < ROWS_PER_WARP; ++r) {
            if (!live[r]) continue;  // uniform over the warp
            for (int t = 0; t < n; ++t) {
                const int64_t j = j0 + t;
                if (!spans[r].contains(j) || padded(real, b, Tk, j)) continue;
                const T p = exp(scale * warp_dot(qr[r], ks + t * D, D, lane) - lr[r]);
                const T ds = p * (warp_dot(gr[r], vs + t * D, D, lane) - dr[r]) * scale;
                axpy_lanes(acc[r], ds, ks + t * D, D, lane);
            }
        }
        __syncthreads();
    }
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t i = first + r;
        if (i < Tq) store_lanes(dq + ((b * H + h) * Tq + i) * D, acc[r], T(1), D, lane);
    }
}

// dk and dv, key-major: a block owns ROW_TILE keys of one (batch, kv head) and streams the
// queries of its G query heads through shared memory, TILE at a time.
// grid (ceil(Tk / ROW_TILE), Hkv, B), WARPS * 32 threads,
// (2 * TILE * D + 2 * TILE) * sizeof(T) shared bytes.
template <typename T>
__global__ void attention_dkdv_kernel(Heads<const T> q,  // (B, H, Tq, D)
                                      Heads<const T> k,  // (B, Hkv, Tk, D)
                                      Heads<const T> v,  // (B, Hkv, Tk, D)
                                      const T* dout,     // (B, H, Tq, D), contiguous
                                      const T* lse,      // (B, H, Tq)
                                      const T* delta,    // (B, H, Tq)
                                      const T* real,     // (B, Tk): 0 = padding; or null
                                      Rule rule, int64_t H, int64_t Hkv, int64_t Tq, int64_t Tk,
                                      int D, T scale,
                                      T* dk,    // (B, Hkv, Tk, D), contiguous
                                      T* dv) {  // (B, Hkv, Tk, D), contiguous
    extern __shared__ __align__(16) unsigned char shared_raw[];
    T* qs = reinterpret_cast<T*>(shared_raw);  // (TILE, D)
    T* gs = qs + TILE * D;                     // (TILE, D) dout rows
    T* ls = gs + TILE * D;                     // (TILE) lse
    T* ds_ = ls + TILE;                        // (TILE) delta
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, hk = blockIdx.y, G = H / Hkv;
    const int64_t key_lo = int64_t(blockIdx.x) * ROW_TILE;
    const int64_t key_hi = key_lo + ROW_TILE < Tk ? key_lo + ROW_TILE : Tk;
    const int64_t first = key_lo + warp * ROWS_PER_WARP;

    T kr[ROWS_PER_WARP][CHUNKS], vr[ROWS_PER_WARP][CHUNKS];
    T dkr[ROWS_PER_WARP][CHUNKS], dvr[ROWS_PER_WARP][CHUNKS];
    bool real_key[ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t j = first + r;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) kr[r][c] = vr[r][c] = dkr[r][c] = dvr[r][c] = 0;
        real_key[r] = j < Tk && !padded(real, b, Tk, j);
        if (j < Tk) {
            load_lanes(kr[r], k.row(b, hk, j), D, lane);
            load_lanes(vr[r], v.row(b, hk, j), D, lane);
        }
    }
    for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
        const int64_t head_row = (b * H + h) * Tq;
        for (int64_t i0 = 0; i0 < Tq; i0 += TILE) {
            const int n = int(Tq - i0 < TILE ? Tq - i0 : TILE);
            // does any query of the tile see one of this block's keys (or see none at all, and
            // so spread uniformly over every key)?
            bool wanted = false;
            if (threadIdx.x < n) {
                const int64_t i = i0 + threadIdx.x;
                wanted = isnan(lse[head_row + i]) ||
                         visible_keys(rule, h, H, i, Tq, Tk).meets(key_lo, key_hi);
            }
            if (!__syncthreads_or(wanted)) continue;
            load_tile(qs, q.row(b, h, i0), q.st, n, D);
            load_tile(gs, dout + (head_row + i0) * D, D, n, D);
            if (threadIdx.x < n) {
                ls[threadIdx.x] = lse[head_row + i0 + threadIdx.x];
                ds_[threadIdx.x] = delta[head_row + i0 + threadIdx.x];
            }
            __syncthreads();
            for (int r = 0; r < ROWS_PER_WARP; ++r) {
                const int64_t j = first + r;
                if (j >= Tk) continue;  // uniform over the warp
                for (int t = 0; t < n; ++t) {
                    const int64_t i = i0 + t;
                    if (isnan(ls[t])) {  // saw no key: uniform weights, constant scores
                        axpy_lanes(dvr[r], T(1) / T(Tk), gs + t * D, D, lane);
                        continue;
                    }
                    if (!real_key[r] || !visible_keys(rule, h, H, i, Tq, Tk).contains(j)) continue;
                    const T p = exp(scale * warp_dot(kr[r], qs + t * D, D, lane) - ls[t]);
                    axpy_lanes(dvr[r], p, gs + t * D, D, lane);
                    const T ds = p * (warp_dot(vr[r], gs + t * D, D, lane) - ds_[t]) * scale;
                    axpy_lanes(dkr[r], ds, qs + t * D, D, lane);
                }
            }
            __syncthreads();
        }
    }
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int64_t j = first + r;
        if (j >= Tk) continue;
        const int64_t at = ((b * Hkv + hk) * Tk + j) * D;
        store_lanes(dk + at, dkr[r], T(1), D, lane);
        store_lanes(dv + at, dvr[r], T(1), D, lane);
    }
}

template <typename T>
Heads<const T> heads_of(const Tensor& x) {  // x (B, heads, T, D) with a unit stride along D
    return {x.data<T>(), x.stride(0), x.stride(1), x.stride(2)};
}

Rule rule_of(const raw::AttentionPattern& p) { return {p.causal, p.group, p.group_roll}; }

// The kernel's dynamic shared memory, raised past the default 48 KiB when f64 or a wide head
// needs it (sm_90 allows up to 227 KiB per block).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

void check_launch(const char* op, const Tensor& q, const Tensor& k) {
    const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1);
    EMBER_CHECK(D <= MAX_D, op, ": the CUDA kernel handles head dims up to ", MAX_D, ", got D = ", D,
                "; use nn::composed_attention for wider heads");
    EMBER_CHECK(B <= 65535 && H <= 65535 && Hkv <= 65535, op, ": the CUDA kernel's grid takes at most "
                "65,535 batches and heads, got B = ", B, ", H = ", H);
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& real,
                       const raw::AttentionPattern& pattern, double scale, const Tensor& out,
                       const Tensor& lse) {
    check_launch("attention", q, k);
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2);
    if (B * H * Tq == 0) return;
    dispatch_float(q.dtype(), "attention", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const size_t bytes = size_t(2 * TILE * D) * sizeof(T);
        allow_shared(attention_forward_kernel<T>, bytes);
        const dim3 grid(unsigned((Tq + ROW_TILE - 1) / ROW_TILE), unsigned(H), unsigned(B));
        attention_forward_kernel<T><<<grid, WARPS * 32, bytes, stream()>>>(
            heads_of<T>(q), heads_of<T>(k), heads_of<T>(v), real.defined() ? real.data<T>() : nullptr,
            rule_of(pattern), H, Hkv, Tq, Tk, int(D), T(scale), out.data<T>(), lse.data<T>());
        CUDA_LAUNCHED();
    });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const Tensor& real,
                        const raw::AttentionPattern& pattern, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
    check_launch("attention_backward", q, k);
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2);
    if (B * H * Tq == 0 || Tk == 0) return;
    Tensor delta = make_tensor({B, H, Tq}, q.dtype(), q.device());
    dispatch_float(q.dtype(), "attention_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* realp = real.defined() ? real.data<T>() : nullptr;
        const int64_t rows = B * H * Tq;
        attention_delta_kernel<T><<<grid_for(rows, 8), 256, 0, stream()>>>(
            dout.data<T>(), out.data<T>(), rows, int(D), delta.data<T>());
        CUDA_LAUNCHED();

        const size_t bytes = size_t(2 * TILE * D) * sizeof(T);
        allow_shared(attention_dq_kernel<T>, bytes);
        const dim3 qgrid(unsigned((Tq + ROW_TILE - 1) / ROW_TILE), unsigned(H), unsigned(B));
        attention_dq_kernel<T><<<qgrid, WARPS * 32, bytes, stream()>>>(
            heads_of<T>(q), heads_of<T>(k), heads_of<T>(v), dout.data<T>(), lse.data<T>(),
            delta.data<T>(), realp, rule_of(pattern), H, Hkv, Tq, Tk, int(D), T(scale), dq.data<T>());
        CUDA_LAUNCHED();

        const size_t kv_bytes = size_t(2 * TILE * D + 2 * TILE) * sizeof(T);
        allow_shared(attention_dkdv_kernel<T>, kv_bytes);
        const dim3 kgrid(unsigned((Tk + ROW_TILE - 1) / ROW_TILE), unsigned(Hkv), unsigned(B));
        attention_dkdv_kernel<T><<<kgrid, WARPS * 32, kv_bytes, stream()>>>(
            heads_of<T>(q), heads_of<T>(k), heads_of<T>(v), dout.data<T>(), lse.data<T>(),
            delta.data<T>(), realp, rule_of(pattern), H, Hkv, Tq, Tk, int(D), T(scale), dk.data<T>(),
            dv.data<T>());
        CUDA_LAUNCHED();
    });
}

}  // namespace cuda
}  // namespace ember
