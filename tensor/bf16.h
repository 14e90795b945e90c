// bfloat16 weights: a frozen (out, in) matrix stored as bf16 (the top 16 bits of an f32: 8
// exponent bits, 7 mantissa bits), half the bytes of f32. Like a 4-bit weight (tensor/quant.h) it
// is not an element type: a Bf16Weight is read only by the products below.
//
// Why: a LoRA step over a frozen base spends ~80% of its time in products with the frozen weights
// (bench/NOTES.md). AVX-512 BF16's vdpbf16ps multiplies pairs of bf16 values and adds both
// products into an f32 lane, twice the multiply-adds of an f32 FMA per instruction, so those
// products can run at up to twice the f32 rate. The price is the usual bf16 mixed-precision one:
// the weight and the product's other operand (the activations, or the output gradient) are
// rounded to bf16 (about 3 significant digits); sums are f32.
//
// Rounding is to nearest, ties to even, as PyTorch's `tensor.to(torch.bfloat16)` rounds. Every
// bf16 value is an f32 value exactly, and so is the product of two of them (8 x 8 mantissa bits).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "tensor/tensor.h"

namespace ember {

// f32 -> bf16 bits, round to nearest even; a NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

inline float bf16_to_float(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float x;
    std::memcpy(&x, &bits, 4);
    return x;
}

// A bf16 matrix: a weight (out, in), or in mixed-precision training a Linear's input (M, in).
struct Bf16Weight {
    int64_t rows = 0, cols = 0;  // (out, in)
    Tensor bits;  // (ceil(rows * cols / 2),) i32: two bf16 per word, element e at uint16 index e

    int64_t numel() const { return rows * cols; }
    const uint16_t* data() const { return static_cast<const uint16_t*>(bits.raw_data()); }
    Device device() const { return bits.device(); }
    std::string describe() const;  // "bf16 (768, 2304)"
};

// A 2-D f32 (or f64) weight, rounded to bf16 (on the CPU).
Bf16Weight to_bf16(const Tensor& w);
// The (out, in) weight as numbers, in `dtype` (f32 or f64): exactly the bf16 values.
Tensor from_bf16(const Bf16Weight& w, DType dtype = DType::F32);

namespace raw {
// Rounds each element of an f32 tensor to the nearest bf16 value (the result is f32).
Tensor round_to_bf16(const Tensor& x);

// The products through a bf16 weight W (out, in):
//   bf16_matmul(x, W)     x (M, in) -> x W^T (M, out)    the forward of a Linear
//   bf16_matmul_t(dy, W)  dy (M, out) -> dy W (M, in)    its input gradient
// An f32 input is rounded to bf16 and the sums are f32: on a CPU with AVX-512 BF16 in one pass of
// vdpbf16ps (tensor/cpu/bf16_gemm.cpp), elsewhere as round_to_bf16(x) times the widened weight,
// which is the same arithmetic summed in another order. An f64 input (a gradient check) is not
// rounded: the product is exact in f64 with the weight's bf16 values. CPU only.
Tensor bf16_matmul(const Tensor& x, const Bf16Weight& w);
Tensor bf16_matmul_t(const Tensor& dy, const Bf16Weight& w);

// The weight gradient of a Linear whose input was kept in bf16 (mixed-precision training,
// nn/bf16_autocast.h): dy (M, out) f32 and x (M, in), a Bf16Weight holding the input's rows ->
// dy^T x (out, in) f32. dy is rounded to bf16, the sums over the M rows are f32. CPU, f32 only.
Tensor bf16_weight_grad(const Tensor& dy, const Bf16Weight& x);
}  // namespace raw

namespace cpu {
// C (M, N) = A (M, K) @ B (K, N), A f32 and B bf16, each through strides (element (r, c) at
// ptr[r * row_stride + c * col_stride]); C contiguous. A is rounded to bf16 as it is packed.
// Returns false (and does nothing) when the CPU has no AVX-512 BF16 or it was switched off.
bool bf16_gemm(const float* a, int64_t a_rs, int64_t a_cs, const uint16_t* b, int64_t b_rs, int64_t b_cs,
               float* c, int64_t M, int64_t N, int64_t K);
bool cpu_has_avx512_bf16();
// Tests switch the vdpbf16ps kernel off to check the portable path.
void allow_avx512_bf16(bool allow);
}  // namespace cpu

}  // namespace ember
