// The CUDA runtime seam: the device query, one lazily made context (a stream and a cuBLAS handle
// on it), host <-> device copies, and the error plumbing every kernel file uses.
//
// Nothing runs at static-initialization time except what cuda_is_available() needs, and that is
// one cudaGetDeviceCount, whose failure ("no CUDA-capable device", "driver version is
// insufficient", ...) only means "no GPU": the error is cleared so it does not stick to the next
// call. The context is never destroyed: tensors freed during program exit still find it, and the
// driver reclaims everything when the process ends.
#include <cstring>
#include <mutex>
#include <string>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/runtime.h"
#include "tensor/device.h"

namespace ember {

namespace {

struct DeviceQuery {
    bool available = false;
    std::string why;  // CUDA's words when not available
};

const DeviceQuery& device_query() {
    static const DeviceQuery query = [] {
        DeviceQuery q;
        int count = 0;
        cudaError_t err = cudaGetDeviceCount(&count);
        if (err != cudaSuccess) {
            q.why = cudaGetErrorString(err);
            cudaGetLastError();  // clear it: a failed query must not poison later calls
        } else if (count == 0) {
            q.why = "cudaGetDeviceCount found 0 devices";
        } else {
            q.available = true;
        }
        return q;
    }();
    return query;
}

}  // namespace

bool cuda_is_available() {
    try {
        return device_query().available;
    } catch (...) {
        return false;
    }
}

bool built_with_cuda() { return true; }

namespace cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    throw Error(make_message("CUDA error at ", file, ":", line, " in ", call, ": ",
                             cudaGetErrorString(err), " (", cudaGetErrorName(err), ")"));
}

namespace {

struct Context {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    IndexError* index_error = nullptr;  // one slot in device memory
};

Context* make_context() {
    if (!device_query().available)
        throw Error(make_message("CUDA: no CUDA device is available (", device_query().why,
                                 "); this build has CUDA but the machine has no usable GPU or "
                                 "driver. Keep the tensors on the CPU (Device::cpu())."));
    auto* ctx = new Context;  // never deleted: see the file comment
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaStreamCreate(&ctx->stream));
    cublasStatus_t st = cublasCreate(&ctx->cublas);
    EMBER_CHECK(st == CUBLAS_STATUS_SUCCESS, "CUDA: cublasCreate failed with status ", int(st),
                " (", cublasGetStatusString(st), ")");
    st = cublasSetStream(ctx->cublas, ctx->stream);
    EMBER_CHECK(st == CUBLAS_STATUS_SUCCESS, "CUDA: cublasSetStream failed: ",
                cublasGetStatusString(st));
    CUDA_CHECK(cudaMalloc(&ctx->index_error, sizeof(IndexError)));
    CUDA_CHECK(cudaMemset(ctx->index_error, 0, sizeof(IndexError)));
    return ctx;
}

Context& context() {
    static std::mutex mutex;
    static Context* ctx = nullptr;
    std::lock_guard<std::mutex> lock(mutex);
    if (!ctx) ctx = make_context();  // a failure throws and leaves ctx null: the next call retries
    return *ctx;
}

}  // namespace

void ensure_context() { context(); }
cudaStream_t stream() { return context().stream; }
cublasHandle_t cublas_handle() { return context().cublas; }

IndexError* index_error_slot() { return context().index_error; }

void begin_index_check() {
    CUDA_CHECK(cudaMemsetAsync(index_error_slot(), 0, sizeof(IndexError), stream()));
}

bool end_index_check(IndexError* err) {
    IndexError host{};
    CUDA_CHECK(cudaMemcpyAsync(&host, index_error_slot(), sizeof host, cudaMemcpyDeviceToHost,
                               stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    *err = host;
    return host.flag != 0;
}

// ---- runtime.h ----

void* allocate(size_t bytes) {
    ensure_context();  // throws "no CUDA device" on a machine without a GPU
    return allocator_malloc(bytes);
}

void release(void* ptr, size_t bytes) {
    if (ptr) allocator_free(ptr, bytes);
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    // From pageable memory the call returns once src has been staged, so src may be freed after.
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
    CUDA_CHECK(cudaStreamSynchronize(stream()));  // the caller reads dst next
}

void copy_on_device(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}

void synchronize() {
    if (!cuda_is_available()) return;
    CUDA_CHECK(cudaStreamSynchronize(stream()));
}

// ---- cuda.h: the TF32 switch (read by matmul.cu) ----

namespace {
bool tf32_allowed = false;
}
void set_allow_tf32(bool allow) { tf32_allowed = allow; }
bool allow_tf32() { return tf32_allowed; }

}  // namespace cuda
}  // namespace ember
