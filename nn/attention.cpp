// Attention, written with the differentiable ops (matmul, masked_fill, softmax, dropout), so its
// backward comes from theirs and gradcheck covers it.
//
// Grouped-query attention without copying k/v: the H = Hkv * G query heads are grouped as
// (B, Hkv, G * Tq, D), which is a view of a contiguous q, so one batched matmul per kv head
// serves its G query heads, and the scores (B, Hkv, G * Tq, Tk) are viewed back as (B, H, Tq, Tk).
#include "nn/attention.h"

#include <cmath>
#include <vector>

namespace ember {
namespace nn {

// Masked scores get this value rather than -inf: softmax then gives exact zeros for them, and a
// row with every key masked gives a uniform row instead of NaN.
static constexpr double MASKED_SCORE = -1e30;

// (Bm, 1 or H, Tq, Tk) with 1 where query i may not see key j, or undefined when nothing is masked.
static Tensor blocked_positions(const AttentionMask& mask, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                DType dtype, Device device) {
    Tensor blocked;
    if (mask.group > 0) {  // S2-Attn: per-head groups, causal inside them (the fused kernel's rule)
        raw::AttentionPattern pattern;
        pattern.causal = mask.causal, pattern.group = mask.group, pattern.group_roll = mask.group_roll;
        Tensor visible = raw::attention_visible(pattern, H, Tq, Tk, dtype, device);  // (1, H, Tq, Tk)
        blocked = raw::binary(BinaryOp::Eq, visible, zeros({}, dtype, device));
    } else if (mask.causal) {
        // key j is hidden from query i when j > i + (Tk - Tq): compare a column of query
        // positions with a row of key positions, on the device, without a (Tq, Tk) host table.
        auto positions = [&](double start, int64_t n, const Shape& shape) {
            return raw::reshape(raw::to_device(arange(start, start + double(n), 1, dtype), device), shape);
        };
        Tensor query_pos = positions(double(Tk - Tq), Tq, {Tq, 1});
        Tensor key_pos = positions(0, Tk, {1, Tk});
        blocked = raw::reshape(raw::binary(BinaryOp::Lt, query_pos, key_pos), {1, 1, Tq, Tk});
    }
    if (mask.key_padding.defined()) {
        const Tensor& kp = mask.key_padding;
        EMBER_CHECK(kp.dim() == 2 && kp.size(0) == B && kp.size(1) == Tk,
                    "scaled_dot_product_attention: key_padding must be (B, Tk) = (", B, ", ", Tk,
                    "), got ", kp.shape(), "; prefix and cached keys count in Tk");
        Tensor k = raw::to_device(raw::to_dtype(kp, dtype), device);
        Tensor pad = raw::binary(BinaryOp::Eq, k, zeros({}, dtype, device));  // (B, Tk) 1 = pad
        pad = raw::reshape(pad, {B, 1, 1, Tk});
        blocked = blocked.defined() ? raw::binary(BinaryOp::Maximum, blocked, pad) : pad;
    }
    return blocked;
}

int64_t shifted_group_size(int64_t T, double ratio) {
    EMBER_CHECK(ratio > 0 && ratio <= 1, "S2-Attn: the group size ratio must lie in (0, 1], got ", ratio);
    // int(T * ratio) as LongLoRA computes it; the nudge keeps T = 6, ratio 1/3 at 2, not 1.
    const int64_t G = int64_t(std::floor(double(T) * ratio + 1e-9));
    EMBER_CHECK(G >= 2 && T % G == 0, "S2-Attn: T = ", T, " tokens do not split into groups of G = ", G,
                " (T * ratio ", ratio, "); T % G must be 0 and G at least 2: crop or pad the training "
                "sequences to a multiple of 1 / ratio tokens, or pick a ratio whose group divides T");
    return G;
}

namespace {

void check_sdpa_inputs(const Tensor& q, const Tensor& k, const Tensor& v, double dropout_p) {
    const char* op = "scaled_dot_product_attention";
    EMBER_CHECK(q.defined() && k.defined() && v.defined(), op, ": q, k and v must be defined");
    EMBER_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be (B, H, T, D), "
                "got ", q.shape(), ", ", k.shape(), ", ", v.shape());
    const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1);
    EMBER_CHECK(k.shape() == v.shape() && k.size(0) == B && k.size(3) == D, op, ": k ", k.shape(),
                " and v ", v.shape(), " must both be (B, Hkv, Tk, D) with B = ", B, ", D = ", D);
    EMBER_CHECK(Hkv > 0 && H % Hkv == 0, op, ": ", H, " query heads cannot be shared evenly by ",
                Hkv, " key/value heads");
    EMBER_CHECK(dropout_p >= 0 && dropout_p < 1, op, ": dropout_p must lie in [0, 1), got ", dropout_p);
}

}  // namespace

