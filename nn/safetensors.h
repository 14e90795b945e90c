// safetensors: read and write the checkpoint format Hugging Face uses for weights.
//
// A file is three parts:
//   [8 bytes]  N, a little-endian u64: the header's length in bytes
//   [N bytes]  a UTF-8 JSON object (possibly padded with trailing spaces):
//                {"name": {"dtype": "F32", "shape": [2, 2], "data_offsets": [begin, end]}, ...,
//                 "__metadata__": {"key": "value", ...}}            (metadata is optional)
//   [rest]     the data buffer: each tensor row-major, little-endian, at [begin, end) of it
//
// Writing is atomic (a temporary file, fsync, then rename), so a crash or an error never leaves a
// half-written checkpoint where a good one stood. Reading trusts nothing: every length, offset,
// shape and type is checked before a byte is copied, and a bad file gives an ember::Error that
// names the file and the problem -- never a crash, never a read past the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/state_dict.h"

namespace ember::nn {

struct SafetensorsFile {
    StateDict tensors;                            // CPU, contiguous
    std::map<std::string, std::string> metadata;  // the "__metadata__" object
};

// Writes `tensors` (any device, any strides; undefined tensors are refused) and `metadata` to
// `path`. Keys are sorted and the data is laid out in key order; the header is padded with spaces
// to a multiple of 8 bytes so every tensor starts aligned. Replaces `path` only on success.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The same, with byte tensors besides: data Ember has no element type for (bitsandbytes' packed
// 4-bit codes), written with dtype U8. Names must not repeat across the two maps.
struct ByteTensor {
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;  // as many as the shape's product
};
void save_safetensors_with_bytes(const std::string& path, const StateDict& tensors,
                                 const std::map<std::string, ByteTensor>& byte_tensors,
                                 const std::map<std::string, std::string>& metadata = {});

// Reads a whole file into CPU tensors. F32, F64, I32 and I64 load as themselves; F16 and BF16 are
// widened to F32; other safetensors dtypes (U8, I16, ...) are refused with a clear message.
SafetensorsFile load_safetensors(const std::string& path);

// ---- header only, for tools (list a file's tensors without reading their data) ----
struct SafetensorsEntry {
    std::string name;
    std::string dtype;           // as written in the file: "F32", "BF16", ...
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0; // byte range in the data buffer
};
struct SafetensorsHeader {
    std::vector<SafetensorsEntry> entries;  // sorted by name
    std::map<std::string, std::string> metadata;
    uint64_t header_bytes = 0;  // N
    uint64_t data_bytes = 0;    // the data buffer's size
};
// Reads and fully validates the header of `path` (against the file's size) without its data.
SafetensorsHeader read_safetensors_header(const std::string& path);

// The parser both readers share, over bytes already in memory; `name` is used in error messages.
// load_safetensors is this over a file; the fuzzer calls it directly.
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name);

// Half-precision bit patterns to float, exactly (every f16 and bf16 value is a float).
float half_to_float(uint16_t bits);      // IEEE 754 binary16: 1 sign, 5 exponent, 10 mantissa
float bfloat16_to_float(uint16_t bits);  // bfloat16: the top 16 bits of a float

}  // namespace ember::nn
