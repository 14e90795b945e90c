// LongLoRA's shifted sparse attention (S2-Attn) in the fused CPU kernel, against references
// built here from masks and rolls, independently of the kernel's visible_keys():
//   G = T          the unshifted half is full causal attention
//   no wrap        the shifted half is block-diagonal causal attention on the segments
//                  [0, G/2), [G/2, 3G/2), ..., [T - G/2, T) (LongLoRA's flash cu_seqlens)
//   roll           roll the shifted heads' tokens by -G/2, attend causally in groups, roll back
// and float64 gradchecks of each.
#include <cmath>

#include "nn/attention.h"
#include "tests/attention_helpers.h"

using namespace ember;
using namespace ember::testing;
using Inputs = const std::vector<Tensor>&;

namespace {

// k/v (B, Hkv, T, D) -> (B, H, T, D): query head h reads kv head h / (H / Hkv).
Tensor repeat_kv(const Tensor& x, int64_t H) {
    const int64_t Hkv = x.size(1);
    std::vector<Tensor> heads;
    for (int64_t h = 0; h < H; ++h) heads.push_back(x.slice(1, h / (H / Hkv), h / (H / Hkv) + 1));
    return cat(heads, 1);
}

// Causal attention where query i of head h sees key j only if segment[h][i] == segment[h][j]:
// the segments given as boundaries [0, b1, b2, ..., T] per head. Composed ops, (T, T) scores.
Tensor segmented_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                           const std::vector<std::vector<int64_t>>& bounds) {
    const int64_t H = q.size(1), T = q.size(2), D = q.size(3);
    std::vector<double> blocked(size_t(H * T * T), 1.0);
    for (int64_t h = 0; h < H; ++h) {
        const std::vector<int64_t>& b = bounds[size_t(h)];
        for (size_t s = 0; s + 1 < b.size(); ++s)
            for (int64_t i = b[s]; i < b[s + 1]; ++i)
                for (int64_t j = b[s]; j <= i; ++j) blocked[size_t((h * T + i) * T + j)] = 0;
    }
    Tensor mask = raw::to_dtype(from_vector(blocked, {1, H, T, T}), q.dtype());
    Tensor scores = matmul(mul(q, 1.0 / std::sqrt(double(D))), repeat_kv(k, H).transpose(2, 3));
    Tensor probs = softmax(masked_fill(scores, mask, -1e30), -1);
    return matmul(probs, repeat_kv(v, H));
}

std::vector<int64_t> groups_of(int64_t G, int64_t T) {  // [0, G, 2G, ..., T]
    std::vector<int64_t> b;
    for (int64_t t = 0; t <= T; t += G) b.push_back(t);
    return b;
}

std::vector<int64_t> shifted_segments(int64_t G, int64_t T) {  // [0, G/2, 3G/2, ..., T - G/2, T]
    std::vector<int64_t> b = {0};
    for (int64_t t = G / 2; t < T; t += G) b.push_back(t);
    b.push_back(T);
    return b;
}

// Per-head bounds: the first H/2 heads in groups of G, the rest on `shifted`.
std::vector<std::vector<int64_t>> halves(int64_t H, const std::vector<int64_t>& plain,
                                         const std::vector<int64_t>& shifted) {
    std::vector<std::vector<int64_t>> b;
    for (int64_t h = 0; h < H; ++h) b.push_back(h < H / 2 ? plain : shifted);
    return b;
}

// torch.roll(x, shift, dims=2) for 0 <= shift < T: out[t] = x[(t - shift) mod T].
Tensor roll_tokens(const Tensor& x, int64_t shift) {
    const int64_t T = x.size(2);
    if (shift == 0) return x;
    return cat({x.slice(2, T - shift, T), x.slice(2, 0, T - shift)}, 2);
}

// LongLoRA's forward_noflashattn on q, k, v (H = Hkv): the shifted heads rolled by -G/2, every
// head in causal groups of G, the shifted heads' output rolled back by G/2.
Tensor roll_reference(const Tensor& q, const Tensor& k, const Tensor& v, int64_t G) {
    const int64_t H = q.size(1), T = q.size(2), s = G / 2;
    auto shifted = [&](const Tensor& x) {
        return cat({x.slice(1, 0, H / 2), roll_tokens(x.slice(1, H / 2, H), T - s)}, 1);
    };
    Tensor out = segmented_reference(shifted(q), shifted(k), shifted(v), halves(H, groups_of(G, T), groups_of(G, T)));
    return cat({out.slice(1, 0, H / 2), roll_tokens(out.slice(1, H / 2, H), s)}, 1);
}

