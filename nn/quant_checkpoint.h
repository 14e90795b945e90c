// Quantized models on disk: safetensors in the layout bitsandbytes' Linear4bit writes, so a file
// reads the way a peft/bitsandbytes user expects. For a QuantLinear at <p> (NF4):
//   <p>.weight                                 U8 (ceil(n/2), 1)  packed codes, 2j high nibble
//   <p>.weight.absmax                          U8 (blocks) double-quantized, else F32 (blocks)
//   <p>.weight.quant_map                       F32 (16)           the NF4 table
//   <p>.weight.nested_absmax                   F32 (ceil(blocks / 256))
//   <p>.weight.nested_quant_map                F32 (256)          the 8-bit dynamic code
//   <p>.weight.quant_state.bitsandbytes__nf4   U8 JSON: quant_type, blocksize, dtype, shape,
//                                              nested_blocksize, nested_dtype, nested_offset
// (bitsandbytes functional.py QuantState.as_dict(packed=True), nn/modules.py Linear4bit). INT4
// has no bitsandbytes counterpart; it is written alongside in the same spirit:
//   <p>.weight U8, <p>.weight.scales and <p>.weight.zeros F32 (out, in / L),
//   <p>.weight.quant_state.ember__int4 U8 JSON: quant_type "int4", group_size, shape.
// Every other tensor of the model (biases, norms, embeddings, an f32 head) is saved as itself.
#pragma once

#include <map>
#include <string>

#include "nn/module.h"
#include "nn/quant_linear.h"

namespace ember {
namespace nn {

struct QuantizedCheckpoint {
    StateDict tensors;                                // the plain tensors, CPU
    std::map<std::string, QuantizedWeight> weights;  // by module name ("h.0.attn.c_attn"), CPU
};

void save_quantized(const std::string& path, Module& model);
QuantizedCheckpoint read_quantized(const std::string& path);
// Reads `path` into `model`: each quantized weight goes to the QuantLinear at its name (a Linear
// there is replaced by one that keeps its bias slot), everything else through load_state_dict
// (strict: a missing or unexpected tensor is an error).
void load_quantized(const std::string& path, Module& model);

}  // namespace nn
}  // namespace ember
