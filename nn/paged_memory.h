// Paged tensors: optimizer state that need not stay resident (bitsandbytes' paged optimizers,
// Dettmers et al., "QLoRA", 2023, section 3). Zero-filled, contiguous, usable by every op.
//
//   CPU   the bytes are a MAP_SHARED mapping of an unlinked temporary file (in $TMPDIR, else
//         /tmp). They are file-backed pages, not anonymous memory: under memory pressure the kernel
//         writes them back to the file and drops them like page cache, without swap, and faults
//         them in again when the update touches them. The file has no name, so it disappears with
//         the mapping.
//   CUDA  cudaMallocManaged memory advised to live on the host (cudaMemAdviseSetPreferredLocation
//         = the CPU), so it leaves the card whenever the card needs room; prefetch_to_device
//         moves it to the GPU (cudaMemPrefetchAsync on the legacy default stream, which orders it
//         before Ember's stream) right before it is used. A request larger than the card's free
//         memory (cudaMemGetInfo) is refused with an error instead of oversubscribing.
//
// Paged storage is not counted in cpu_memory_stats() (it is not the allocator's).
#pragma once

#include "tensor/tensor.h"

namespace ember {
namespace nn {

// A zero tensor of `shape` and `dtype` on `device` in paged memory (above).
Tensor paged_zeros(const Shape& shape, DType dtype, Device device);
// CUDA: starts moving t's pages to the GPU before the next kernel on it; CPU: nothing.
void prefetch_to_device(const Tensor& t);

}  // namespace nn
}  // namespace ember