raw::AttentionPattern s2(int64_t G, bool roll = false) {
    raw::AttentionPattern p;
    p.causal = true, p.group = G, p.group_roll = roll;
    return p;
}

void check_same(const AttentionResult& a, const AttentionResult& b) {
    CHECK(max_abs_diff(a.out, b.out) < 2e-6);
    CHECK(max_abs_diff(a.dq, b.dq) < 1e-5);
    CHECK(max_abs_diff(a.dk, b.dk) < 1e-5);
    CHECK(max_abs_diff(a.dv, b.dv) < 1e-5);
}

}  // namespace

TEST_CASE("S2-Attn: with G = T the unshifted half is full causal attention, the shifted half two half-segments") {
    Generator gen(21);
    const int64_t B = 2, H = 4, T = 16, D = 8;
    Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
    Tensor w = randn({B, H, T, D}, gen);
    const double scale = 1.0 / std::sqrt(double(D));
    AttentionResult grouped = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(T), scale);
    }, q, k, v, w);
    raw::AttentionPattern causal;
    causal.causal = true;
    AttentionResult full = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, causal, scale);
    }, q, k, v, w);
    // heads [0, H/2): everything equal to full causal attention
    auto half = [&](const Tensor& x) { return x.slice(1, 0, H / 2); };
    CHECK(max_abs_diff(half(grouped.out), half(full.out)) < 1e-6);
    CHECK(max_abs_diff(half(grouped.dq), half(full.dq)) < 1e-6);
    CHECK(max_abs_diff(half(grouped.dk), half(full.dk)) < 1e-6);
    CHECK(max_abs_diff(half(grouped.dv), half(full.dv)) < 1e-6);
    // heads [H/2, H): segments [0, 8) and [8, 16), differing from full attention after token 8
    AttentionResult reference = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return segmented_reference(a, b, c, halves(H, {0, T}, {0, T / 2, T}));
    }, q, k, v, w);
    check_same(grouped, reference);
    CHECK(max_abs_diff(grouped.out.slice(1, H / 2, H), full.out.slice(1, H / 2, H)) > 1e-2);
}

TEST_CASE("S2-Attn: the no-wrap shifted half is block-diagonal causal attention on [0, G/2), [G/2, 3G/2), ..., [T - G/2, T)") {
    Generator gen(22);
    const int64_t B = 2, H = 4, Hkv = 2, T = 24, D = 8, G = 8;
    // A strided q, as split_heads leaves it; two kv heads, one per half (grouped-query).
    Tensor q = randn({B, T, H, D}, gen).permute({0, 2, 1, 3});
    Tensor k = randn({B, Hkv, T, D}, gen), v = randn({B, Hkv, T, D}, gen), w = randn({B, H, T, D}, gen);
    CHECK(shifted_segments(G, T) == std::vector<int64_t>({0, 4, 12, 20, 24}));
    AttentionResult fused = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(G), 1.0 / std::sqrt(double(D)));
    }, q, k, v, w);
    AttentionResult reference = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return segmented_reference(a, b, c, halves(H, groups_of(G, T), shifted_segments(G, T)));
    }, q, k, v, w);
    check_same(fused, reference);
    // The composed path (CUDA, dropout) applies the same rule through raw::attention_visible.
    nn::AttentionMask mask;
    mask.causal = true, mask.group = G;
    AttentionResult composed = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return nn::composed_attention(a, b, c, mask, 0, nullptr, true);
    }, q, k, v, w);
    check_same(composed, reference);
}

TEST_CASE("S2-Attn: the roll form equals rolling the shifted heads by -G/2, causal groups, rolling back") {
    Generator gen(23);
    const int64_t B = 2, H = 4, T = 24, D = 8, G = 8;
    Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
    Tensor w = randn({B, H, T, D}, gen);
    AttentionResult fused = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(G, true), 1.0 / std::sqrt(double(D)));
    }, q, k, v, w);
    AttentionResult reference = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return roll_reference(a, b, c, G);
    }, q, k, v, w);
    check_same(fused, reference);
    // The roll leaks: the first G/2 tokens of a shifted head see the last G/2, so the last
    // token's value reaches query 0's output; the no-wrap form keeps them apart.
    AttentionResult no_wrap = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(G), 1.0 / std::sqrt(double(D)));
    }, q, k, v, w);
    CHECK(max_abs_diff(fused.out.slice(2, 0, G / 2).slice(1, H / 2, H),
                       no_wrap.out.slice(2, 0, G / 2).slice(1, H / 2, H)) > 1e-2);
    CHECK(max_abs_diff(fused.out.slice(1, 0, H / 2), no_wrap.out.slice(1, 0, H / 2)) == 0);
}

