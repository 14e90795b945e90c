// Fused CPU attention, forward and backward: softmax(scale q k^T + mask) v without a (Tq, Tk)
// score matrix, so memory stays linear in T (FlashAttention's scheme: Dao et al., 2022, "Fast and
// memory-efficient exact attention with IO-awareness", Algorithms 1 and 2).
//
// Work is done on tiles: a block of QUERY_BLOCK query rows of one head against KEY_TILE keys.
// The tile's scores are a small matrix product, S = scale Q K^T, computed with K transposed into
// a scratch panel so that the inner loop runs along the keys (vector FMAs, no horizontal sums);
// exp runs over a whole row of the tile at once, and the products with V or dO run along D.
// A block computes only the keys of a tile that some row of it may see, rounded up to whole
// vectors: a short sequence or the causal corner of a block pays for the keys it has.
//
// Forward, for each query row i: walk the key tiles it may see, keep the running max m, the
// running sum l of exp(s - m) and the running output acc = sum exp(s - m) v, and rescale l and
// acc by exp(m_old - m_new) whenever a tile raises the max (the online softmax of Milakov &
// Gimelshein, 2018). Then out_i = acc / l and lse_i = m + log l, the row's log-sum-exp, which is
// all the backward pass keeps.
//
// Backward, with p_ij = exp(s_ij - lse_i) recomputed from the saved lse:
//   dv_j += p_ij dout_i;  dp_ij = dout_i . v_j;  ds_ij = p_ij (dp_ij - delta_i),
//   delta_i = dout_i . out_i;  dq_i += scale ds_ij k_j;  dk_j += scale ds_ij q_i.
// Work is split by (batch, kv head): the G query heads that share a kv head accumulate into the
// same dk / dv rows, so they stay on one thread and the sums never race or depend on threads.
// Key tiles are the outer loop there (FlashAttention-2's order), so each tile's dk / dv rows stay
// in cache while every query block that sees them passes.
//
// Which keys a query sees is decided in one place, attention_keys::visible_keys()
// (tensor/cpu/attention_keys.h, shared with the CUDA kernel): at most two spans of keys, and
// padded keys inside them are skipped. A query that sees no key attends uniformly to all Tk
// keys, as the composed path's finite mask score gives.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/cpu/attention.h"
#include "tensor/cpu/attention_keys.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cpu/row_math.h"
#include "tensor/cpu/transpose_8x8.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

constexpr int64_t QUERY_BLOCK = 16;  // query rows that share one pass over a key tile
constexpr int64_t KEY_TILE = 64;     // keys per tile: a row of scores is 8 AVX2 vectors

using attention_keys::KeyRange;
using attention_keys::KeySpans;

attention_keys::Rule rule_of(const raw::AttentionPattern& p) { return {p.causal, p.group, p.group_roll}; }

template <typename T>
constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// Strided (B, H, T, D) access with a unit stride along D.
template <typename T>
struct Heads {
    T* ptr;
    int64_t sb, sh, st;
    T* row(int64_t b, int64_t h, int64_t t) const { return ptr + b * sb + h * sh + t * st; }
};

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
    T s = 0;
    for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
    return s;
}

