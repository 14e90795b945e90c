// Paged tensors: a file mapping on the CPU, host-preferred managed memory on CUDA. See the header.
#include "nn/paged_memory.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef EMBER_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace ember {
namespace nn {

static void unmap(void* data, size_t bytes) { ::munmap(data, bytes); }

// An unlinked temporary file of `bytes` (zero-filled by ftruncate), mapped shared.
static void* map_temp_file(size_t bytes) {
    const char* dir = std::getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/tmp") + "/ember-paged-XXXXXX";
    int fd = ::mkstemp(&path[0]);
    EMBER_CHECK(fd >= 0, "paged_zeros: cannot make a temporary file ", path, " (", std::strerror(errno),
                "); set TMPDIR to a writable folder");
    ::unlink(path.c_str());  // nameless: gone once unmapped and closed
    if (::ftruncate(fd, off_t(bytes)) != 0) {
        int e = errno;
        ::close(fd);
        throw Error(make_message("paged_zeros: cannot size the temporary file to ", bytes, " bytes (",
                                 std::strerror(e), "); free disk space in TMPDIR"));
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    ::close(fd);  // the mapping keeps the file
    EMBER_CHECK(p != MAP_FAILED, "paged_zeros: mmap of ", bytes, " bytes failed (", std::strerror(e), ")");
    return p;
}

#ifdef EMBER_WITH_CUDA
// CUDA 12.2+ names places by cudaMemLocation (the int device ids of older releases are gone in 13).
static cudaMemLocation host_location() {
    cudaMemLocation l{};
    l.type = cudaMemLocationTypeHost;
    l.id = 0;
    return l;
}
static cudaMemLocation gpu_location() {
    cudaMemLocation l{};
    l.type = cudaMemLocationTypeDevice;
    l.id = 0;  // Ember drives cuda:0
    return l;
}

static void free_managed(void* data, size_t /*bytes*/) { cudaFree(data); }

static void* managed_on_host(size_t bytes) {
    size_t free_bytes = 0, total = 0;
    cudaError_t st = cudaMemGetInfo(&free_bytes, &total);
    EMBER_CHECK(st == cudaSuccess, "paged_zeros: cudaMemGetInfo failed (", cudaGetErrorString(st), ")");
    EMBER_CHECK(bytes <= free_bytes, "paged_zeros: ", bytes, " bytes of managed memory asked for, but the GPU has ",
                free_bytes, " free of ", total, "; use the plain AdamW or a smaller model");
    void* p = nullptr;
    st = cudaMallocManaged(&p, bytes, cudaMemAttachGlobal);
    EMBER_CHECK(st == cudaSuccess, "paged_zeros: cudaMallocManaged of ", bytes, " bytes failed (",
                cudaGetErrorString(st), ")");
    cudaMemAdvise(p, bytes, cudaMemAdviseSetPreferredLocation, host_location());
    cudaMemAdvise(p, bytes, cudaMemAdviseSetAccessedBy, gpu_location());
    std::memset(p, 0, bytes);  // first touched on the host, where it prefers to live
    return p;
}
#endif

Tensor paged_zeros(const Shape& shape, DType dtype, Device device) {
    for (int64_t d : shape) EMBER_CHECK(d >= 0, "paged_zeros: negative size in shape ", shape);
    const size_t bytes = std::max<size_t>(size_t(shape.numel()) * dtype_size(dtype), 1);
    auto impl = std::make_shared<TensorImpl>();
    if (device.is_cuda()) {
#ifdef EMBER_WITH_CUDA
        impl->storage = std::make_shared<Storage>(managed_on_host(bytes), bytes, device, free_managed);
#else
        throw Error("paged_zeros: this build has no CUDA; rebuild with CUDA=1 or keep the state on the CPU");
#endif
    } else {
        impl->storage = std::make_shared<Storage>(map_temp_file(bytes), bytes, device, unmap);
    }
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = dtype;
    return Tensor(impl);
}

void prefetch_to_device(const Tensor& t) {
    if (!t.device().is_cuda()) return;
#ifdef EMBER_WITH_CUDA
    // The legacy default stream (0) orders this before later work on Ember's (blocking) stream.
    cudaMemPrefetchAsync(t.storage()->data(), t.storage()->bytes(), gpu_location(), 0, 0);
#endif
}

}  // namespace nn
}  // namespace ember
