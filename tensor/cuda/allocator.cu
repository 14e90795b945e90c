// The caching allocator: GPU memory is taken from cudaMalloc once and then recycled, because
// cudaMalloc and cudaFree are slow (cudaFree also synchronizes the device). A training step that
// frees and re-makes the same tensors every iteration thus runs without a single cudaMalloc after
// the first step.
//
// Size classes: a request is rounded up to a multiple of 512 B when it is at most 1 MiB, and to a
// multiple of 2 MiB above (so a class wastes at most 512 B, or under 2 MiB on a block of more
// than 1 MiB). Each class has a free list; a block is only ever reused for its own class (no
// splitting, no merging: simple, and the repeated shapes of training hit the same classes).
//
// Stream safety: all of Ember's work runs on one stream, in order, so a block freed by the host
// and handed out again is only touched by kernels queued after those that used it before.
//
// Out of memory: cudaMalloc failing frees the whole cache and retries once; a second failure
// throws an error with the request and the allocator's statistics.
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cuda.h"

namespace ember {
namespace cuda {
namespace {

constexpr size_t SMALL_LIMIT = size_t(1) << 20;  // 1 MiB
constexpr size_t SMALL_STEP = 512;
constexpr size_t LARGE_STEP = size_t(2) << 20;  // 2 MiB

size_t size_class(size_t bytes) {
    if (bytes == 0) bytes = 1;  // a 0-byte tensor still gets a real, distinct pointer
    const size_t step = bytes <= SMALL_LIMIT ? SMALL_STEP : LARGE_STEP;
    return (bytes + step - 1) / step * step;
}

struct Allocator {
    std::mutex mutex;
    std::map<size_t, std::vector<void*>> free_lists;  // class -> cached blocks
    AllocatorStats stats;

    // cudaFree every cached block. Caller holds the mutex.
    void free_cached() {
        for (auto& entry : free_lists)
            for (void* p : entry.second) cudaFree(p);  // errors here leave nothing to recover
        free_lists.clear();
        stats.bytes_cached = 0;
    }
};

Allocator& allocator() {
    static Allocator* a = new Allocator;  // never destroyed: tensors may be freed at exit
    return *a;
}

}  // namespace

void* allocator_malloc(size_t bytes) {
    const size_t rounded = size_class(bytes);
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    void* ptr = nullptr;
    auto it = a.free_lists.find(rounded);
    if (it != a.free_lists.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        a.stats.bytes_cached -= rounded;
        a.stats.cache_hits++;
    } else {
        cudaError_t err = cudaMalloc(&ptr, rounded);
        a.stats.cuda_malloc_calls++;
        if (err == cudaErrorMemoryAllocation) {
            cudaGetLastError();  // clear it, give back the cache and try once more
            a.free_cached();
            err = cudaMalloc(&ptr, rounded);
            a.stats.cuda_malloc_calls++;
        }
        if (err != cudaSuccess) {
            cudaGetLastError();
            size_t free_bytes = 0, total_bytes = 0;
            if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
            throw Error(make_message(
                "cuda::allocate: cannot allocate ", bytes, " bytes (", rounded,
                " rounded to its size class) on the GPU: ", cudaGetErrorString(err),
                ". The device has ", free_bytes, " of ", total_bytes, " bytes free; allocator: ",
                allocator_stats_string(a.stats), ". Use a smaller batch or model, or free tensors "
                "you no longer need."));
        }
    }
    a.stats.bytes_in_use += rounded;
    if (a.stats.bytes_in_use > a.stats.peak_bytes_in_use)
        a.stats.peak_bytes_in_use = a.stats.bytes_in_use;
    return ptr;
}

void allocator_free(void* ptr, size_t bytes) {
    const size_t rounded = size_class(bytes);
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    a.free_lists[rounded].push_back(ptr);
    a.stats.bytes_in_use -= rounded;
    a.stats.bytes_cached += rounded;
}

AllocatorStats allocator_stats() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    return a.stats;
}

std::string allocator_stats_string(const AllocatorStats& s) {
    std::ostringstream os;
    os << "bytes_in_use=" << s.bytes_in_use << ", bytes_cached=" << s.bytes_cached
       << ", peak_bytes_in_use=" << s.peak_bytes_in_use << ", cuda_malloc_calls="
       << s.cuda_malloc_calls << ", cache_hits=" << s.cache_hits;
    return os.str();
}

void empty_cache() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    if (!a.free_lists.empty()) {
        // Kernels queued on the stream may still use a block freed by the host: wait for them.
        CUDA_CHECK(cudaStreamSynchronize(stream()));
    }
    a.free_cached();
}

void reset_peak() {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mutex);
    a.stats.peak_bytes_in_use = a.stats.bytes_in_use;
}

}  // namespace cuda
}  // namespace ember
