// bf16 weights (tensor/bf16.h): rounding, widening, and the two products, which take the
// vdpbf16ps GEMM of tensor/cpu/bf16_gemm.cpp when the CPU has it.
#include "tensor/bf16.h"

#include "tensor/dispatch.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ember {

std::string Bf16Weight::describe() const { return make_message("bf16 (", rows, ", ", cols, ")"); }

Bf16Weight to_bf16(const Tensor& w) {
    EMBER_CHECK(w.defined() && w.dim() == 2, "to_bf16: needs a 2-D weight (out, in), got ",
                w.defined() ? make_message(w.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(w.device().type == DeviceType::CPU, "to_bf16: the weight is on ", w.device(),
                "; bf16 weights are a CPU speed path: convert on the CPU, or keep the f32 weight on the GPU");
    Tensor f = raw::contiguous(w.dtype() == DType::F32 ? w : raw::to_dtype(w, DType::F32));
    Bf16Weight out;
    out.rows = w.size(0), out.cols = w.size(1);
    out.bits = make_tensor({(out.numel() + 1) / 2}, DType::I32, Device::cpu());
    if (out.numel() % 2) out.bits.data<int32_t>()[out.bits.numel() - 1] = 0;  // the unused half word
    const float* src = f.data<float>();
    uint16_t* dst = static_cast<uint16_t*>(out.bits.raw_data());
    parallel_for(out.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) dst[i] = float_to_bf16(src[i]);
    });
    return out;
}

Tensor from_bf16(const Bf16Weight& w, DType dtype) {
    EMBER_CHECK(w.device().type == DeviceType::CPU, "from_bf16: ", w.describe(), " is on ", w.device(),
                "; bf16 weights live on the CPU");
    Tensor out = make_tensor({w.rows, w.cols}, dtype, Device::cpu());
    const uint16_t* src = w.data();
    dispatch_float(dtype, "from_bf16", [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* dst = out.data<T>();
        parallel_for(w.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) dst[i] = T(bf16_to_float(src[i]));
        });
    });
    return out;
}

namespace raw {

Tensor round_to_bf16(const Tensor& x) {
    EMBER_CHECK(x.defined() && x.dtype() == DType::F32 && x.device().type == DeviceType::CPU,
                "round_to_bf16: needs an f32 tensor on the CPU, got ",
                x.defined() ? make_message(x.dtype(), " on ", x.device()) : std::string("an undefined tensor"));
    Tensor src = contiguous(x), out = empty_like(src);
    const float* s = src.data<float>();
    float* d = out.data<float>();
    parallel_for(src.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) d[i] = bf16_to_float(float_to_bf16(s[i]));
    });
    return out;
}

// The checks both products share: x (M, width) on the CPU, in f32 or f64.
static void check_product(const char* op, const Tensor& x, int64_t width, const char* width_name,
                          const Bf16Weight& w) {
    EMBER_CHECK(x.defined() && x.dim() == 2, op, ": needs a 2-D input (M, ", width_name, "), got ",
                x.defined() ? make_message(x.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(x.size(1) == width, op, ": input of shape ", x.shape(), " does not fit ", w.describe(),
                "; its last dim must be ", width);
    EMBER_CHECK(x.device().type == DeviceType::CPU && w.device().type == DeviceType::CPU, op,
                ": the input is on ", x.device(), " and the weight on ", w.device(), "; bf16 weights are "
                "a CPU speed path: on a GPU keep the f32 Linear (cast_linears_to_bf16 is for CPU training)");
    dispatch_float(x.dtype(), op, [](auto) {});
}

// x (M, K) @ B, B = W^T (transpose_w) or W, with W (rows, cols) bf16. K = cols when transposed.
static Tensor product(const char* op, const Tensor& x, const Bf16Weight& w, bool transpose_w) {
    const int64_t K = transpose_w ? w.cols : w.rows, N = transpose_w ? w.rows : w.cols;
    check_product(op, x, K, transpose_w ? "in" : "out", w);
    if (x.dtype() == DType::F32) {
        Tensor y = make_tensor({x.size(0), N}, DType::F32, Device::cpu());
        if (y.numel() == 0) return y;
        // B[k][n] is W[n][k] (strides 1, cols) or W[k][n] (strides cols, 1).
        const int64_t b_rs = transpose_w ? 1 : w.cols, b_cs = transpose_w ? w.cols : 1;
        if (cpu::bf16_gemm(x.data<float>(), x.stride(0), x.stride(1), w.data(), b_rs, b_cs,
                           y.data<float>(), x.size(0), N, K))
            return y;
        // No vdpbf16ps: the same bf16 x bf16 products, each exact in f32, summed by the f32 GEMM.
        Tensor wf = from_bf16(w, DType::F32);
        return matmul(round_to_bf16(x), transpose_w ? transpose(wf, 0, 1) : wf);
    }
    Tensor wd = from_bf16(w, DType::F64);  // a gradient check: exact, x not rounded
    return matmul(x, transpose_w ? transpose(wd, 0, 1) : wd);
}

Tensor bf16_matmul(const Tensor& x, const Bf16Weight& w) { return product("bf16_matmul", x, w, true); }
Tensor bf16_matmul_t(const Tensor& dy, const Bf16Weight& w) { return product("bf16_matmul_t", dy, w, false); }

Tensor bf16_weight_grad(const Tensor& dy, const Bf16Weight& x) {
    const char* op = "bf16_weight_grad";
    EMBER_CHECK(dy.defined() && dy.dim() == 2 && dy.dtype() == DType::F32, op, ": needs an f32 output gradient (M, "
                "out), got ", dy.defined() ? make_message(dy.dtype(), " ", dy.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(dy.size(0) == x.rows, op, ": output gradient of shape ", dy.shape(), " and input ", x.describe(),
                " have different row counts; both are (M, ...) for the same M tokens");
    EMBER_CHECK(dy.device().type == DeviceType::CPU && x.device().type == DeviceType::CPU, op, ": the gradient is on ",
                dy.device(), " and the input on ", x.device(), "; bf16 products are a CPU speed path");
    Tensor g = contiguous(dy);
    const int64_t M = x.rows, out = g.size(1), in = x.cols;
    Tensor dw = make_tensor({out, in}, DType::F32, Device::cpu());
    if (dw.numel() == 0) return dw;
    // A = dy^T: A[o][m] = g[m][o] (strides 1, out); B = x (strides in, 1); the depth is the M rows.
    if (cpu::bf16_gemm(g.data<float>(), 1, out, x.data(), in, 1, dw.data<float>(), out, in, M)) return dw;
    return matmul(transpose(round_to_bf16(g), 0, 1), from_bf16(x, DType::F32));
}

}  // namespace raw
}  // namespace ember
