// The caching allocator's policy, free of CUDA so that it is tested on any machine
// (tests/test_cuda_alloc.cpp): which size class a request gets, and which cached block serves it.
//
// Size classes: up to 1 MiB, four classes per doubling (512 B at least), so a block wastes under a
// quarter of its request (or under 512 B); above 1 MiB, multiples of 2 MiB. A tensor that grows a
// little at a time (a KV cache gaining a token per step) therefore stays in one class for many
// steps, and the block it leaves behind serves the next step, instead of every step being a new
// class and a cudaMalloc.
//
// Best fit: a request takes a cached block of its own class or, failing that, the smallest cached
// block of a larger class up to twice its own size.
#pragma once

#include <cstddef>
#include <map>
#include <unordered_map>
#include <vector>

namespace ember {
namespace cuda {

constexpr size_t CACHE_SMALL_LIMIT = size_t(1) << 20;  // 1 MiB
constexpr size_t CACHE_MIN_BLOCK = 512;
constexpr size_t CACHE_LARGE_STEP = size_t(2) << 20;  // 2 MiB

inline size_t size_class(size_t bytes) {
    if (bytes <= CACHE_MIN_BLOCK) return CACHE_MIN_BLOCK;  // 0 bytes too: a real, distinct block
    size_t step = CACHE_LARGE_STEP;
    if (bytes <= CACHE_SMALL_LIMIT) {
        size_t high = 1;  // the largest power of two below bytes
        while (high * 2 < bytes) high *= 2;
        step = high / 4 > CACHE_MIN_BLOCK ? high / 4 : CACHE_MIN_BLOCK;
    }
    return (bytes + step - 1) / step * step;
}

class BlockCache {
public:
    // A cached block for a request of class `cls` (see above), or nullptr. *block_size gets the
    // size of the block handed out, which may exceed cls.
    void* take(size_t cls, size_t* block_size) {
        auto it = free_.lower_bound(cls);
        if (it == free_.end() || it->first > 2 * cls) return nullptr;
        void* ptr = it->second.back();
        *block_size = it->first;
        it->second.pop_back();
        if (it->second.empty()) free_.erase(it);
        cached_bytes_ -= *block_size;
        return ptr;
    }

    void put(void* ptr, size_t block_size) {
        free_[block_size].push_back(ptr);
        cached_bytes_ += block_size;
    }

    // Hands every cached block to release(ptr) and forgets them.
    template <typename Release>
    void drain(Release&& release) {
        for (auto& entry : free_)
            for (void* p : entry.second) release(p);
        free_.clear();
        cached_bytes_ = 0;
    }

    size_t cached_bytes() const { return cached_bytes_; }
    bool empty() const { return free_.empty(); }

private:
    std::map<size_t, std::vector<void*>> free_;  // block size -> cached blocks, no empty lists
    size_t cached_bytes_ = 0;
};

}  // namespace cuda
}  // namespace ember
