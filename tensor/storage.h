// Storage: one allocation of bytes on one device, shared by every tensor that views it.
// The version counter counts in-place writes, so autograd can tell that a tensor it saved for the
// backward pass was changed under it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "tensor/device.h"

namespace ember {

class Storage {
public:
    Storage(size_t bytes, Device device);
    // Adopts `bytes` at `data` that someone else allocated (a file mapping, CUDA managed memory:
    // nn/paged_memory.h); the destructor calls release(data, bytes) instead of the allocator.
    // Not counted in cpu_memory_stats().
    using Release = void (*)(void* data, size_t bytes);
    Storage(void* data, size_t bytes, Device device, Release release);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return data_; }
    size_t bytes() const { return bytes_; }
    Device device() const { return device_; }
    uint64_t version() const { return version_; }
    void bump_version() { ++version_; }

private:
    void* data_ = nullptr;
    size_t bytes_ = 0;
    Device device_;
    uint64_t version_ = 0;
    Release release_ = nullptr;  // set for adopted memory
};

// Tensor storage on the CPU, in bytes: alive now, and the peak since the start or reset_cpu_peak().
struct CpuMemoryStats {
    int64_t bytes_in_use, peak_bytes_in_use;
};
CpuMemoryStats cpu_memory_stats();
void reset_cpu_peak();

}  // namespace ember
