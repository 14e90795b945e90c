// Softmax and log-softmax over any dim, and their backward passes.
//
// The row kernels work on the last dim of a contiguous (rows, n) tensor, so the front-end moves
// `dim` last (a transpose, then contiguous), runs the kernel and moves it back. When dim is
// already last and the input contiguous, nothing is copied.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

// x with dim `d` moved last, as a contiguous (rows, n) tensor.
Tensor rows_along(const Tensor& x, int d) {
    int64_t rows = 1;
    for (int i = 0; i < x.dim(); ++i)
        if (i != d) rows *= x.size(i);
    return reshape(contiguous(transpose(x, d, -1)), {rows, x.size(d)});
}

// out2 (rows, n) back to x's layout: undo the reshape and the transpose.
Tensor restore(const Tensor& out2, const Tensor& x, int d) {
    Tensor moved = transpose(x, d, -1);
    return contiguous(transpose(reshape(out2, moved.shape()), d, -1));
}

Tensor softmax_forward(const Tensor& x, int dim, bool log) {
    const char* name = log ? "log_softmax" : "softmax";
    check_defined(name, x);
    dispatch_float(x.dtype(), name, [](auto) {});
    if (x.dim() == 0) return reshape(softmax_forward(reshape(x, {1}), dim, log), {});
    const int d = wrap_dim(dim, x.dim(), name);
    Tensor x2 = rows_along(x, d);
    Tensor out2 = make_tensor(x2.shape(), x.dtype(), x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::softmax(x2, out2, log); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::softmax(x2, out2, log)); break;
    }
    return restore(out2, x, d);
}

Tensor softmax_grad(const Tensor& y, const Tensor& grad, int dim, bool log) {
    const char* name = log ? "log_softmax_backward" : "softmax_backward";
    check_defined(name, y, "output");
    check_defined(name, grad, "gradient");
    check_same_device(name, y, grad);
    check_same_dtype(name, y, grad);
    dispatch_float(y.dtype(), name, [](auto) {});
    EMBER_CHECK(y.shape() == grad.shape(), name, ": the gradient's shape ", grad.shape(),
                " differs from the output's shape ", y.shape(), "; they must be equal");
    if (y.dim() == 0)
        return reshape(softmax_grad(reshape(y, {1}), reshape(grad, {1}), dim, log), {});
    const int d = wrap_dim(dim, y.dim(), name);
    Tensor y2 = rows_along(y, d), g2 = rows_along(grad, d);
    Tensor out2 = make_tensor(y2.shape(), y.dtype(), y.device());
    switch (y.device().type) {
        case DeviceType::CPU: cpu::softmax_backward(y2, g2, out2, log); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::softmax_backward(y2, g2, out2, log)); break;
    }
    return restore(out2, y, d);
}

}  // namespace

Tensor softmax(const Tensor& x, int dim) { return softmax_forward(x, dim, false); }
Tensor log_softmax(const Tensor& x, int dim) { return softmax_forward(x, dim, true); }

Tensor softmax_backward(const Tensor& y, const Tensor& grad, int dim) {
    return softmax_grad(y, grad, dim, false);
}

Tensor log_softmax_backward(const Tensor& y, const Tensor& grad, int dim) {
    return softmax_grad(y, grad, dim, true);
}

}  // namespace raw
}  // namespace ember
