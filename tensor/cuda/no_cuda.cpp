// Linked into a CPU-only build in place of tensor/cuda/*.cu: every entry point says so, except the
// harmless ones (statistics are zeros, synchronize and release do nothing, the TF32 switch is
// remembered for a later CUDA build's sake).
#include "tensor/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/runtime.h"
#include "tensor/device.h"

namespace ember {

bool cuda_is_available() { return false; }
bool built_with_cuda() { return false; }

namespace cuda {

[[noreturn]] static void no_cuda(const char* what) {
    throw Error(make_message(what, ": this build of Ember has no CUDA (built without nvcc); "
                                   "rebuild with `make CUDA=1` where the CUDA toolkit is "
                                   "installed, or keep the tensors on the CPU"));
}

void* allocate(size_t) { no_cuda("cuda::allocate"); }
void release(void*, size_t) {}
void copy_to_device(void*, const void*, size_t) { no_cuda("cuda::copy_to_device"); }
void copy_to_host(void*, const void*, size_t) { no_cuda("cuda::copy_to_host"); }
void copy_on_device(void*, const void*, size_t) { no_cuda("cuda::copy_on_device"); }
void synchronize() {}

AllocatorStats allocator_stats() { return {}; }
std::string allocator_stats_string(const AllocatorStats&) {
    return "no CUDA allocator (built without CUDA)";
}
void empty_cache() {}
void reset_peak() {}
void set_exact_allocations(bool) {}
bool exact_allocations() { return false; }

static bool tf32_allowed = false;
void set_allow_tf32(bool allow) { tf32_allowed = allow; }
bool allow_tf32() { return tf32_allowed; }

double sum_of_squares(const std::vector<Tensor>&) { no_cuda("cuda::sum_of_squares"); }

void curand_normal_fill(const Tensor&, uint64_t, double, double) {
    no_cuda("cuda::curand_normal_fill");
}
void curand_uniform_fill(const Tensor&, uint64_t) { no_cuda("cuda::curand_uniform_fill"); }

}  // namespace cuda
}  // namespace ember
