// libFuzzer target for the IDX reader (images and labels): any bytes must load or be refused
// with an ember::Error naming the input; never a crash, an overflow or a huge allocation. The
// first byte picks images or labels. `make fuzz` runs it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/datasets.h"
#include "tensor/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        ember::Tensor t = data[0] & 1 ? ember::parse_idx_images(bytes, "fuzz-input")
                                      : ember::parse_idx_labels(bytes, "fuzz-input");
        double sum = 0;  // touch every value so a bad copy shows up under ASan
        if (t.dtype() == ember::DType::F32)
            for (int64_t i = 0; i < t.numel(); ++i) sum += t.data<float>()[i];
        else
            for (int64_t i = 0; i < t.numel(); ++i) sum += double(t.data<int64_t>()[i]);
        volatile double sink = sum;
        (void)sink;
    } catch (const ember::Error&) {
    }
    return 0;
}
