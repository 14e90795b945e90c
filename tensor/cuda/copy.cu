// CUDA copy and fill: the kernels behind contiguous(), clone(), to(dtype), copy_(), fill_() and
// cat. Any strides on both sides (a broadcast source has stride 0); dtypes convert like a C++
// cast. Two contiguous tensors of one dtype are copied with cudaMemcpyAsync.
#include "tensor/cuda/common.cuh"
#include "tensor/cuda/kernels.h"

namespace ember {
namespace cuda {
namespace {

template <typename S, typename D>
__global__ void copy_kernel(const S* src, D* dst, Layout<2> layout, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[2];
        layout.offsets(i, off);  // 0: dst, 1: src
        dst[off[0]] = D(src[off[1]]);
    }
}

template <typename T>
__global__ void fill_kernel(T* dst, Layout<1> layout, T value, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[1];
        layout.offsets(i, off);
        dst[off[0]] = value;
    }
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
    const int64_t n = dst.numel();
    if (n == 0) return;
    if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
        CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(),
                                   size_t(n) * dtype_size(dst.dtype()), cudaMemcpyDeviceToDevice,
                                   stream()));
        return;
    }
    Layout<2> layout = make_layout<2>(dst.shape(), {dst.strides(), src.strides()});
    dispatch_all(src.dtype(), [&](auto src_tag) {
        dispatch_all(dst.dtype(), [&](auto dst_tag) {
            using S = typename decltype(src_tag)::type;
            using D = typename decltype(dst_tag)::type;
            copy_kernel<S, D><<<grid_for(n), THREADS, 0, stream()>>>(
                static_cast<const S*>(src.raw_data()), static_cast<D*>(dst.raw_data()), layout, n);
            CUDA_LAUNCHED();
        });
    });
}

void fill(const Tensor& dst, double value) {
    const int64_t n = dst.numel();
    if (n == 0) return;
    Layout<1> layout = make_layout<1>(dst.shape(), {dst.strides()});
    dispatch_all(dst.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        fill_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(dst.data<T>(), layout, T(value), n);
        CUDA_LAUNCHED();
    });
}

}  // namespace cuda
}  // namespace ember
