// The seam between tensor/quant.cpp and the kernels that read a QuantizedWeight: a plain view of
// its pointers (all on one device), and the CPU (tensor/cpu/quant.cpp) and CUDA
// (tensor/cuda/quant.cu) entry points, which share names and arguments.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

#ifdef __CUDACC__
#define EMBER_HOST_DEVICE __host__ __device__
#else
#define EMBER_HOST_DEVICE
#endif

namespace ember {

struct QuantView {
    bool int4 = false;            // false: NF4
    int64_t rows = 0, cols = 0;   // (out, in)
    int64_t blocksize = 64;       // NF4 block (flattened) or INT4 group (along a row)
    const uint8_t* codes = nullptr;  // element 2j in the high nibble of byte j
    // NF4: absmax (f32 per block), or double-quantized: absmax_codes, nested_absmax, nested_code.
    const float* absmax = nullptr;
    const uint8_t* absmax_codes = nullptr;
    const float* nested_absmax = nullptr;
    const float* nested_code = nullptr;
    float absmax_offset = 0;
    int64_t nested_blocksize = 256;
    // INT4: (rows, cols / blocksize) each.
    const float* scales = nullptr;
    const float* zeros = nullptr;

    EMBER_HOST_DEVICE float block_absmax(int64_t b) const {
        if (absmax) return absmax[b];
        return nested_code[absmax_codes[b]] * nested_absmax[b / nested_blocksize] + absmax_offset;
    }
    EMBER_HOST_DEVICE uint8_t code(int64_t flat) const {
        uint8_t byte = codes[flat >> 1];
        return (flat & 1) ? (byte & 0x0F) : (byte >> 4);
    }
    // The fast kernels need every NF4 block inside one row and every row starting on a byte:
    // true for any INT4 weight and for NF4 with cols % blocksize == 0. Others are dequantized.
    bool rows_are_blocked() const { return int4 || cols % blocksize == 0; }
};

namespace cpu {
// w (n) f32 -> codes (ceil(n/2) bytes), absmax (ceil(n/blocksize)) f32: bitsandbytes' rule.
void quantize_nf4(const float* w, int64_t n, int64_t blocksize, uint8_t* codes, float* absmax);
// w (rows, cols) f32 -> codes, scales and zeros (rows, cols / group) f32.
void quantize_int4(const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* codes,
                   float* scales, float* zeros);
void dequantize(const QuantView& w, float* out);  // out (rows, cols) f32
void dequantize(const QuantView& w, double* out);
// y (M, out) = x (M, in) dequant(W)^T; x and y contiguous f32. Needs rows_are_blocked().
void quant_matmul(const QuantView& w, const float* x, int64_t M, float* y);
// dx (M, in) = dy (M, out) dequant(W); contiguous f32. Needs rows_are_blocked().
void quant_matmul_t(const QuantView& w, const float* dy, int64_t M, float* dx);
// The products use an AVX-512 build when the CPU has it; tests turn it off to check the AVX2 one.
void allow_avx512_quant(bool allow);
}  // namespace cpu

namespace cuda {
void quantize_nf4(const float* w, int64_t n, int64_t blocksize, uint8_t* codes, float* absmax);
void quantize_int4(const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* codes,
                   float* scales, float* zeros);
void dequantize(const QuantView& w, float* out);
void dequantize(const QuantView& w, double* out);
void quant_matmul(const QuantView& w, const float* x, int64_t M, float* y);
void quant_matmul_t(const QuantView& w, const float* dy, int64_t M, float* dx);
}  // namespace cuda

}  // namespace ember
