#include "tensor/cpu/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tensor/check.h"

namespace ember {
namespace cpu {
namespace {

constexpr size_t ALIGNMENT = 64;  // vector loads never straddle a cache line
constexpr int STEPS_PER_OCTAVE = 8;

bool sanitized_build() {
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

class CachingAllocator {
public:
    CachingAllocator() {
        const char* env = std::getenv("EMBER_CPU_CACHE");
        enabled_ = !sanitized_build() && !(env && std::strcmp(env, "0") == 0);
    }
    ~CachingAllocator() { empty(); }

    void* allocate(size_t bytes) {
        const size_t size = size_class(bytes);
        if (enabled_) {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = free_.find(size);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                stats_.bytes_cached -= size;
                stats_.bytes_in_use += size;
                ++stats_.cache_hits;
                return p;
            }
        }
        void* p = std::aligned_alloc(ALIGNMENT, size);
        if (!p && enabled_) {  // out of memory: give the cache back and try once more
            empty();
            p = std::aligned_alloc(ALIGNMENT, size);
        }
        EMBER_CHECK(p != nullptr, "Storage: could not allocate ", bytes, " bytes on the CPU (",
                    allocator_stats().bytes_in_use, " bytes are in use)");
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.bytes_in_use += size;
        ++stats_.system_allocs;
        return p;
    }

    void release(void* p, size_t bytes) {
        if (!p) return;
        const size_t size = size_class(bytes);
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.bytes_in_use -= size;
        if (!enabled_) {
            std::free(p);
            return;
        }
        free_[size].push_back(p);
        stats_.bytes_cached += size;
    }

    void empty() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [size, blocks] : free_)
            for (void* p : blocks) std::free(p);
        free_.clear();
        stats_.bytes_cached = 0;
    }

    AllocatorStats stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        return stats_;
    }
    bool enabled() const { return enabled_; }

private:
    std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> free blocks
    AllocatorStats stats_;
    bool enabled_ = true;
};

CachingAllocator& the_allocator() {
    static CachingAllocator* a = new CachingAllocator;  // never destroyed: storages may outlive main
    return *a;
}

}  // namespace

size_t size_class(size_t bytes) {
    size_t size = (std::max<size_t>(bytes, 1) + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    // below 8 cache lines every multiple of 64 is its own class; above, 8 steps per octave
    if (size <= ALIGNMENT * STEPS_PER_OCTAVE) return size;
    int top = 63 - __builtin_clzll(size);               // 2^top <= size < 2^(top + 1)
    size_t step = size_t(1) << (top - 3);               // 2^top / 8, a multiple of 64 here
    return (size + step - 1) / step * step;
}

void* allocate(size_t bytes) { return the_allocator().allocate(bytes); }
void release(void* ptr, size_t bytes) { the_allocator().release(ptr, bytes); }
AllocatorStats allocator_stats() { return the_allocator().stats(); }
void empty_cache() { the_allocator().empty(); }
bool caching_enabled() { return the_allocator().enabled(); }

}  // namespace cpu
}  // namespace ember