template <typename T>
void axpy(T alpha, const T* x, T* y, int64_t n) {  // y += alpha x
    for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

// 32 bytes of T as one GCC vector: an AVX2 register, 8 floats or 4 doubles (plain code on other
// targets). Kept in registers where an array of T would round-trip through memory.
template <typename T>
struct Lanes {
    static constexpr int n = 32 / sizeof(T);
    typedef T vec __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename Lanes<T>::vec;

template <typename T>
Vec<T> load_vec(const T* p) {
    Vec<T> v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename T>
void store_vec(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof v); }

// y += sum_s c[s * c_stride] x_s over the rows s < count whose weight is nonzero (a masked key's
// row is never read, so an inf in a padded value cannot leak as 0 * inf); x_s = x + s * x_stride.
// y (n), x_s (n). Four vectors of y at a time are summed in registers across all the rows before
// one store: updating y row by row instead chains every term through a store and a reload of
// the same address.
template <typename T>
void add_weighted_rows(T* y, int64_t n, const T* c, int64_t c_stride, int64_t count, const T* x,
                       int64_t x_stride) {
    constexpr int L = Lanes<T>::n;
    int64_t d0 = 0;
    for (; d0 + 4 * L <= n; d0 += 4 * L) {
        Vec<T> acc[4];
        for (int u = 0; u < 4; ++u) acc[u] = load_vec(y + d0 + L * u);
        for (int64_t s = 0; s < count; ++s) {
            const T cs = c[s * c_stride];
            if (cs == T(0)) continue;
            const T* xs = x + s * x_stride + d0;
            for (int u = 0; u < 4; ++u) acc[u] += cs * load_vec(xs + L * u);
        }
        for (int u = 0; u < 4; ++u) store_vec(y + d0 + L * u, acc[u]);
    }
    for (; d0 + L <= n; d0 += L) {
        Vec<T> acc = load_vec(y + d0);
        for (int64_t s = 0; s < count; ++s)
            if (c[s * c_stride] != T(0)) acc += c[s * c_stride] * load_vec(x + s * x_stride + d0);
        store_vec(y + d0, acc);
    }
    for (int64_t s = 0; s < count && d0 < n; ++s)
        if (c[s * c_stride] != T(0)) axpy(c[s * c_stride], x + s * x_stride + d0, y + d0, n - d0);
}

// One key tile of one kv head: keys [j0, j0 + n), n <= KEY_TILE, of which the first `width`
// columns (n rounded up to 8, a whole number of vectors) are computed: a short sequence or the
// causal corner of a block pays for the keys it has, not for a whole tile.
struct KeyTile {
    int64_t j0, n, width;
};

KeyTile key_tile(int64_t j0, int64_t n) { return {j0, n, (n + 7) / 8 * 8}; }

// panel[d * KEY_TILE + t] = rows.row(b, h, j0 + t)[d] for t < n, and 0 for n <= t < width: the
// tile's keys (or values) as columns, so that a score row is a sum over d of vector FMAs along t.
// f32 moves 8 x 8 blocks through registers: one scalar store per element was a fifth of the
// kernel's time on GPT-2's heads (perf annotate).
template <typename T>
void transpose_tile(const Heads<const T>& rows, int64_t b, int64_t h, KeyTile tile, int64_t D,
                    T* panel) {  // panel (D, KEY_TILE)
    for (int64_t d = 0; d < D; ++d) std::fill(panel + d * KEY_TILE + tile.n, panel + d * KEY_TILE + tile.width, T(0));
    const T* first = rows.row(b, h, tile.j0);
    int64_t t = 0;
#if defined(__AVX__)
    if constexpr (std::is_same_v<T, float>) {
        if (D % 8 == 0)
            for (; t + 8 <= tile.n; t += 8)
                for (int64_t d = 0; d < D; d += 8)
                    transpose_8x8(first + t * rows.st + d, rows.st, panel + d * KEY_TILE + t, KEY_TILE);
    }
#endif
    for (; t < tile.n; ++t)
        for (int64_t d = 0; d < D; ++d) panel[d * KEY_TILE + t] = first[t * rows.st + d];
}

// out[t] = scale * sum_d a[d] panel[d][t] for the first V vectors of columns of a transposed
// tile, V fixed so that the accumulators stay in registers.
template <typename T, int V>
void tile_row_product_fixed(const T* a, const T* panel, int64_t D, T scale, T* out) {  // a (D), out (V lanes)
    constexpr int L = Lanes<T>::n;
    Vec<T> acc[V] = {};
    for (int64_t d = 0; d < D; ++d) {
        const T ad = a[d];
        const T* col = panel + d * KEY_TILE;
#pragma GCC unroll 16
        for (int u = 0; u < V; ++u) acc[u] += ad * load_vec(col + L * u);
    }
    for (int u = 0; u < V; ++u) store_vec(out + L * u, scale * acc[u]);
}

// The same for the tile's `width` columns: picks the fixed-V version (V from KEY_TILE / lanes
// down to 1).
template <typename T, int V = KEY_TILE / Lanes<T>::n>
void tile_row_product(const T* a, const T* panel, int64_t D, int64_t width, T scale, T* out) {
    if constexpr (V > 1) {
        if (width < V * Lanes<T>::n) return tile_row_product<T, V - 1>(a, panel, D, width, scale, out);
    }
    tile_row_product_fixed<T, V>(a, panel, D, scale, out);
}

// Scores of the tile's columns that query row i may not see (outside its spans, padded, or past
// the tile's keys) become -inf. Returns whether any key of the tile stays visible.
template <typename T>
bool mask_row(const KeySpans& spans, KeyTile tile, const T* real, T* s) {  // real (Tk) or null
    bool any = false;
    for (int64_t t = 0; t < tile.width; ++t) {
        const int64_t j = tile.j0 + t;
        const bool visible = t < tile.n && spans.contains(j) && (!real || real[j] != T(0));
        s[t] = visible ? s[t] : neg_inf<T>();
        any |= visible;
    }
    return any;
}

template <typename T>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const T* real,
                   const raw::AttentionPattern& pattern, double scale_d, const Tensor& out,
                   const Tensor& lse) {
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2), G = H / Hkv;
    const Heads<const T> qh = {q.data<T>(), q.stride(0), q.stride(1), q.stride(2)};  // (B, H, Tq, D)
    const Heads<const T> kh = {k.data<T>(), k.stride(0), k.stride(1), k.stride(2)};  // (B, Hkv, Tk, D)
    const Heads<const T> vh = {v.data<T>(), v.stride(0), v.stride(1), v.stride(2)};  // (B, Hkv, Tk, D)
    T* op = out.data<T>();  // (B, H, Tq, D), contiguous
    T* lp = lse.data<T>();  // (B, H, Tq)
    const T scale = T(scale_d);
    const int64_t blocks = (Tq + QUERY_BLOCK - 1) / QUERY_BLOCK;
    const int64_t block_cost = QUERY_BLOCK * Tk * D;
    parallel_for(B * H * blocks, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, block_cost)),
                 [&](int64_t begin, int64_t end) {
        static thread_local std::vector<T> scratch;
        scratch.resize(std::max(scratch.size(), size_t(D * KEY_TILE + QUERY_BLOCK * KEY_TILE)));
        T* kt = scratch.data();                  // (D, KEY_TILE)
        T* p = kt + D * KEY_TILE;                // (QUERY_BLOCK, KEY_TILE) scores, then weights
        for (int64_t item = begin; item < end; ++item) {
            const int64_t blk = item % blocks, h = (item / blocks) % H, b = item / (blocks * H), hk = h / G;
            const int64_t i0 = blk * QUERY_BLOCK, nq = std::min(QUERY_BLOCK, Tq - i0);
            const T* real_b = real ? real + b * Tk : nullptr;
            KeySpans spans[QUERY_BLOCK];
            T m[QUERY_BLOCK], l[QUERY_BLOCK];
            int64_t lo = Tk, hi = 0;  // the keys any row of the block may see
            for (int64_t r = 0; r < nq; ++r) {
                spans[r] = attention_keys::visible_keys(rule_of(pattern), h, H, i0 + r, Tq, Tk);
                for (int si = 0; si < spans[r].n; ++si)
                    lo = std::min(lo, spans[r].span[si].lo), hi = std::max(hi, spans[r].span[si].hi);
                m[r] = neg_inf<T>(), l[r] = 0;
            }
            T* acc = op + ((b * H + h) * Tq + i0) * D;  // (nq, D): the block's output rows
            std::fill(acc, acc + nq * D, T(0));
            for (int64_t j0 = lo; j0 < hi; j0 += KEY_TILE) {
                const KeyTile tile = key_tile(j0, std::min(KEY_TILE, hi - j0));
                bool seen = false;
                for (int64_t r = 0; r < nq && !seen; ++r) seen = spans[r].meets(tile.j0, tile.j0 + tile.n);
                if (!seen) continue;
                transpose_tile(kh, b, hk, tile, D, kt);
                for (int64_t r = 0; r < nq; ++r) {
                    T* pr = p + r * KEY_TILE;
                    tile_row_product(qh.row(b, h, i0 + r), kt, D, tile.width, scale, pr);
                    if (!mask_row(spans[r], tile, real_b, pr)) {
                        std::fill(pr, pr + tile.width, T(0));
                        continue;
                    }
                    const T tile_max = row_max(pr, tile.width);
                    if (tile_max > m[r]) {
                        const T rescale = exp_of(m[r] - tile_max);  // 0 on the row's first tile
                        l[r] *= rescale;
                        for (int64_t d = 0; d < D; ++d) acc[r * D + d] *= rescale;
                        m[r] = tile_max;
                    }
                    for (int64_t t = 0; t < tile.width; ++t) pr[t] = exp_of(pr[t] - m[r]);
                    l[r] += T(row_sum(pr, tile.width));
                }
                for (int64_t r = 0; r < nq; ++r)  // acc_i += sum_j p_ij v_j
                    add_weighted_rows(acc + r * D, D, p + r * KEY_TILE, 1, tile.n, vh.row(b, hk, j0), vh.st);
            }
            for (int64_t r = 0; r < nq; ++r) {
                T* o = acc + r * D;
                const int64_t row = (b * H + h) * Tq + i0 + r;
                if (l[r] > 0) {
                    const T inv = T(1) / l[r];
                    for (int64_t d = 0; d < D; ++d) o[d] *= inv;
                    lp[row] = m[r] + std::log(l[r]);
                } else {  // nothing visible: the mean of every value row
                    for (int64_t j = 0; j < Tk; ++j) axpy(T(1), vh.row(b, hk, j), o, D);
                    for (int64_t d = 0; d < D; ++d) o[d] /= T(Tk);
                    lp[row] = std::numeric_limits<T>::quiet_NaN();  // marks the row for the backward
                }
            }
        }
    });
}

