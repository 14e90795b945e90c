// Elementwise front-ends: unary ops and their backward, broadcasting binary ops and comparisons,
// the scalar forms, where / masked_fill, and the in-place add_ / mul_ used by optimizers.
//
// Broadcasting never copies: each input is expanded to the output's shape as a stride-0 view and
// the kernel walks the strides. Scalar forms wrap the scalar in a 0-dim tensor of x's dtype.
#include <string>

#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {

const char* unary_name(UnaryOp op) {
    switch (op) {
        case UnaryOp::Neg: return "neg";
        case UnaryOp::Exp: return "exp";
        case UnaryOp::Log: return "log";
        case UnaryOp::Sqrt: return "sqrt";
        case UnaryOp::Rsqrt: return "rsqrt";
        case UnaryOp::Abs: return "abs";
        case UnaryOp::Sign: return "sign";
        case UnaryOp::Tanh: return "tanh";
        case UnaryOp::Sigmoid: return "sigmoid";
        case UnaryOp::Relu: return "relu";
        case UnaryOp::GeluTanh: return "gelu_tanh";
        case UnaryOp::GeluErf: return "gelu";
        case UnaryOp::Silu: return "silu";
    }
    return "unary";
}

const char* binary_name(BinaryOp op) {
    switch (op) {
        case BinaryOp::Add: return "add";
        case BinaryOp::Sub: return "sub";
        case BinaryOp::Mul: return "mul";
        case BinaryOp::Div: return "div";
        case BinaryOp::Pow: return "pow";
        case BinaryOp::Maximum: return "maximum";
        case BinaryOp::Minimum: return "minimum";
        case BinaryOp::Eq: return "eq";
        case BinaryOp::Ne: return "ne";
        case BinaryOp::Lt: return "lt";
        case BinaryOp::Le: return "le";
        case BinaryOp::Gt: return "gt";
        case BinaryOp::Ge: return "ge";
    }
    return "binary";
}

namespace raw {

Tensor unary(UnaryOp op, const Tensor& x) {
    const char* name = unary_name(op);
    check_defined(name, x);
    dispatch_float(x.dtype(), name, [](auto) {});
    Tensor out = empty_like(x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::unary(op, x, out); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::unary(op, x, out)); break;
    }
    return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& grad) {
    const std::string name = std::string(unary_name(op)) + "_backward";
    check_defined(name.c_str(), x);
    check_defined(name.c_str(), grad, "gradient");
    check_same_device(name.c_str(), x, grad);
    check_same_dtype(name.c_str(), x, grad);
    dispatch_float(x.dtype(), name.c_str(), [](auto) {});
    EMBER_CHECK(x.shape() == grad.shape(), name, ": the gradient's shape ", grad.shape(),
                " differs from the input's shape ", x.shape(), "; they must be equal");
    Tensor out = empty_like(x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::unary_backward(op, x, grad, out); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::unary_backward(op, x, grad, out)); break;
    }
    return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
    const char* name = binary_name(op);
    check_defined(name, a, "left");
    check_defined(name, b, "right");
    check_same_device(name, a, b);
    check_same_dtype(name, a, b);
    EMBER_CHECK(op != BinaryOp::Div || is_floating(a.dtype()), "div: integer division is not "
                "supported (got ", a.dtype(), "); convert the operands with .to(DType::F32)");
    Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
    Tensor out = make_tensor(shape, a.dtype(), a.device());
    Tensor ae = expand(a, shape), be = expand(b, shape);
    switch (a.device().type) {
        case DeviceType::CPU: cpu::binary(op, ae, be, out); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::binary(op, ae, be, out)); break;
    }
    return out;
}

// x op s, with s as a 0-dim tensor of x's dtype on x's device.
static Tensor with_scalar(BinaryOp op, const char* name, const Tensor& x, double s) {
    check_defined(name, x);
    return binary(op, x, scalar_tensor(s, x.dtype(), x.device()));
}

Tensor add_scalar(const Tensor& x, double s) {
    return with_scalar(BinaryOp::Add, "add_scalar", x, s);
}

Tensor mul_scalar(const Tensor& x, double s) {
    return with_scalar(BinaryOp::Mul, "mul_scalar", x, s);
}

Tensor pow_scalar(const Tensor& x, double p) {
    check_defined("pow_scalar", x);
    if (p == 2) return mul(x, x);  // the common square, without a pow() per element
    return with_scalar(BinaryOp::Pow, "pow_scalar", x, p);
}

Tensor clamp(const Tensor& x, double lo, double hi) {
    check_defined("clamp", x);
    Tensor low = with_scalar(BinaryOp::Maximum, "clamp", x, lo);
    return with_scalar(BinaryOp::Minimum, "clamp", low, hi);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
    check_defined("where", cond, "condition");
    check_defined("where", a, "first value");
    check_defined("where", b, "second value");
    check_same_device("where", cond, a);
    check_same_device("where", a, b);
    check_same_dtype("where", a, b);
    Shape shape = broadcast_shapes(cond.shape(), a.shape(), "where");
    shape = broadcast_shapes(shape, b.shape(), "where");
    Tensor out = make_tensor(shape, a.dtype(), a.device());
    Tensor ce = expand(cond, shape), ae = expand(a, shape), be = expand(b, shape);
    switch (a.device().type) {
        case DeviceType::CPU: cpu::where(ce, ae, be, out); break;
        case DeviceType::CUDA: ON_CUDA("where", cuda::where(ce, ae, be, out)); break;
    }
    return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
    check_defined("masked_fill", x);
    check_defined("masked_fill", mask, "mask");
    check_same_device("masked_fill", x, mask);
    broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
    return where(mask, scalar_tensor(value, x.dtype(), x.device()), x);
}

void add_(const Tensor& x, const Tensor& y, double alpha) {
    check_defined("add_", x);
    check_defined("add_", y, "added");
    check_same_device("add_", x, y);
    check_same_dtype("add_", x, y);
    EMBER_CHECK(broadcast_shapes(x.shape(), y.shape(), "add_") == x.shape(), "add_: cannot add a "
                "tensor of shape ", y.shape(), " into one of shape ", x.shape(), " in place; the "
                "added tensor must broadcast to the destination's shape");
    // y may view the same memory as x in another layout: read it from a copy then.
    bool same_view = x.same_storage(y) && x.offset() == y.offset() && x.strides() == y.strides();
    Tensor from = x.same_storage(y) && !same_view ? clone(y) : y;
    Tensor ye = expand(from, x.shape());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::axpy(x, ye, alpha); break;
        case DeviceType::CUDA: ON_CUDA("add_", cuda::axpy(x, ye, alpha)); break;
    }
    x.storage()->bump_version();
}

void mul_(const Tensor& x, double s) {
    check_defined("mul_", x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::scale(x, s); break;
        case DeviceType::CUDA: ON_CUDA("mul_", cuda::scale(x, s)); break;
    }
    x.storage()->bump_version();
}

}  // namespace raw
}  // namespace ember
