// CUDA elementwise kernels: unary ops and their derivatives, binary ops, where, and the in-place
// axpy / scale of the optimizers. The formulas are tensor/elementwise_math.h's, shared with the
// CPU. Inputs arrive expanded to the output's shape (stride 0 where broadcast).
//
// The op is a kernel argument, not a template parameter: the switch inside is uniform across the
// grid (every thread takes the same branch), costs next to nothing in a memory-bound kernel, and
// keeps the instantiations to one per dtype, which keeps nvcc's compile time down.
#include "tensor/cuda/common.cuh"
#include "tensor/cuda/kernels.h"

namespace ember {
namespace cuda {
namespace {

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* out, Layout<2> layout, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[2];
        layout.offsets(i, off);  // 0: out, 1: x
        out[off[0]] = unary_forward(op, x[off[1]]);
    }
}

template <typename T>
__global__ void unary_backward_kernel(UnaryOp op, const T* x, const T* grad, T* out,
                                      Layout<3> layout, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[3];
        layout.offsets(i, off);  // 0: out, 1: grad, 2: x
        out[off[0]] = grad[off[1]] * unary_derivative(op, x[off[2]]);
    }
}

template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T* out, Layout<3> layout,
                              int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[3];
        layout.offsets(i, off);  // 0: out, 1: a, 2: b
        out[off[0]] = binary_forward(op, a[off[1]], b[off[2]]);
    }
}

template <typename C, typename T>
__global__ void where_kernel(const C* cond, const T* a, const T* b, T* out, Layout<4> layout,
                             int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[4];
        layout.offsets(i, off);  // 0: out, 1: cond, 2: a, 3: b
        out[off[0]] = cond[off[1]] != C(0) ? a[off[2]] : b[off[3]];
    }
}

template <typename T>
__global__ void axpy_kernel(T* x, const T* y, T alpha, Layout<2> layout, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[2];
        layout.offsets(i, off);  // 0: x, 1: y
        x[off[0]] = x[off[0]] + alpha * y[off[1]];
    }
}

template <typename T>
__global__ void scale_kernel(T* x, T s, Layout<1> layout, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[1];
        layout.offsets(i, off);
        x[off[0]] = x[off[0]] * s;
    }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    Layout<2> layout = make_layout<2>(out.shape(), {out.strides(), x.strides()});
    dispatch_float(x.dtype(), unary_name(op), [&](auto tag) {
        using T = typename decltype(tag)::type;
        unary_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(op, x.data<T>(), out.data<T>(),
                                                               layout, n);
        CUDA_LAUNCHED();
    });
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& grad, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    Layout<3> layout =
        make_layout<3>(out.shape(), {out.strides(), grad.strides(), x.strides()});
    dispatch_float(x.dtype(), unary_name(op), [&](auto tag) {
        using T = typename decltype(tag)::type;
        unary_backward_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(
            op, x.data<T>(), grad.data<T>(), out.data<T>(), layout, n);
        CUDA_LAUNCHED();
    });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    Layout<3> layout = make_layout<3>(out.shape(), {out.strides(), a.strides(), b.strides()});
    dispatch_all(a.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        binary_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(op, a.data<T>(), b.data<T>(),
                                                                out.data<T>(), layout, n);
        CUDA_LAUNCHED();
    });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    Layout<4> layout = make_layout<4>(
        out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()});
    dispatch_all(cond.dtype(), [&](auto cond_tag) {
        dispatch_all(a.dtype(), [&](auto tag) {
            using C = typename decltype(cond_tag)::type;
            using T = typename decltype(tag)::type;
            where_kernel<C, T><<<grid_for(n), THREADS, 0, stream()>>>(
                cond.data<C>(), a.data<T>(), b.data<T>(), out.data<T>(), layout, n);
            CUDA_LAUNCHED();
        });
    });
}

void axpy(const Tensor& x, const Tensor& y, double alpha) {
    const int64_t n = x.numel();
    if (n == 0) return;
    Layout<2> layout = make_layout<2>(x.shape(), {x.strides(), y.strides()});
    dispatch_all(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        axpy_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(x.data<T>(), y.data<T>(), T(alpha),
                                                              layout, n);
        CUDA_LAUNCHED();
    });
}

void scale(const Tensor& x, double s) {
    const int64_t n = x.numel();
    if (n == 0) return;
    Layout<1> layout = make_layout<1>(x.shape(), {x.strides()});
    dispatch_all(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        scale_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(x.data<T>(), T(s), layout, n);
        CUDA_LAUNCHED();
    });
}

}  // namespace cuda
}  // namespace ember