// The fused kernel (tensor/cpu/attention.cpp) on the CPU; the composed ops on CUDA and when
// attention dropout is on (the kernel has no dropout). The CUDA fused kernel
// (tensor/cuda/attention.cu, reached through raw::attention_forward) is not used here yet: it has
// never run on a GPU, and models should switch to it only once its parity cases
// (tests/test_cuda_attention.cpp) have passed in a GPU window.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionMask& mask, double dropout_p, Generator* gen,
                                    bool training) {
    check_sdpa_inputs(q, k, v, dropout_p);
    const bool dropping = training && dropout_p > 0;
    if (!q.device().is_cpu() || dropping) return composed_attention(q, k, v, mask, dropout_p, gen, training);
    if (mask.key_padding.defined())
        EMBER_CHECK(mask.key_padding.shape() == Shape({q.size(0), k.size(2)}),
                    "scaled_dot_product_attention: key_padding must be (B, Tk) = (", q.size(0), ", ",
                    k.size(2), "), got ", mask.key_padding.shape(), "; prefix and cached keys count in Tk");
    raw::AttentionPattern pattern;
    pattern.causal = mask.causal;
    pattern.key_padding = mask.key_padding;
    pattern.group = mask.group, pattern.group_roll = mask.group_roll;
    return fused_attention(q, k, v, pattern, 1.0 / std::sqrt(double(q.size(3))));
}

Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionMask& mask, double dropout_p, Generator* gen,
                                    bool training) {
    const char* op = "scaled_dot_product_attention";
    check_sdpa_inputs(q, k, v, dropout_p);
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    const int64_t Hkv = k.size(1), Tk = k.size(2);
    const int64_t G = H / Hkv;

    // LongLoRA's shifted sparse attention (S2-Attn) restricts each head to a window of keys: in
    // the fused kernel that is visible_keys() (tensor/cpu/attention.cpp), here the same rule as
    // a blocked (1, H, Tq, Tk) mask, so this path costs the full T^2.

    Tensor probs;  // (B, H, Tq, Tk)
    const double scale = 1.0 / std::sqrt(double(D));
    if (q.device().is_cuda() && !mask.key_padding.defined() && mask.group == 0) {
        // On the GPU the scale and the causal mask are folded into the softmax kernel: no scaled
        // copy of q and no masked copy of the scores.
        Tensor scores = matmul(q.reshape({B, Hkv, G * Tq, D}), k.transpose(2, 3)).reshape({B, H, Tq, Tk});
        probs = scaled_softmax(scores, scale, mask.causal);
    } else {
        Tensor qg = mul(q, scale).reshape({B, Hkv, G * Tq, D});
        Tensor scores = matmul(qg, k.transpose(2, 3)).reshape({B, H, Tq, Tk});  // (B, H, Tq, Tk)
        Tensor blocked = blocked_positions(mask, B, H, Tq, Tk, scores.dtype(), scores.device());
        if (blocked.defined()) scores = masked_fill(scores, blocked, MASKED_SCORE);
        probs = softmax(scores, -1);
    }
    if (training && dropout_p > 0) {
        EMBER_CHECK(gen, op, ": attention dropout ", dropout_p, " needs a generator");
        probs = dropout(probs, dropout_p, *gen, true);
    }
    Tensor out = matmul(probs.reshape({B, Hkv, G * Tq, Tk}), v);  // (B, Hkv, G * Tq, D)
    return out.reshape({B, H, Tq, D});
}

// ---- heads ----