// Groups that straddle the kernel's 64-key tiles and 16-row query blocks: G = 48 at T = 192 puts
// group and segment edges at 24, 48, 72, ..., inside tiles; the roll form's last group wraps.
TEST_CASE("S2-Attn: both forms equal their references when groups straddle the kernel's tiles") {
    Generator gen(24);
    const int64_t B = 1, H = 4, T = 192, D = 16, G = 48;
    Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
    Tensor w = randn({B, H, T, D}, gen);
    const double scale = 1.0 / std::sqrt(double(D));
    AttentionResult no_wrap = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(G), scale);
    }, q, k, v, w);
    check_same(no_wrap, run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return segmented_reference(a, b, c, halves(H, groups_of(G, T), shifted_segments(G, T)));
    }, q, k, v, w));
    AttentionResult rolled = run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return fused_attention(a, b, c, s2(G, true), scale);
    }, q, k, v, w);
    check_same(rolled, run_attention([&](const Tensor& a, const Tensor& b, const Tensor& c) {
        return roll_reference(a, b, c, G);
    }, q, k, v, w));
}

TEST_CASE("S2-Attn: float64 gradchecks of G = T, the no-wrap and the roll forms (with padding, GQA)") {
    Tensor q = leaf({2, 4, 8, 3}, 31), k = leaf({2, 2, 8, 3}, 32), v = leaf({2, 2, 8, 3}, 33);
    for (int form = 0; form < 3; ++form) {
        CAPTURE(form);
        raw::AttentionPattern p = form == 0 ? s2(8) : s2(4, form == 2);
        // the second sequence has key 6 padded: inside a group for some heads
        p.key_padding = tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1}, {2, 8}, DType::F64);
        expect_gradcheck([&](Inputs x) { return fused_attention(x[0], x[1], x[2], p, 0.41); }, {q, k, v});
    }
}

TEST_CASE("S2-Attn: bad group sizes are refused with T, G and the fix") {
    Tensor q = zeros({1, 4, 12, 8});
    std::string e = error_of([&] { raw::attention_forward(q, q, q, s2(5), 1.0); });
    CHECK(contains(e, "T = 12"));
    CHECK(contains(e, "G = 5"));
    CHECK(contains(e, "multiple of G"));
    CHECK(contains(error_of([&] { nn::shifted_group_size(10, 0.3); }), "T = 10 tokens do not split into groups of G = 3"));
    CHECK(contains(error_of([&] { nn::shifted_group_size(6, 0.25); }), "G = 1"));
    CHECK(nn::shifted_group_size(4096, 0.25) == 1024);
    CHECK(nn::shifted_group_size(6, 1.0 / 3) == 2);
    Tensor odd = zeros({1, 3, 12, 8});
    CHECK(contains(error_of([&] { raw::attention_forward(odd, odd, odd, s2(4), 1.0); }), "must be even"));
    Tensor longer = zeros({1, 4, 16, 8});
    CHECK(contains(error_of([&] { raw::attention_forward(q, longer, longer, s2(4), 1.0); }), "Tq == Tk"));
}

TEST_CASE("S2-Attn: MultiHeadAttention groups in training and attends fully in eval") {
    Generator init(41);
    nn::AttentionConfig c;
    c.dim = 16, c.heads = 4, c.fused_qkv = false, c.rope = true;
    nn::MultiHeadAttention attn(c, init);
    Generator gen(42);
    Tensor x = randn({2, 16, 16}, gen);
    attn.eval();
    Tensor full = attn.forward(x);
    attn.train();
    CHECK(max_abs_diff(attn.forward(x), full) == 0);  // the option is off
    attn.config.shifted_group_ratio = 0.25;
    Tensor grouped = attn.forward(x);
    CHECK(max_abs_diff(grouped, full) > 1e-3);
    // the same as the composed path with groups of G = 16 / 4 on the module's own q, k, v
    nn::MultiHeadAttention::Projected p = attn.project(x);
    nn::RopeTables t = nn::rope_tables(16, 4, 0, c.rope_theta, c.rope_scaling, x.dtype(), x.device());
    nn::AttentionMask mask;
    mask.causal = true, mask.group = 4;
    Tensor y = nn::composed_attention(nn::apply_rope(p.q, t), nn::apply_rope(p.k, t), p.v, mask, 0, nullptr, true);
    CHECK(max_abs_diff(grouped, attn.out_proj->forward(nn::merge_heads(y))) < 1e-5);
    attn.eval();
    CHECK(max_abs_diff(attn.forward(x), full) == 0);  // inference: full attention
    attn.train();
    Tensor ragged = randn({1, 6, 16}, gen);  // G = int(6 / 4) = 1
    CHECK(contains(error_of([&] { attn.forward(ragged); }), "T = 6"));
}
