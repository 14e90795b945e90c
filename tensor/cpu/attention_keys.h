// Which keys a query of the fused attention may see, in one place for both kernels: the CPU one
// (tensor/cpu/attention.cpp) and the CUDA one (tensor/cuda/attention.cu) call the same function,
// so the two cannot drift apart. Plain data and integer arithmetic only, usable in device code.
//
// The causal rule (query i sits at key position i + Tk - Tq, after prefix or cached keys) gives a
// contiguous range. LongLoRA's shifted sparse attention (S2-Attn, group > 0) narrows it to the
// query's group per head; its roll form can wrap past the end, so the visible keys are at most
// two spans. Padded keys inside the spans are the kernels' business (a per-key test).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EMBER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EMBER_HOST_DEVICE inline
#endif

namespace ember {
namespace attention_keys {

// The part of raw::AttentionPattern that decides visibility, as plain data (a kernel argument).
struct Rule {
    bool causal;
    int64_t group;  // S2-Attn's group size G, 0 = no groups
    bool roll;      // S2-Attn's shifted half in its torch.roll form (wraps) rather than segments
};

struct KeyRange {
    int64_t lo, hi;  // keys [lo, hi) may be seen, padding aside
};

struct KeySpans {
    KeyRange span[2];
    int n = 0;
    EMBER_HOST_DEVICE void add(int64_t lo, int64_t hi) {
        if (hi > lo) span[n++] = {lo, hi};
    }
    EMBER_HOST_DEVICE bool contains(int64_t j) const {
        for (int s = 0; s < n; ++s)
            if (j >= span[s].lo && j < span[s].hi) return true;
        return false;
    }
    EMBER_HOST_DEVICE bool meets(int64_t lo, int64_t hi) const {  // any visible key in [lo, hi)?
        for (int s = 0; s < n; ++s)
            if (span[s].lo < hi && lo < span[s].hi) return true;
        return false;
    }
};

// The keys query i of head h (of H) may see: without groups the causal rule; with S2-Attn
// (G = rule.group, s = G / 2, T = Tq = Tk) the query's group, cut by the causal rule:
//   heads [0, H/2):                 [kG, (k+1)G) holding i
//   heads [H/2, H), no wrap:        the segment holding i among [0, s), [s, s+G), ...,
//                                   [T-G+s, T): half-groups at both ends, nothing wraps
//   heads [H/2, H), roll:           token i sits at rolled position p = (i - s) mod T; its group
//                                   is rolled [gG, gG+G) = tokens (gG + s .. gG + G + s) mod T,
//                                   causal in rolled order, so the last group wraps to [0, s)
EMBER_HOST_DEVICE KeySpans visible_keys(const Rule& rule, int64_t h, int64_t H, int64_t i, int64_t Tq,
                                        int64_t Tk) {
    KeySpans keys;
    const int64_t G = rule.group;
    if (G == 0) {
        const int64_t last = i + (Tk - Tq) + 1;
        keys.add(0, rule.causal ? (last < Tk ? last : Tk) : Tk);
        return keys;
    }
    const int64_t T = Tk, s = G / 2;
    if (h < H / 2 || s == 0) {
        const int64_t lo = i / G * G;
        keys.add(lo, rule.causal ? i + 1 : lo + G);
    } else if (!rule.roll) {
        const int64_t lo = i < s ? 0 : s + (i - s) / G * G;
        const int64_t end = i < s ? s : (lo + G < T ? lo + G : T);
        keys.add(lo, rule.causal ? i + 1 : end);
    } else {
        const int64_t p = (i - s + T) % T, g0 = p / G * G;
        const int64_t a = g0 + s, b = (rule.causal ? p + 1 : g0 + G) + s;  // tokens [a, b) mod T
        if (b <= T) {
            keys.add(a, b);
        } else if (a >= T) {
            keys.add(a - T, b - T);
        } else {
            keys.add(a, T);
            keys.add(0, b - T);
        }
    }
    return keys;
}

}  // namespace attention_keys
}  // namespace ember
