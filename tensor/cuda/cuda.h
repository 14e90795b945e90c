// Ember's public CUDA controls: the caching allocator's statistics, the TF32 switch for f32
// matmuls, and cuRAND bulk fills. Usable in every build: in a CPU-only build the statistics are
// zeros, the switches are remembered but unused, and the fills throw "built without CUDA".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ember {

class Tensor;

namespace cuda {

// ---- the caching allocator (tensor/cuda/allocator.cu) ----
// Requests are rounded up to a size class (four per doubling up to 1 MiB, multiples of 2 MiB
// above; tensor/cuda/block_cache.h). A freed block is cached and serves a later request of its
// class, or of a class up to half its size, without cudaMalloc; cudaFree happens only in
// empty_cache() (and on out-of-memory, once, before the retry).
struct AllocatorStats {
    size_t bytes_in_use = 0;       // live blocks, rounded sizes
    size_t bytes_cached = 0;       // free blocks held for reuse
    size_t peak_bytes_in_use = 0;  // since the start or the last reset_peak()
    uint64_t cuda_malloc_calls = 0;
    uint64_t cache_hits = 0;       // requests served from a free list
};
AllocatorStats allocator_stats();
std::string allocator_stats_string(const AllocatorStats& s);  // one readable line
void empty_cache();  // cudaFree every cached block (none in use is touched)
void reset_peak();   // peak_bytes_in_use = bytes_in_use

// Exact mode, for compute-sanitizer runs: each request is a cudaMalloc of exactly its bytes and
// each release synchronizes and cudaFrees, so an access past a tensor's end or after its release
// reaches memory that is not allocated. Also switched on by EMBER_CUDA_EXACT_ALLOC=1 in the
// environment. Switching it on empties the cache first.
void set_exact_allocations(bool exact);
bool exact_allocations();

// ---- the sum of squares over many tensors (clip_grad_norm's gradient norm) ----
// sum over every tensor of sum(x^2), in double: one reduction over all of them and one host
// synchronization, the same result run to run. Tensors: contiguous f32 or f64 on the GPU.
double sum_of_squares(const std::vector<Tensor>& tensors);

// ---- matmul precision ----
// TF32 tensor cores for f32 matmuls: about 8x faster on Ampere and later, with 10-bit mantissas
// in the products. Off by default, so GPU results match the CPU's to f32 rounding.
void set_allow_tf32(bool allow);
bool allow_tf32();

// ---- cuRAND fills: a fast path for initializing large weights ----
// Ember's default rand/randn run its own Philox (tensor/random.h) on both devices, so a seed
// gives the same weights and dropout masks on the CPU and the GPU. These use cuRAND's Philox
// generator instead: faster for very large tensors, but the numbers differ from the CPU's. `out`
// must be a contiguous f32 or f64 CUDA tensor.
void curand_normal_fill(const Tensor& out, uint64_t seed, double mean = 0, double stddev = 1);
void curand_uniform_fill(const Tensor& out, uint64_t seed);  // in (0, 1]

}  // namespace cuda
}  // namespace ember
