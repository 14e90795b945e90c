// Linked into a CPU-only build in place of tensor/cuda/*.cu: every entry point says so.
#include "tensor/check.h"
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

}  // namespace cuda
}  // namespace ember
