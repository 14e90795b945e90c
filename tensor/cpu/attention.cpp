// Fused CPU attention, forward and backward: softmax(scale q k^T + mask) v without a (Tq, Tk)
// score matrix, so memory stays linear in T (FlashAttention's scheme: Dao et al., 2022, "Fast and
// memory-efficient exact attention with IO-awareness", Algorithms 1 and 2).
//
// Forward, for each query row i: walk the keys it may see in tiles of KEY_TILE, keep the running
// max m, the running sum l of exp(s - m) and the running output acc = sum exp(s - m) v, and
// rescale l and acc by exp(m_old - m_new) whenever a tile raises the max (the online softmax of
// Milakov & Gimelshein, 2018). Then out_i = acc / l and lse_i = m + log l, the row's log-sum-exp,
// which is all the backward pass keeps.
//
// Backward, with p_ij = exp(s_ij - lse_i) recomputed from the saved lse:
//   dv_j += p_ij dout_i;  dp_ij = dout_i . v_j;  ds_ij = p_ij (dp_ij - delta_i),
//   delta_i = dout_i . out_i;  dq_i += scale ds_ij k_j;  dk_j += scale ds_ij q_i.
// Work is split by (batch, kv head): the G query heads that share a kv head accumulate into the
// same dk / dv rows, so they stay on one thread and the sums never race or depend on threads.
//
// Which keys a query sees is decided in one place, attention_keys::visible_keys()
// (tensor/cpu/attention_keys.h, shared with the CUDA kernel): at most two spans of keys, and
// padded keys inside them are skipped. A query that sees no key attends uniformly to all Tk
// keys, as the composed path's finite mask score gives.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/cpu/attention.h"
#include "tensor/cpu/attention_keys.h"
#include "tensor/cpu/kernels.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

constexpr int64_t KEY_TILE = 64;

using attention_keys::KeyRange;
using attention_keys::KeySpans;

attention_keys::Rule rule_of(const raw::AttentionPattern& p) { return {p.causal, p.group, p.group_roll}; }

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
    parallel_for(B * H * Tq, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Tk * D)),
                 [&](int64_t begin, int64_t end) {
        T s[KEY_TILE];
        for (int64_t row = begin; row < end; ++row) {
            const int64_t i = row % Tq, h = (row / Tq) % H, b = row / (Tq * H), hk = h / G;
            const T* qi = qh.row(b, h, i);
            T* acc = op + row * D;
            std::fill(acc, acc + D, T(0));
            const KeySpans spans = attention_keys::visible_keys(rule_of(pattern), h, H, i, Tq, Tk);
            T m = -std::numeric_limits<T>::infinity(), l = 0;
            for (int si = 0; si < spans.n; ++si) {
                const KeyRange keys = spans.span[si];
                for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += KEY_TILE) {
                    const int64_t n = std::min(KEY_TILE, keys.hi - j0);
                    T tile_max = -std::numeric_limits<T>::infinity();
                    for (int64_t t = 0; t < n; ++t) {
                        const int64_t j = j0 + t;
                        if (real && real[b * Tk + j] == T(0)) {
                            s[t] = -std::numeric_limits<T>::infinity();
                            continue;
                        }
                        s[t] = scale * dot(qi, kh.row(b, hk, j), D);
                        tile_max = std::max(tile_max, s[t]);
                    }
                    if (tile_max == -std::numeric_limits<T>::infinity()) continue;  // all padding
                    if (tile_max > m) {
                        const T rescale = std::exp(m - tile_max);  // 0 on the first visible tile
                        l *= rescale;
                        for (int64_t d = 0; d < D; ++d) acc[d] *= rescale;
                        m = tile_max;
                    }
                    for (int64_t t = 0; t < n; ++t) {
                        if (s[t] == -std::numeric_limits<T>::infinity()) continue;
                        const T p = std::exp(s[t] - m);
                        l += p;
                        axpy(p, vh.row(b, hk, j0 + t), acc, D);
                    }
                }
            }
            if (l > 0) {
                const T inv = T(1) / l;
                for (int64_t d = 0; d < D; ++d) acc[d] *= inv;
                lp[row] = m + std::log(l);
            } else {  // nothing visible: the mean of every value row
                for (int64_t j = 0; j < Tk; ++j) axpy(T(1), vh.row(b, hk, j), acc, D);
                for (int64_t d = 0; d < D; ++d) acc[d] /= T(Tk);
                lp[row] = std::numeric_limits<T>::quiet_NaN();  // marks the row for the backward
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
        for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / Hkv, hk = item % Hkv;
            T* dk_head = dkp + item * Tk * D;
            T* dv_head = dvp + item * Tk * D;
            for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
                for (int64_t i = 0; i < Tq; ++i) {
                    const int64_t row = (b * H + h) * Tq + i;
                    const T* qi = qh.row(b, h, i);
                    const T* gi = gp + row * D;
                    T* dqi = dqp + row * D;
                    if (std::isnan(lp[row])) {  // saw no key: uniform weights, constant scores
                        for (int64_t j = 0; j < Tk; ++j) axpy(T(1) / T(Tk), gi, dv_head + j * D, D);
                        continue;
                    }
                    const T delta = dot(gi, op + row * D, D);
                    const KeySpans spans = attention_keys::visible_keys(rule_of(pattern), h, H, i, Tq, Tk);
                    for (int si = 0; si < spans.n; ++si) {
                        for (int64_t j = spans.span[si].lo; j < spans.span[si].hi; ++j) {
                            if (real && real[b * Tk + j] == T(0)) continue;
                            const T* kj = kh.row(b, hk, j);
                            const T p = std::exp(scale * dot(qi, kj, D) - lp[row]);
                            axpy(p, gi, dv_head + j * D, D);
                            const T ds = p * (dot(gi, vh.row(b, hk, j), D) - delta) * scale;
                            axpy(ds, kj, dqi, D);
                            axpy(ds, qi, dk_head + j * D, D);
                        }
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