Tensor split_heads(const Tensor& x, int64_t heads) {
    EMBER_CHECK(x.dim() == 3 && heads > 0 && x.size(2) % heads == 0, "split_heads: x must be "
                "(B, T, H * D) with H = ", heads, ", got ", x.shape());
    return x.reshape({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}

Tensor merge_heads(const Tensor& x) {
    EMBER_CHECK(x.dim() == 4, "merge_heads: x must be (B, H, T, D), got ", x.shape());
    return x.transpose(1, 2).reshape({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

// ---- the module ----

MultiHeadAttention::MultiHeadAttention(const AttentionConfig& cfg, Generator& init_gen,
                                       std::shared_ptr<Generator> rng)
    : config(cfg), rng(std::move(rng)) {
    kv_heads = cfg.kv_heads == 0 ? cfg.heads : cfg.kv_heads;
    EMBER_CHECK(cfg.dim > 0 && cfg.heads > 0 && cfg.dim % cfg.heads == 0, "MultiHeadAttention: dim ",
                cfg.dim, " must be a positive multiple of heads ", cfg.heads);
    EMBER_CHECK(kv_heads > 0 && cfg.heads % kv_heads == 0, "MultiHeadAttention: heads ", cfg.heads,
                " must be a multiple of kv_heads ", kv_heads);
    EMBER_CHECK(cfg.dropout == 0 || this->rng, "MultiHeadAttention: attention dropout ", cfg.dropout,
                " needs an rng generator");
    head_dim = cfg.dim / cfg.heads;
    EMBER_CHECK(!cfg.rope || head_dim % 2 == 0, "MultiHeadAttention: RoPE needs an even head_dim, got ",
                head_dim);
    const int64_t kv_dim = kv_heads * head_dim;
    if (cfg.fused_qkv) {
        qkv = std::make_shared<Linear>(cfg.dim, cfg.dim + 2 * kv_dim, cfg.bias, init_gen);
        register_module(cfg.names.qkv, qkv);
    } else {
        q_proj = std::make_shared<Linear>(cfg.dim, cfg.dim, cfg.bias, init_gen);
        k_proj = std::make_shared<Linear>(cfg.dim, kv_dim, cfg.bias, init_gen);
        v_proj = std::make_shared<Linear>(cfg.dim, kv_dim, cfg.bias, init_gen);
        register_module(cfg.names.q, q_proj);
        register_module(cfg.names.k, k_proj);
        register_module(cfg.names.v, v_proj);
    }
    out_proj = std::make_shared<Linear>(cfg.dim, cfg.dim, cfg.bias, init_gen);
    register_module(cfg.names.out, out_proj);
}

MultiHeadAttention::Projected MultiHeadAttention::project(const Tensor& x) {
    EMBER_CHECK(x.dim() == 3 && x.size(2) == config.dim, "MultiHeadAttention: x must be (B, T, ",
                config.dim, "), got ", x.shape());
    const int64_t kv_dim = kv_heads * head_dim;
    Tensor q, k, v;  // (B, T, .)
    if (qkv) {
        std::vector<Tensor> parts = split(qkv->forward(x), {config.dim, kv_dim, kv_dim}, 2);
        q = parts[0], k = parts[1], v = parts[2];
    } else {
        q = q_proj->forward(x), k = k_proj->forward(x), v = v_proj->forward(x);
    }
    return {split_heads(q, config.heads).contiguous(), split_heads(k, kv_heads),
            split_heads(v, kv_heads)};
}

Tensor MultiHeadAttention::forward(const Tensor& x, const AttentionInputs& in) {
    const int64_t B = x.size(0), T = x.size(1);
    Projected p = project(x);
    Tensor q = p.q, k = p.k, v = p.v;
    if (config.rope) {
        RopeTables tables = rope_tables(T, head_dim, in.position_offset, config.rope_theta,
                                        config.rope_scaling, x.dtype(), x.device());
        q = apply_rope(q, tables);
        k = apply_rope(k, tables);
    }
    // [cached | current]
    int64_t cached = 0;
    if (in.cache) {
        KVCache& c = *in.cache;
        cached = c.length();
        if (cached > 0) {
            EMBER_CHECK(c.k.size(0) == B && c.k.size(1) == kv_heads && c.k.size(3) == head_dim,
                        "MultiHeadAttention: the KV cache holds ", c.k.shape(), ", which does not fit "
                        "keys of shape ", k.shape(), "; use one cache per layer and batch");
            k = cat({c.k, k}, 2);
            v = cat({c.v, v}, 2);
        }
        c.k = k.detach();
        c.v = v.detach();
    }
    // [prefix | cached | current]
    int64_t P = 0;
    if (in.prefix_k.defined() || in.prefix_v.defined()) {
        const Tensor &pk = in.prefix_k, &pv = in.prefix_v;
        EMBER_CHECK(pk.defined() && pv.defined() && pk.shape() == pv.shape() && pk.dim() == 4 &&
                        (pk.size(0) == B || pk.size(0) == 1) && pk.size(1) == kv_heads &&
                        pk.size(3) == head_dim,
                    "MultiHeadAttention: prefix_k and prefix_v must both be (B or 1, ", kv_heads,
                    ", P, ", head_dim, "), got ", pk.defined() ? pk.shape() : Shape{}, " and ",
                    pv.defined() ? pv.shape() : Shape{});
        P = pk.size(2);
        k = cat({pk.expand({B, -1, -1, -1}), k}, 2);
        v = cat({pv.expand({B, -1, -1, -1}), v}, 2);
    }
    const int64_t Tk = P + cached + T;

    AttentionMask mask;
    mask.causal = config.causal;
    if (config.shifted_group_ratio > 0 && is_training()) {  // S2-Attn trains; inference is full
        EMBER_CHECK(Tk == T, "MultiHeadAttention: S2-Attn groups the current tokens only, but ", Tk - T,
                    " prefix or cached keys come first; switch shifted_group_ratio off or use eval()");
        mask.group = shifted_group_size(T, config.shifted_group_ratio);
        mask.group_roll = config.shifted_roll;
    }
    if (in.key_padding.defined()) {
        const Tensor& kp = in.key_padding;
        EMBER_CHECK(kp.dim() == 2 && kp.size(0) == B && (kp.size(1) == T || kp.size(1) == cached + T),
                    "MultiHeadAttention: key_padding must be (B, T) = (", B, ", ", T,
                    ") or (B, T_cached + T) = (", B, ", ", cached + T, "), got ", kp.shape());
        Tensor current = raw::to_dtype(kp, x.dtype());
        const int64_t always_real = Tk - kp.size(1);
        mask.key_padding = always_real > 0
            ? raw::cat({ones({B, always_real}, x.dtype(), x.device()), current}, 1)
            : current;
    }
    Tensor y = scaled_dot_product_attention(q, k, v, mask, config.dropout, rng.get(), is_training());
    return out_proj->forward(merge_heads(y));  // (B, T, C)
}

}  // namespace nn
}  // namespace ember
