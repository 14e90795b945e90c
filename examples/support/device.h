// --device for the example programs: cpu, cuda, or auto (the GPU when one is usable).
#pragma once

#include <string>

#include "tensor/check.h"
#include "tensor/device.h"

namespace ember::examples {

inline Device pick_device(const std::string& name) {
    if (name == "cpu") return Device::cpu();
    if (name == "cuda") {
        EMBER_CHECK(cuda_is_available(), "--device cuda, but no CUDA GPU is usable (this build ",
                    built_with_cuda() ? "has" : "lacks", " CUDA); use --device cpu");
        return Device::cuda();
    }
    EMBER_CHECK(name == "auto", "--device must be cpu, cuda or auto, not '", name, "'");
    return cuda_is_available() ? Device::cuda() : Device::cpu();
}

}  // namespace ember::examples
