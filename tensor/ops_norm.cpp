// Layer norm and RMS norm front-ends, fused, over the last dim.
//
// x (..., C) is viewed as contiguous (rows, C); the statistics come back as (...) tensors
// (x's shape without the last dim), kept by autograd for the backward pass. weight and bias are
// (C) or undefined (no scale, no shift).
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

// x's shape without the last dim: the shape of mean and rstd.
Shape stats_shape(const Tensor& x) {
    Shape s = x.shape();
    s.erase(s.rank - 1);
    return s;
}

// x (..., C) as a contiguous (rows, C) tensor.
Tensor as_rows(const Tensor& x) {
    const int64_t C = x.size(-1);
    return reshape(contiguous(x), {stats_shape(x).numel(), C});
}

void check_input(const char* op, const Tensor& x) {
    check_defined(op, x);
    dispatch_float(x.dtype(), op, [](auto) {});
    EMBER_CHECK(x.dim() >= 1, op, ": needs at least 1 dim (the normalized one), got a 0-dim "
                "tensor");
}

// weight / bias: undefined, or (C) with x's dtype and device.
void check_param(const char* op, const Tensor& p, const char* what, const Tensor& x) {
    if (!p.defined()) return;
    check_same_device(op, x, p);
    check_same_dtype(op, x, p);
    EMBER_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " has shape ", p.shape(),
                " but the normalized (last) dim of x ", x.shape(), " has size ", x.size(-1),
                "; it must be (", x.size(-1), ",)");
}

void check_grad(const char* op, const Tensor& grad, const Tensor& x) {
    check_defined(op, grad, "gradient");
    check_same_device(op, x, grad);
    check_same_dtype(op, x, grad);
    EMBER_CHECK(grad.shape() == x.shape(), op, ": the gradient's shape ", grad.shape(),
                " differs from the input's shape ", x.shape());
}

void check_stat(const char* op, const Tensor& stat, const char* what, const Tensor& x) {
    EMBER_CHECK(stat.defined(), op, ": the saved ", what, " is undefined; pass the NormOutput "
                "that the forward pass returned");
    EMBER_CHECK(stat.shape() == stats_shape(x), op, ": the saved ", what, " has shape ",
                stat.shape(), " but x ", x.shape(), " needs ", stats_shape(x));
}

Tensor contiguous_or_none(const Tensor& t) { return t.defined() ? contiguous(t) : Tensor(); }

}  // namespace

NormOutput layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                             double eps) {
    check_input("layernorm", x);
    check_param("layernorm", weight, "weight", x);
    check_param("layernorm", bias, "bias", x);
    Tensor x2 = as_rows(x), w = contiguous_or_none(weight), b = contiguous_or_none(bias);
    const int64_t rows = x2.size(0);
    Tensor y = make_tensor(x2.shape(), x.dtype(), x.device());
    Tensor mean = make_tensor({rows}, x.dtype(), x.device());
    Tensor rstd = make_tensor({rows}, x.dtype(), x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::layernorm_forward(x2, w, b, eps, y, mean, rstd); break;
        case DeviceType::CUDA:
            ON_CUDA("layernorm", cuda::layernorm_forward(x2, w, b, eps, y, mean, rstd));
            break;
    }
    return {reshape(y, x.shape()), reshape(mean, stats_shape(x)), reshape(rstd, stats_shape(x))};
}

NormGrads layernorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                             const NormOutput& saved, bool need_dx, bool need_dweight,
                             bool need_dbias) {
    const char* op = "layernorm_backward";
    check_input(op, x);
    check_grad(op, grad, x);
    check_param(op, weight, "weight", x);
    check_stat(op, saved.mean, "mean", x);
    check_stat(op, saved.rstd, "rstd", x);
    Tensor x2 = as_rows(x), g2 = as_rows(grad), w = contiguous_or_none(weight);
    Tensor mean = reshape(contiguous(saved.mean), {x2.size(0)});
    Tensor rstd = reshape(contiguous(saved.rstd), {x2.size(0)});
    const int64_t C = x2.size(1);
    Tensor dx = need_dx ? make_tensor(x2.shape(), x.dtype(), x.device()) : Tensor();
    Tensor dw = need_dweight && weight.defined() ? make_tensor({C}, x.dtype(), x.device())
                                                 : Tensor();
    Tensor db = need_dbias ? make_tensor({C}, x.dtype(), x.device()) : Tensor();
    switch (x.device().type) {
        case DeviceType::CPU: cpu::layernorm_backward(g2, x2, w, mean, rstd, dx, dw, db); break;
        case DeviceType::CUDA:
            ON_CUDA(op, cuda::layernorm_backward(g2, x2, w, mean, rstd, dx, dw, db));
            break;
    }
    return {dx.defined() ? reshape(dx, x.shape()) : Tensor(), dw, db};
}

NormOutput rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps) {
    check_input("rmsnorm", x);
    check_param("rmsnorm", weight, "weight", x);
    Tensor x2 = as_rows(x), w = contiguous_or_none(weight);
    Tensor y = make_tensor(x2.shape(), x.dtype(), x.device());
    Tensor rstd = make_tensor({x2.size(0)}, x.dtype(), x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::rmsnorm_forward(x2, w, eps, y, rstd); break;
        case DeviceType::CUDA:
            ON_CUDA("rmsnorm", cuda::rmsnorm_forward(x2, w, eps, y, rstd));
            break;
    }
    return {reshape(y, x.shape()), Tensor(), reshape(rstd, stats_shape(x))};
}

NormGrads rmsnorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                           const NormOutput& saved, bool need_dx, bool need_dweight) {
    const char* op = "rmsnorm_backward";
    check_input(op, x);
    check_grad(op, grad, x);
    check_param(op, weight, "weight", x);
    check_stat(op, saved.rstd, "rstd", x);
    Tensor x2 = as_rows(x), g2 = as_rows(grad), w = contiguous_or_none(weight);
    Tensor rstd = reshape(contiguous(saved.rstd), {x2.size(0)});
    Tensor dx = need_dx ? make_tensor(x2.shape(), x.dtype(), x.device()) : Tensor();
    Tensor dw = need_dweight && weight.defined() ? make_tensor({x2.size(1)}, x.dtype(), x.device())
                                                 : Tensor();
    switch (x.device().type) {
        case DeviceType::CPU: cpu::rmsnorm_backward(g2, x2, w, rstd, dx, dw); break;
        case DeviceType::CUDA: ON_CUDA(op, cuda::rmsnorm_backward(g2, x2, w, rstd, dx, dw)); break;
    }
    return {dx.defined() ? reshape(dx, x.shape()) : Tensor(), dw, Tensor()};
}

}  // namespace raw
}  // namespace ember
