// The seam between Ember and the CUDA runtime: memory, copies and the device query. Built from
// tensor/cuda/runtime.cu with nvcc; a CPU-only build links tensor/cuda/no_cuda.cpp instead, whose
// functions throw "built without CUDA" (and whose cuda_is_available() says false).
#pragma once

#include <cstddef>

namespace ember {
namespace cuda {

void* allocate(size_t bytes);             // from the caching allocator
void release(void* ptr, size_t bytes);    // back to the caching allocator
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_on_device(void* dst, const void* src, size_t bytes);
void synchronize();

}  // namespace cuda
}  // namespace ember
