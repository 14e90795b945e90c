// libFuzzer target for the safetensors reader: any bytes must either parse or be refused with an
// ember::Error. Any other exception, a crash, or a sanitizer report (ASan, UBSan) is a bug.
// Build and run with `make fuzz` (clang, -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>

#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        ember::nn::SafetensorsFile f = ember::nn::parse_safetensors(data, size, "fuzz-input");
        // Touch every loaded element so a bad copy shows up under ASan.
        unsigned sum = 0;
        for (const auto& [name, t] : f.tensors) {
            const auto* p = static_cast<const uint8_t*>(t.raw_data());
            for (size_t i = 0; i < size_t(t.numel()) * ember::dtype_size(t.dtype()); ++i) sum += p[i];
        }
        volatile unsigned sink = sum;
        (void)sink;
    } catch (const ember::Error&) {
        // refused with a message: the expected outcome for malformed input
    }
    return 0;
}