template <typename T>
void backward_typed(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                    const Tensor& out, const Tensor& lse, const T* real,
                    const raw::AttentionPattern& pattern, double scale_d, const Tensor& dq,
                    const Tensor& dk, const Tensor& dv) {
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2), G = H / Hkv;
    const Heads<const T> qh = {q.data<T>(), q.stride(0), q.stride(1), q.stride(2)};  // (B, H, Tq, D)
    const Heads<const T> kh = {k.data<T>(), k.stride(0), k.stride(1), k.stride(2)};  // (B, Hkv, Tk, D)
    const Heads<const T> vh = {v.data<T>(), v.stride(0), v.stride(1), v.stride(2)};  // (B, Hkv, Tk, D)
    const T* op = out.data<T>();   // (B, H, Tq, D), contiguous
    const T* gp = dout.data<T>();  // (B, H, Tq, D), contiguous
    const T* lp = lse.data<T>();   // (B, H, Tq)
    T* dqp = dq.data<T>();         // (B, H, Tq, D), zeroed
    T* dkp = dk.data<T>();         // (B, Hkv, Tk, D), zeroed
    T* dvp = dv.data<T>();         // (B, Hkv, Tk, D), zeroed
    const T scale = T(scale_d);
    parallel_for(B * Hkv, 1, [&](int64_t begin, int64_t end) {
        static thread_local std::vector<T> scratch;
        scratch.resize(std::max(scratch.size(), size_t(2 * D * KEY_TILE + 2 * QUERY_BLOCK * KEY_TILE + Tq)));
        T* kt = scratch.data();                     // (D, KEY_TILE) keys of the tile, transposed
        T* vt = kt + D * KEY_TILE;                  // (D, KEY_TILE) values of the tile, transposed
        T* p = vt + D * KEY_TILE;                   // (QUERY_BLOCK, KEY_TILE) weights p_ij
        T* ds = p + QUERY_BLOCK * KEY_TILE;         // (QUERY_BLOCK, KEY_TILE) dp_ij, then ds_ij
        T* delta = ds + QUERY_BLOCK * KEY_TILE;     // (Tq) dout_i . out_i
        for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / Hkv, hk = item % Hkv;
            const T* real_b = real ? real + b * Tk : nullptr;
            T* dk_head = dkp + item * Tk * D;
            T* dv_head = dvp + item * Tk * D;
            for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
                const int64_t head_row = (b * H + h) * Tq;  // row of query 0 of this head
                for (int64_t i = 0; i < Tq; ++i) {
                    const int64_t row = head_row + i;
                    delta[i] = dot(gp + row * D, op + row * D, D);
                    if (std::isnan(lp[row]))  // saw no key: uniform weights, constant scores
                        for (int64_t j = 0; j < Tk; ++j) axpy(T(1) / T(Tk), gp + row * D, dv_head + j * D, D);
                }
                for (int64_t j0 = 0; j0 < Tk; j0 += KEY_TILE) {
                    const KeyTile tile = key_tile(j0, std::min(KEY_TILE, Tk - j0));
                    transpose_tile(kh, b, hk, tile, D, kt);
                    transpose_tile(vh, b, hk, tile, D, vt);
                    for (int64_t i0 = 0; i0 < Tq; i0 += QUERY_BLOCK) {
                        const int64_t nq = std::min(QUERY_BLOCK, Tq - i0);
                        KeySpans spans[QUERY_BLOCK];
                        int64_t hi = j0;  // the block's rows see none of the tile's keys from hi on
                        for (int64_t r = 0; r < nq; ++r) {
                            spans[r] = attention_keys::visible_keys(rule_of(pattern), h, H, i0 + r, Tq, Tk);
                            if (std::isnan(lp[head_row + i0 + r])) spans[r] = KeySpans();  // handled above
                            for (int si = 0; si < spans[r].n; ++si)
                                if (spans[r].span[si].lo < j0 + tile.n) hi = std::max(hi, spans[r].span[si].hi);
                        }
                        const KeyTile seen = key_tile(j0, std::min(tile.n, hi - j0));  // the columns worth computing
                        if (seen.n <= 0) continue;
                        for (int64_t r = 0; r < nq; ++r) {
                            T* pr = p + r * KEY_TILE;
                            T* dsr = ds + r * KEY_TILE;
                            const int64_t row = head_row + i0 + r;
                            if (!spans[r].meets(seen.j0, seen.j0 + seen.n)) {
                                std::fill(pr, pr + seen.width, T(0));
                                std::fill(dsr, dsr + seen.width, T(0));
                                continue;
                            }
                            tile_row_product(qh.row(b, h, i0 + r), kt, D, seen.width, scale, pr);
                            mask_row(spans[r], seen, real_b, pr);
                            for (int64_t t = 0; t < seen.width; ++t) pr[t] = exp_of(pr[t] - lp[row]);
                            tile_row_product(gp + row * D, vt, D, seen.width, T(1), dsr);  // dp_ij
                            // ds_ij = p_ij (dp_ij - delta_i) scale, exactly 0 where p_ij is (a masked key)
                            for (int64_t t = 0; t < seen.width; ++t)
                                dsr[t] = pr[t] == T(0) ? T(0) : pr[t] * (dsr[t] - delta[i0 + r]) * scale;
                        }
                        const T* dout_rows = gp + (head_row + i0) * D;  // (nq, D)
                        for (int64_t t = 0; t < seen.n; ++t) {
                            // dv_j += sum_i p_ij dout_i;  dk_j += sum_i ds_ij q_i
                            add_weighted_rows(dv_head + (j0 + t) * D, D, p + t, KEY_TILE, nq, dout_rows, D);
                            add_weighted_rows(dk_head + (j0 + t) * D, D, ds + t, KEY_TILE, nq, qh.row(b, h, i0), qh.st);
                        }
                        for (int64_t r = 0; r < nq; ++r)  // dq_i += sum_j ds_ij k_j
                            add_weighted_rows(dqp + (head_row + i0 + r) * D, D, ds + r * KEY_TILE, 1, seen.n,
                                              kh.row(b, hk, j0), kh.st);
                    }
                }
            }
        }
    });
}

}  // namespace

