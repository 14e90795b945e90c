// Where a tensor's bytes live. The CPU always exists; CUDA exists when Ember was built with nvcc
// and a GPU is present at run time.
#pragma once

#include <ostream>

namespace ember {

enum class DeviceType { CPU, CUDA };

struct Device {
    DeviceType type = DeviceType::CPU;
    int index = 0;

    static Device cpu() { return {DeviceType::CPU, 0}; }
    static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
    bool is_cpu() const { return type == DeviceType::CPU; }
    bool is_cuda() const { return type == DeviceType::CUDA; }
    bool operator==(const Device& o) const { return type == o.type && index == o.index; }
    bool operator!=(const Device& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& os, Device d) {
    if (d.is_cpu()) return os << "cpu";
    return os << "cuda:" << d.index;
}

// True when this build has CUDA and a GPU answers. Never throws: any CUDA error means "no GPU".
bool cuda_is_available();
// True when this library was compiled with nvcc.
bool built_with_cuda();

}  // namespace ember
