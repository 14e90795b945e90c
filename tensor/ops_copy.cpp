// Copies: contiguous, clone, to(dtype), to(device), and the in-place copy_ and fill_.
//
// Copies within a device go through the copy kernel, which handles any strides on both sides and
// converts dtypes. Copies between devices move a contiguous block of bytes through the CUDA
// runtime (tensor/cuda/runtime.h), which in a CPU-only build says that there is no CUDA.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/runtime.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {

// dst = src on their common device; src already has dst's shape (stride 0 where broadcast).
static void copy_kernel(const Tensor& src, const Tensor& dst) {
    switch (dst.device().type) {
        case DeviceType::CPU: cpu::copy(src, dst); break;
        case DeviceType::CUDA: ON_CUDA("copy", cuda::copy(src, dst)); break;
    }
}

Tensor contiguous(const Tensor& x) {
    check_defined("contiguous", x);
    return x.is_contiguous() ? alias(x) : clone(x);
}

Tensor clone(const Tensor& x) {
    check_defined("clone", x);
    Tensor out = empty_like(x);
    copy_kernel(x, out);
    return out;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
    check_defined("to_dtype", x);
    if (x.dtype() == dtype) return alias(x);
    Tensor out = make_tensor(x.shape(), dtype, x.device());
    copy_kernel(x, out);
    return out;
}

Tensor to_device(const Tensor& x, Device device) {
    check_defined("to_device", x);
    if (x.device() == device) return alias(x);
    Tensor src = contiguous(x);
    Tensor out = make_tensor(x.shape(), x.dtype(), device);
    const size_t bytes = size_t(x.numel()) * dtype_size(x.dtype());
    if (bytes == 0) return out;
    if (src.device().is_cpu())
        cuda::copy_to_device(out.raw_data(), src.raw_data(), bytes);
    else if (device.is_cpu())
        cuda::copy_to_host(out.raw_data(), src.raw_data(), bytes);
    else
        cuda::copy_on_device(out.raw_data(), src.raw_data(), bytes);
    return out;
}

void copy_(const Tensor& dst, const Tensor& src) {
    check_defined("copy_", dst, "destination");
    check_defined("copy_", src, "source");
    check_same_device("copy_", dst, src);
    EMBER_CHECK(broadcast_shapes(dst.shape(), src.shape(), "copy_") == dst.shape(),
                "copy_: a source of shape ", src.shape(), " does not fit a destination of shape ",
                dst.shape(), "; the source must broadcast to the destination's shape");
    // A source that shares memory with the destination is read from a copy, so no element is
    // overwritten before it is read.
    Tensor from = src.same_storage(dst) ? clone(src) : src;
    copy_kernel(expand(from, dst.shape()), dst);
    dst.storage()->bump_version();
}

void fill_(const Tensor& dst, double value) {
    check_defined("fill_", dst);
    switch (dst.device().type) {
        case DeviceType::CPU: cpu::fill(dst, value); break;
        case DeviceType::CUDA: ON_CUDA("fill_", cuda::fill(dst, value)); break;
    }
    dst.storage()->bump_version();
}

}  // namespace raw
}  // namespace ember