void attention_visible(const raw::AttentionPattern& pattern, int64_t H, int64_t Tq, int64_t Tk,
                       const Tensor& out) {
    dispatch_float(out.dtype(), "attention_visible", [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* o = out.data<T>();  // (H, Tq, Tk), contiguous
        std::fill(o, o + H * Tq * Tk, T(0));
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < Tq; ++i) {
                const KeySpans spans = attention_keys::visible_keys(rule_of(pattern), h, H, i, Tq, Tk);
                for (int si = 0; si < spans.n; ++si)
                    std::fill(o + (h * Tq + i) * Tk + spans.span[si].lo, o + (h * Tq + i) * Tk + spans.span[si].hi, T(1));
            }
    });
}

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& real,
                       const raw::AttentionPattern& pattern, double scale, const Tensor& out,
                       const Tensor& lse) {
    dispatch_float(q.dtype(), "attention", [&](auto tag) {
        using T = typename decltype(tag)::type;
        forward_typed<T>(q, k, v, real.defined() ? real.data<T>() : nullptr, pattern, scale, out, lse);
    });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const Tensor& real,
                        const raw::AttentionPattern& pattern, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
    dispatch_float(q.dtype(), "attention_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        backward_typed<T>(dout, q, k, v, out, lse, real.defined() ? real.data<T>() : nullptr,
                          pattern, scale, dq, dk, dv);
    });
}

}  // namespace cpu
}  // namespace ember
