#include "tensor/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "tensor/check.h"
#include "tensor/cpu/allocator.h"
#include "tensor/cuda/runtime.h"

namespace ember {

// Bytes of tensor storage alive on the CPU now, and the most there has been (for reports such as
// a fine-tuning method's peak memory).
static std::atomic<int64_t> g_cpu_in_use{0}, g_cpu_peak{0};

static void count_cpu_bytes(int64_t delta) {
    int64_t now = g_cpu_in_use.fetch_add(delta) + delta;
    int64_t peak = g_cpu_peak.load();
    while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {
    }
}

CpuMemoryStats cpu_memory_stats() { return {g_cpu_in_use.load(), g_cpu_peak.load()}; }
void reset_cpu_peak() { g_cpu_peak.store(g_cpu_in_use.load()); }

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
    if (device.is_cuda()) {
        // The CUDA runtime (tensor/cuda/runtime.cu) drives one GPU, device 0.
        EMBER_CHECK(device.index == 0, "Storage: ", device, " is not supported; Ember uses one GPU, "
                    "cuda:0 (pick it with CUDA_VISIBLE_DEVICES)");
        data_ = cuda::allocate(bytes);
        return;
    }
    data_ = cpu::allocate(bytes);  // the caching allocator (tensor/cpu/allocator.h)
    count_cpu_bytes(int64_t(bytes));
}

Storage::Storage(void* data, size_t bytes, Device device, Release release)
    : data_(data), bytes_(bytes), device_(device), release_(release) {
    EMBER_CHECK(data && release, "Storage: adopting memory needs the pointer and a release function");
}

Storage::~Storage() {
    if (release_) {
        release_(data_, bytes_);
    } else if (device_.is_cuda()) {
        cuda::release(data_, bytes_);
    } else {
        cpu::release(data_, bytes_);
        count_cpu_bytes(-int64_t(bytes_));
    }
}

}  // namespace ember
