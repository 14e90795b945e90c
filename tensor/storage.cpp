#include "tensor/storage.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "tensor/check.h"
#include "tensor/cuda/runtime.h"

namespace ember {

// CPU buffers are 64-byte aligned so that vector loads never straddle a cache line.
static constexpr size_t CPU_ALIGNMENT = 64;

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
    if (device.is_cuda()) {
        // The CUDA runtime (tensor/cuda/runtime.cu) drives one GPU, device 0.
        EMBER_CHECK(device.index == 0, "Storage: ", device, " is not supported; Ember uses one GPU, "
                    "cuda:0 (pick it with CUDA_VISIBLE_DEVICES)");
        data_ = cuda::allocate(bytes);
        return;
    }
    size_t rounded = (bytes + CPU_ALIGNMENT - 1) / CPU_ALIGNMENT * CPU_ALIGNMENT;
    data_ = std::aligned_alloc(CPU_ALIGNMENT, rounded == 0 ? CPU_ALIGNMENT : rounded);
    EMBER_CHECK(data_ != nullptr, "Storage: could not allocate ", bytes, " bytes on the CPU");
}

Storage::~Storage() {
    if (device_.is_cuda())
        cuda::release(data_, bytes_);
    else
        std::free(data_);
}

}  // namespace ember
