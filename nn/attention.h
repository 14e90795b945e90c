// Attention: the one place the attention pattern is chosen.
//
//   scaled_dot_product_attention   softmax(q k^T / sqrt(D) + mask) v, with grouped-query heads,
//                                  causal and key-padding masks, prefix/cached keys, dropout
//   apply_rope                     rotary position embeddings (nn/rope.h)
//   MultiHeadAttention             projections + heads + RoPE + KV cache + prefix keys around it
//
// Key order inside attention is always [prefix keys | cached keys | current keys]: prefix keys
// (prefix tuning) and cached keys (generation) come first, so the current query i sits at key
// position i + (Tk - Tq) for the causal rule.
#pragma once

#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/rope.h"

namespace ember {
namespace nn {

// What may attend to what.
struct AttentionMask {
    bool causal = false;
    Tensor key_padding;  // optional (B, Tk): 1 = real token, 0 = padding; prefix keys always real
    // LongLoRA's shifted sparse attention: groups of `group` tokens, half the heads shifted by
    // group / 2, in the no-wrap or the roll form (raw::AttentionPattern says which keys each
    // sees). 0: full attention.
    int64_t group = 0;
    bool group_roll = false;
};

// S2-Attn's group size for T tokens: G = int(T * ratio) (LongLoRA's llama_attn_replace.py), with
// a clear error unless 2 <= G and T % G == 0.
int64_t shifted_group_size(int64_t T, double ratio);

// q (B, H, Tq, D), k/v (B, Hkv, Tk, D) with H % Hkv == 0 (grouped-query: each kv head serves
// H / Hkv consecutive query heads). Tk may exceed Tq (prefix and cached keys come first): query i
// sits at key position i + (Tk - Tq) for the causal rule. Returns (B, H, Tq, D). Differentiable.
// Dropout on the attention probabilities when training and dropout_p > 0 (needs gen).
// A query whose keys are all masked attends uniformly (never NaN); its output is meaningless and
// its loss should be ignored.
// On the CPU without dropout this is the fused kernel (raw::attention_forward, memory linear in
// T); otherwise composed_attention.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionMask& mask, double dropout_p, Generator* gen,
                                    bool training);
// The same attention from differentiable ops (matmul, masked_fill, softmax, dropout), with the
// (B, H, Tq, Tk) scores in memory: the path on CUDA and with dropout, and the fused kernel's
// reference in tests.
Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionMask& mask, double dropout_p, Generator* gen, bool training);

// (B, T, H * D) -> (B, H, T, D) and back.
Tensor split_heads(const Tensor& x, int64_t heads);
Tensor merge_heads(const Tensor& x);

struct AttentionNames {
    std::string qkv = "c_attn";  // the fused projection (GPT-2)
    std::string q = "q_proj", k = "k_proj", v = "v_proj";
    std::string out = "c_proj";  // LLaMA: "o_proj"
};

struct AttentionConfig {
    int64_t dim = 0, heads = 1;
    int64_t kv_heads = 0;    // 0 = heads; fewer = grouped-query attention
    bool fused_qkv = true;   // one Linear dim -> (H + 2 Hkv) * D laid out [q | k | v] (GPT-2's c_attn)
    bool bias = true;
    bool causal = true;
    double dropout = 0;      // on the attention probabilities
    bool rope = false;
    double rope_theta = 10000;
    RopeScaling rope_scaling;  // a longer window than trained: linear or YaRN (nn/rope.h)
    // LongLoRA's S2-Attn, switched on by a method for training (peft/longlora.h): > 0 makes
    // forward() in training mode attend in groups of shifted_group_ratio * T tokens; in eval
    // mode attention stays full, as LongLoRA infers. shifted_roll picks the wrap-around form.
    double shifted_group_ratio = 0;
    bool shifted_roll = false;
    AttentionNames names;
};

struct KVCache {
    Tensor k, v;  // (B, Hkv, T_cached, D), grows by cat in generation; no grad
    int64_t length() const { return k.defined() ? k.size(2) : 0; }
};

struct AttentionInputs {
    // Optional padding of the current tokens, (B, T), or of the cached and current ones,
    // (B, T_cached + T): 1 real, 0 pad. With the (B, T) form cached keys count as real.
    Tensor key_padding;
    // Optional (B or 1, Hkv, P, D): keys/values prepended (prefix tuning). They never get RoPE,
    // are always attended, and shift nothing else (positions still start at position_offset).
    Tensor prefix_k, prefix_v;
    KVCache* cache = nullptr;     // if set: past keys are prepended and the new ones appended to it
    int64_t position_offset = 0;  // position of the first current token (RoPE) = cached length
};

class MultiHeadAttention : public Module {
public:
    // rng drives attention dropout (needed when config.dropout > 0).
    MultiHeadAttention(const AttentionConfig& config, Generator& init_gen,
                       std::shared_ptr<Generator> rng = nullptr);
    std::string type_name() const override { return "MultiHeadAttention"; }

    Tensor forward(const Tensor& x, const AttentionInputs& in);  // x (B, T, C) -> (B, T, C)
    Tensor forward(const Tensor& x) override { return forward(x, AttentionInputs{}); }

    struct Projected {
        Tensor q;     // (B, H, T, D)
        Tensor k, v;  // (B, Hkv, T, D)
    };
    Projected project(const Tensor& x);  // the q/k/v projections split into heads, before RoPE

    AttentionConfig config;
    int64_t head_dim, kv_heads;
    // Fused: qkv set, q/k/v null. Separate: q/k/v set, qkv null. Linear by default.
    std::shared_ptr<Module> qkv, q_proj, k_proj, v_proj, out_proj;
    std::shared_ptr<Generator> rng;
};

}  // namespace nn
}  // namespace ember
