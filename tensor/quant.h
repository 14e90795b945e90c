// Quantized weights: a frozen (out, in) matrix stored as packed 4-bit codes plus the statistics
// that turn them back into numbers. Not an element type: a QuantizedWeight is read only by the
// kernels below (dequantize, the product with an f32 input, the input gradient through it).
//
// Two formats:
//   NF4   bitsandbytes' 4-bit NormalFloat (Dettmers et al., "QLoRA", 2023): the weight is
//         flattened row-major and cut into blocks of 64; each block keeps absmax = max|w| and each
//         element the index of the NF4 value nearest to w / absmax (bitsandbytes' mid-point
//         decision tree, csrc/kernels.cu dQuantizeNF4). Two codes per byte, element 2j in the high
//         nibble. With double quantization (bitsandbytes' compress_statistics) the absmaxes lose
//         their mean (the offset) and are themselves quantized in blocks of 256 to bitsandbytes'
//         signed 8-bit dynamic code, keeping one f32 nested absmax per 256:
//         4 + 8/64 + 32/(64*256) = 4.127 bits per parameter.
//   INT4  group-wise asymmetric integers for QA-LoRA (Xu et al., 2023) as GPTQ stores them: per
//         output row, groups of L consecutive inputs share a scale s and a zero point z, and
//         w = s * (q - z) with q in [0, 15] (round to nearest). Zero points are f32 so that
//         QA-LoRA's merge can move them off the integers while the codes stay as they are.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace ember {

// The 16 NF4 values, ascending (bitsandbytes functional.py get_4bit_type("nf4")).
extern const std::array<float, 16> NF4_VALUES;
// The 15 mid-points between them that bitsandbytes' decision tree compares against: the code of
// x is the number of mid-points that x exceeds.
extern const std::array<float, 15> NF4_MIDPOINTS;
// bitsandbytes' default 8-bit code for blockwise quantization, create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8): 256 values, ascending, computed in f32 as torch does.
const std::array<float, 256>& dynamic_code_8bit();
// Its unsigned twin, create_dynamic_map(signed=False): 256 values in [0, 1], twice as dense, for
// quantities that are never negative (AdamW's second moment in 8-bit optimizers).
const std::array<float, 256>& dynamic_code_8bit_unsigned();

// bitsandbytes' nearest-code rule over a sorted 256-value code (csrc/kernels.cu dQuantize<0>): a
// 7-step binary search from index 127, then the nearer neighbour by the mid-point.
uint8_t quantize_to_code_8bit(const float* code, float x);

// Bytes on a device. Ember has no 8-bit element type, so the bytes live in an i32 tensor (four
// per element, little-endian order: byte k of the stream is byte k of the tensor's memory).
struct ByteBuffer {
    Tensor words;       // (ceil(bytes / 4),) i32
    int64_t bytes = 0;

    static ByteBuffer zeros(int64_t bytes, Device device = Device::cpu());
    const uint8_t* data() const { return static_cast<const uint8_t*>(words.raw_data()); }
    uint8_t* data() { return static_cast<uint8_t*>(words.raw_data()); }
    Device device() const { return words.device(); }
    ByteBuffer to(Device device) const { return {words.to(device), bytes}; }
};

enum class QuantFormat { NF4, INT4 };
const char* quant_format_name(QuantFormat f);  // "nf4", "int4"

struct QuantizedWeight {
    QuantFormat format = QuantFormat::NF4;
    int64_t rows = 0, cols = 0;  // (out, in): the shape of the f32 weight it stands for
    int64_t blocksize = 64;      // NF4: elements per absmax (flattened); INT4: the group size L
    ByteBuffer codes;            // ceil(rows * cols / 2) bytes, element 2j in the high nibble

