// The Tensor methods for views and copies, made differentiable. A view's backward puts the
// gradient back in the input's layout: reshape reshapes it back, permute applies the inverse
// order, expand sums over the broadcast dims, slice and select write it into zeros.
#include "autograd/functions.h"

namespace ember {

// A view whose backward is "reshape the gradient back to the input's shape".
static Tensor reshaping_view(const char* name, const Tensor& x, Tensor out) {
    if (needs_graph({x}))
        record(name, out, {x}, [sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{raw::reshape(g, sx)};
        });
    return out;
}

Tensor Tensor::reshape(const Shape& shape) const { return reshaping_view("reshape", *this, raw::reshape(*this, shape)); }
Tensor Tensor::view(const Shape& shape) const { return reshaping_view("view", *this, raw::view(*this, shape)); }
Tensor Tensor::squeeze(int d) const { return reshaping_view("squeeze", *this, raw::squeeze(*this, d)); }
Tensor Tensor::unsqueeze(int d) const { return reshaping_view("unsqueeze", *this, raw::unsqueeze(*this, d)); }
Tensor Tensor::flatten(int start_dim, int end_dim) const {
    return reshaping_view("flatten", *this, raw::flatten(*this, start_dim, end_dim));
}

Tensor Tensor::permute(const Shape& order) const {
    Tensor out = raw::permute(*this, order);
    if (needs_graph({*this})) {
        Shape inverse = order;
        for (int i = 0; i < order.rank; ++i) inverse[int(wrap_dim(int(order[i]), dim(), "permute"))] = i;
        record("permute", out, {*this}, [inverse](const Tensor& g, const Needs&) {
            return Grads{raw::permute(g, inverse)};
        });
    }
    return out;
}

Tensor Tensor::transpose(int d0, int d1) const {
    Tensor out = raw::transpose(*this, d0, d1);
    if (needs_graph({*this}))
        record("transpose", out, {*this}, [d0, d1](const Tensor& g, const Needs&) {
            return Grads{raw::transpose(g, d0, d1)};
        });
    return out;
}

Tensor Tensor::expand(const Shape& shape) const {
    Tensor out = raw::expand(*this, shape);
    if (needs_graph({*this}))
        record("expand", out, {*this}, [sx = this->shape()](const Tensor& g, const Needs&) {
            return Grads{raw::sum_to(g, sx)};
        });
    return out;
}

// slice / select: the gradient lands in the same window of a zero tensor of the input's shape.
Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
    Tensor out = raw::slice(*this, d, start, end, step);
    if (needs_graph({*this}))
        record("slice", out, {*this}, [sx = shape(), d, start, end, step](const Tensor& g, const Needs&) {
            Tensor dx = zeros(sx, g.dtype(), g.device());
            raw::copy_(raw::slice(dx, d, start, end, step), g);
            return Grads{dx};
        });
    return out;
}

Tensor Tensor::narrow(int d, int64_t start, int64_t length) const {
    EMBER_CHECK(length >= 0 && start >= 0 && start + length <= size(d), "narrow: [", start, ", ",
          start + length, ") is outside dim ", d, " of shape ", shape());
    return slice(d, start, start + length);
}

Tensor Tensor::select(int d, int64_t index) const {
    Tensor out = raw::select(*this, d, index);
    if (needs_graph({*this}))
        record("select", out, {*this}, [sx = shape(), d, index](const Tensor& g, const Needs&) {
            Tensor dx = zeros(sx, g.dtype(), g.device());
            raw::copy_(raw::select(dx, d, index), g);
            return Grads{dx};
        });
    return out;
}

Tensor Tensor::contiguous() const {
    if (is_contiguous()) return *this;
    Tensor out = raw::contiguous(*this);
    if (needs_graph({*this}))
        record("contiguous", out, {*this}, [](const Tensor& g, const Needs&) { return Grads{g}; });
    return out;
}

Tensor Tensor::clone() const {
    Tensor out = raw::clone(*this);
    if (needs_graph({*this}))
        record("clone", out, {*this}, [](const Tensor& g, const Needs&) { return Grads{g}; });
    return out;
}

Tensor Tensor::to(DType type) const {
    if (type == dtype()) return *this;
    Tensor out = raw::to_dtype(*this, type);
    if (needs_graph({*this}) && is_floating(type))
        record("to_dtype", out, {*this}, [from = dtype()](const Tensor& g, const Needs&) {
            return Grads{raw::to_dtype(g, from)};
        });
    return out;
}

Tensor Tensor::to(Device target) const {
    if (target == device()) return *this;
    Tensor out = raw::to_device(*this, target);
    if (needs_graph({*this}))
        record("to_device", out, {*this}, [from = device()](const Tensor& g, const Needs&) {
            return Grads{raw::to_device(g, from)};
        });
    return out;
}

}  // namespace ember
