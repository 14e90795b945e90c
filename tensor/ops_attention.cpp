// Fused attention front-ends: shape checks, then the kernel of the tensors' device: the CPU one
// (tensor/cpu/attention.cpp) or the CUDA one (tensor/cuda/attention.cu), same arguments.
#include "tensor/cpu/attention.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

// A view whose last dim has unit stride (the kernels walk D contiguously).
Tensor unit_last_stride(const Tensor& x) { return x.stride(3) == 1 ? x : contiguous(x); }

// S2-Attn's groups need whole groups over one sequence of queries and keys, and heads to halve.
void check_groups(const char* op, const AttentionPattern& pattern, int64_t H, int64_t Tq, int64_t Tk) {
    const int64_t G = pattern.group;
    if (G == 0) return;
    EMBER_CHECK(G >= 2, op, ": the shifted-group size must be at least 2, got ", G);
    EMBER_CHECK(Tq == Tk, op, ": shifted groups need the queries' own keys only (Tq == Tk), got Tq = ",
                Tq, ", Tk = ", Tk, "; S2-Attn is for training, without prefix or cached keys");
    EMBER_CHECK(Tq % G == 0, op, ": T = ", Tq, " is not a multiple of the group size G = ", G,
                "; make the sequence length a multiple of G (pad or crop) or pick another group size");
    EMBER_CHECK(H % 2 == 0, op, ": shifted groups move half the heads, so the number of query heads "
                "must be even, got ", H);
}

struct Checked {
    Tensor q, k, v, real;  // real: (B, Tk) in q's dtype, contiguous, or undefined
};

Checked check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                        const AttentionPattern& pattern) {
    check_defined(op, q, "q");
    check_defined(op, k, "k");
    check_defined(op, v, "v");
    dispatch_float(q.dtype(), op, [](auto) {});
    check_same_dtype(op, q, k);
    check_same_dtype(op, q, v);
    EMBER_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be (B, H, T, D), "
                "got ", q.shape(), ", ", k.shape(), ", ", v.shape());
    const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), Tk = k.size(2);
    EMBER_CHECK(k.shape() == v.shape() && k.size(0) == B && k.size(3) == D, op, ": k ", k.shape(),
                " and v ", v.shape(), " must both be (B, Hkv, Tk, D) with B = ", B, ", D = ", D);
    EMBER_CHECK(Hkv > 0 && H % Hkv == 0, op, ": ", H, " query heads cannot be shared evenly by ",
                Hkv, " key/value heads");
    for (const Tensor* t : {&k, &v}) check_same_device(op, q, *t);
    check_groups(op, pattern, H, q.size(2), Tk);
    Checked c{unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), Tensor()};
    if (pattern.key_padding.defined()) {
        EMBER_CHECK(pattern.key_padding.shape() == Shape({B, Tk}), op, ": key_padding must be (B, Tk) = (",
                    B, ", ", Tk, "), got ", pattern.key_padding.shape());
        c.real = contiguous(to_dtype(to_device(pattern.key_padding, q.device()), q.dtype()));
    }
    return c;
}

}  // namespace

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionPattern& pattern, double scale) {
    Checked c = check_attention("attention_forward", q, k, v, pattern);
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
    AttentionOutput res{make_tensor({B, H, Tq, D}, q.dtype(), q.device()),
                        make_tensor({B, H, Tq}, q.dtype(), q.device())};
    switch (q.device().type) {
        case DeviceType::CPU: cpu::attention_forward(c.q, c.k, c.v, c.real, pattern, scale, res.out, res.lse); break;
        case DeviceType::CUDA:
            ON_CUDA("attention_forward", cuda::attention_forward(c.q, c.k, c.v, c.real, pattern, scale,
                                                                 res.out, res.lse));
            break;
    }
    return res;
}

AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const AttentionOutput& saved,
                                  const AttentionPattern& pattern, double scale) {
    Checked c = check_attention("attention_backward", q, k, v, pattern);
    check_defined("attention_backward", dout, "dout");
    EMBER_CHECK(dout.shape() == q.shape() && saved.out.shape() == q.shape(), "attention_backward: dout ",
                dout.shape(), " and out ", saved.out.shape(), " must have q's shape ", q.shape());
    AttentionGrads g{zeros(q.shape(), q.dtype(), q.device()), zeros(k.shape(), k.dtype(), k.device()),
                     zeros(v.shape(), v.dtype(), v.device())};
    const Tensor g_out = contiguous(dout), out = contiguous(saved.out), lse = contiguous(saved.lse);
    switch (q.device().type) {
        case DeviceType::CPU:
            cpu::attention_backward(g_out, c.q, c.k, c.v, out, lse, c.real, pattern, scale, g.dq, g.dk, g.dv);
            break;
        case DeviceType::CUDA:
            ON_CUDA("attention_backward", cuda::attention_backward(g_out, c.q, c.k, c.v, out, lse, c.real,
                                                                   pattern, scale, g.dq, g.dk, g.dv));
            break;
    }
    return g;
}

Tensor attention_visible(const AttentionPattern& pattern, int64_t H, int64_t Tq, int64_t Tk,
                         DType dtype, Device device) {
    check_groups("attention_visible", pattern, H, Tq, Tk);
    Tensor host = make_tensor({H, Tq, Tk}, dtype, Device::cpu());
    cpu::attention_visible(pattern, H, Tq, Tk, host);
    return to_device(reshape(host, {1, H, Tq, Tk}), device);
}

}  // namespace raw
}  // namespace ember