    // NF4 statistics: either absmax (f32, one per block) or, double-quantized, absmax_codes (one
    // byte per block into nested_code) with nested_absmax (f32, one per nested_blocksize blocks)
    // and absmax_offset: absmax[b] = nested_code[q[b]] * nested_absmax[b / 256] + absmax_offset.
    bool double_quant = false;
    Tensor absmax;         // (blocks,) f32, without double quantization
    ByteBuffer absmax_codes;
    Tensor nested_absmax;  // (ceil(blocks / 256),) f32
    Tensor nested_code;    // (256,) f32: dynamic_code_8bit()
    float absmax_offset = 0;
    int64_t nested_blocksize = 256;

    // INT4 statistics, (rows, cols / L) f32 each: w[o][i] = scales[o][g] * (q - zeros[o][g]).
    Tensor scales, zeros;

    int64_t numel() const { return rows * cols; }
    int64_t blocks() const { return (numel() + blocksize - 1) / blocksize; }  // NF4
    int64_t groups_per_row() const { return cols / blocksize; }                // INT4
    Device device() const { return codes.device(); }
    QuantizedWeight to(Device device) const;
    // Bytes of everything it stores (codes and statistics) and that per parameter, in bits.
    int64_t storage_bytes() const;
    double bits_per_param() const { return 8.0 * double(storage_bytes()) / double(numel()); }
    std::string describe() const;  // "nf4 (768, 3072), block 64, double-quantized, 4.127 bits/param"
};

// Quantizes a 2-D f32 weight (out, in), on the CPU or the GPU; the result lives on w's device.
// NF4: blocksize a power of two in [32, 4096] as bitsandbytes allows (64 by default).
QuantizedWeight quantize_nf4(const Tensor& w, bool double_quant = true, int64_t blocksize = 64);
// INT4: in % group_size == 0 and group_size even.
QuantizedWeight quantize_int4(const Tensor& w, int64_t group_size = 32);

// The (out, in) weight the codes stand for, in `dtype` (f32 or f64), on the weight's device.
Tensor dequantize(const QuantizedWeight& w, DType dtype = DType::F32);
// The f32 absmax of each NF4 block, the nested quantization undone.
Tensor nf4_block_absmax(const QuantizedWeight& w);

// ---- merging a change into a quantized weight ----
// QA-LoRA's merge (Xu et al., 2023; yuhuixu1993/qa-lora merge.py): a change that is constant
// within each group, delta (out, in / L), moves only the zero points, since
// s (q - z) + delta = s (q - (z - delta / s)). The integer codes stay exactly as they are; the
// zero points leave the integers. INT4 weights only.
void fold_into_zero_points(QuantizedWeight& w, const Tensor& delta_per_group);

// Any other change (QLoRA's B A) has no lossless 4-bit merge: requantize_merge quantizes
// dequant(W) + delta afresh in W's format and reports what that rounding cost, measured against
// the exact f32 sum. (The lossless alternative is dequantize(W) + delta, an f32 base.)
struct RequantizeError {
    double max_abs = 0, rms = 0;  // of requantized - (dequant(W) + delta)
    double max_abs_delta = 0;     // the size of the change it had to carry, for comparison
};
QuantizedWeight requantize_merge(const QuantizedWeight& w, const Tensor& delta, RequantizeError* error = nullptr);

// The products through a quantized weight W (out, in), neither of which builds the f32 weight
// for f32 inputs (the codes are dequantized inside the kernels):
//   quant_matmul(x, W)      x (M, in) -> x dequant(W)^T (M, out)   the forward of a Linear
//   quant_matmul_t(dy, W)   dy (M, out) -> dy dequant(W) (M, in)   its input gradient
// f64 inputs (gradient checks) go through dequantize(W, F64) and an exact matmul. These are raw
// ops: nn/quant_linear.h makes them differentiable.
namespace raw {
Tensor quant_matmul(const Tensor& x, const QuantizedWeight& w);
Tensor quant_matmul_t(const Tensor& dy, const QuantizedWeight& w);
}  // namespace raw

}  // namespace ember
