// Attention's softmax with its scale and causal mask folded in. On the GPU one row kernel does it
// all (tensor/cuda/softmax.cu); on the CPU it is the composition it replaces there: scale, fill
// the masked scores with -1e30 (as nn/attention.cpp's masked_fill, so a fully masked row is
// uniform), softmax; and for the gradient, softmax's backward, scaled, zero where masked.
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

constexpr double MASKED = -1e30;

// (Tq, Tk) with 1 where query i may not see key j: j > i + (Tk - Tq).
Tensor causal_blocked(int64_t Tq, int64_t Tk, DType dtype) {
    Tensor query = reshape(arange(double(Tk - Tq), double(Tk), 1, dtype), {Tq, 1});
    Tensor key = reshape(arange(0, double(Tk), 1, dtype), {1, Tk});
    return binary(BinaryOp::Lt, query, key);
}

void check_scores(const char* op, const Tensor& x, bool causal) {
    check_defined(op, x);
    dispatch_float(x.dtype(), op, [](auto) {});
    EMBER_CHECK(x.dim() >= (causal ? 2 : 1), op, ": scores must be (..., Tq, Tk)", causal ?
                " for a causal mask" : "", ", got shape ", x.shape());
}

// The kernels' (rows, Tk) view of scores (..., Tk); unused in a build without CUDA.
[[maybe_unused]] Shape as_rows(const Tensor& x) {
    const int64_t n = x.size(-1);
    return {n == 0 ? 0 : x.numel() / n, n};
}

// The kernels' tq: queries per (Tq, Tk) block of rows, 0 when nothing is masked.
[[maybe_unused]] int64_t queries(const Tensor& x, bool causal) { return causal ? x.size(-2) : 0; }

}  // namespace

Tensor scaled_softmax(const Tensor& x, double scale, bool causal) {
    const char* op = "scaled_softmax";
    check_scores(op, x, causal);
    if (x.device().is_cuda()) {
        Tensor xc = contiguous(x);
        Tensor y = make_tensor(x.shape(), x.dtype(), x.device());
        ON_CUDA(op, cuda::scaled_softmax(reshape(xc, as_rows(x)), reshape(y, as_rows(x)), scale,
                                         queries(x, causal)));
        return y;
    }
    Tensor z = mul_scalar(x, scale);
    if (causal) {
        Tensor blocked = causal_blocked(x.size(-2), x.size(-1), x.dtype());
        z = where(blocked, full({}, MASKED, x.dtype()), z);
    }
    return softmax(z, -1);
}

Tensor scaled_softmax_backward(const Tensor& y, const Tensor& grad, double scale, bool causal) {
    const char* op = "scaled_softmax_backward";
    check_scores(op, y, causal);
    check_defined(op, grad, "gradient");
    check_same_device(op, y, grad);
    check_same_dtype(op, y, grad);
    EMBER_CHECK(y.shape() == grad.shape(), op, ": the gradient's shape ", grad.shape(),
                " differs from the output's shape ", y.shape(), "; they must be equal");
    if (y.device().is_cuda()) {
        Tensor dx = make_tensor(y.shape(), y.dtype(), y.device());
        ON_CUDA(op, cuda::scaled_softmax_backward(reshape(contiguous(y), as_rows(y)),
                                                  reshape(contiguous(grad), as_rows(y)),
                                                  reshape(dx, as_rows(y)), scale,
                                                  queries(y, causal)));
        return dx;
    }
    Tensor dx = mul_scalar(softmax_backward(y, grad, -1), scale);
    if (causal) {
        Tensor blocked = causal_blocked(y.size(-2), y.size(-1), y.dtype());
        dx = where(blocked, zeros({}, y.dtype()), dx);
    }
    return dx;
}

}  // namespace raw
}  // namespace ember
