// Elementwise ops: forward with the raw op, backward right below it. A broadcast input's gradient
// is summed back to the input's shape with raw::sum_to.
#include "autograd/functions.h"

namespace ember {

// ---- binary ----

Tensor add(const Tensor& a, const Tensor& b) {
    Tensor out = raw::add(a, b);
    if (needs_graph({a, b})) {
        record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const Needs& n) {
            return Grads{n[0] ? raw::sum_to(g, sa) : Tensor(), n[1] ? raw::sum_to(g, sb) : Tensor()};
        });
    }
    return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
    Tensor out = raw::sub(a, b);
    if (needs_graph({a, b})) {
        record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, const Needs& n) {
            return Grads{n[0] ? raw::sum_to(g, sa) : Tensor(),
                         n[1] ? raw::sum_to(raw::unary(UnaryOp::Neg, g), sb) : Tensor()};
        });
    }
    return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
    Tensor out = raw::mul(a, b);
    if (needs_graph({a, b})) {
        // Each side's gradient needs only the other side, so save only what is needed.
        SavedTensor saved_a(b.requires_grad() ? a : Tensor(), "mul");
        SavedTensor saved_b(a.requires_grad() ? b : Tensor(), "mul");
        record("mul", out, {a, b}, [saved_a, saved_b, sa = a.shape(), sb = b.shape()](
                                       const Tensor& g, const Needs& n) {
            return Grads{n[0] ? raw::sum_to(raw::mul(g, saved_b.get()), sa) : Tensor(),
                         n[1] ? raw::sum_to(raw::mul(g, saved_a.get()), sb) : Tensor()};
        });
    }
    return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
    Tensor out = raw::div(a, b);
    if (needs_graph({a, b})) {
        // d/da = g / b;  d/db = -g * a / b^2 = -g * out / b
        SavedTensor saved_b(b, "div"), saved_out(b.requires_grad() ? out : Tensor(), "div");
        record("div", out, {a, b}, [saved_b, saved_out, sa = a.shape(), sb = b.shape()](
                                       const Tensor& g, const Needs& n) {
            Tensor b = saved_b.get();
            Tensor ga, gb;
            if (n[0]) ga = raw::sum_to(raw::div(g, b), sa);
            if (n[1]) gb = raw::sum_to(raw::mul_scalar(raw::div(raw::mul(g, saved_out.get()), b), -1), sb);
            return Grads{ga, gb};
        });
    }
    return out;
}

Tensor pow(const Tensor& a, const Tensor& b) {
    Tensor out = raw::binary(BinaryOp::Pow, a, b);
    if (needs_graph({a, b})) {
        // d/da = g * b * a^(b-1);  d/db = g * out * log(a)
        SavedTensor saved_a(a, "pow"), saved_b(b, "pow"), saved_out(out, "pow");
        record("pow", out, {a, b}, [saved_a, saved_b, saved_out, sa = a.shape(), sb = b.shape()](
                                       const Tensor& g, const Needs& n) {
            Tensor a = saved_a.get(), b = saved_b.get();
            Tensor ga, gb;
            if (n[0]) {
                Tensor a_pow = raw::binary(BinaryOp::Pow, a, raw::add_scalar(b, -1));
                ga = raw::sum_to(raw::mul(g, raw::mul(b, a_pow)), sa);
            }
            if (n[1])
                gb = raw::sum_to(raw::mul(g, raw::mul(saved_out.get(), raw::unary(UnaryOp::Log, a))), sb);
            return Grads{ga, gb};
        });
    }
    return out;
}

// maximum / minimum: the gradient goes to the side that was chosen (a on ties).
static Tensor select_binary(BinaryOp op, BinaryOp pick_a, const char* name, const Tensor& a,
                            const Tensor& b) {
    Tensor out = raw::binary(op, a, b);
    if (needs_graph({a, b})) {
        SavedTensor saved_a(a, name), saved_b(b, name);
        record(name, out, {a, b}, [saved_a, saved_b, pick_a, sa = a.shape(), sb = b.shape()](
                                      const Tensor& g, const Needs& n) {
            Tensor chose_a = raw::binary(pick_a, saved_a.get(), saved_b.get());  // 1 where a won
            Tensor ga, gb;
            if (n[0]) ga = raw::sum_to(raw::mul(g, chose_a), sa);
            if (n[1]) gb = raw::sum_to(raw::mul(g, raw::add_scalar(raw::mul_scalar(chose_a, -1), 1)), sb);
            return Grads{ga, gb};
        });
    }
    return out;
}
Tensor maximum(const Tensor& a, const Tensor& b) {
    return select_binary(BinaryOp::Maximum, BinaryOp::Ge, "maximum", a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
    return select_binary(BinaryOp::Minimum, BinaryOp::Le, "minimum", a, b);
}

// ---- with a scalar ----

Tensor add(const Tensor& x, double s) {
    Tensor out = raw::add_scalar(x, s);
    if (needs_graph({x}))
        record("add_scalar", out, {x}, [](const Tensor& g, const Needs&) { return Grads{g}; });
    return out;
}

Tensor mul(const Tensor& x, double s) {
    Tensor out = raw::mul_scalar(x, s);
    if (needs_graph({x}))
        record("mul_scalar", out, {x}, [s](const Tensor& g, const Needs&) {
            return Grads{raw::mul_scalar(g, s)};
        });
    return out;
}

Tensor pow(const Tensor& x, double p) {
    Tensor out = raw::pow_scalar(x, p);
    if (needs_graph({x})) {
        SavedTensor saved_x(x, "pow_scalar");
        record("pow_scalar", out, {x}, [saved_x, p](const Tensor& g, const Needs&) {
            return Grads{raw::mul(g, raw::mul_scalar(raw::pow_scalar(saved_x.get(), p - 1), p))};
        });
    }
    return out;
}

Tensor clamp(const Tensor& x, double lo, double hi) {
    Tensor out = raw::clamp(x, lo, hi);
    if (needs_graph({x})) {
        SavedTensor saved_x(x, "clamp");
        record("clamp", out, {x}, [saved_x, lo, hi](const Tensor& g, const Needs&) {
            Tensor xv = saved_x.get();
            Tensor lo_t = scalar_tensor(lo, xv.dtype(), xv.device());
            Tensor hi_t = scalar_tensor(hi, xv.dtype(), xv.device());
            Tensor inside = raw::mul(raw::binary(BinaryOp::Ge, xv, lo_t), raw::binary(BinaryOp::Le, xv, hi_t));
            return Grads{raw::mul(g, inside)};
        });
    }
    return out;
}

// ---- unary: f(x) forward, g * f'(x) backward (formulas in tensor/elementwise_math.h) ----

static Tensor unary(UnaryOp op, const Tensor& x) {
    Tensor out = raw::unary(op, x);
    if (needs_graph({x})) {
        SavedTensor saved_x(x, unary_name(op));
        record(unary_name(op), out, {x}, [saved_x, op](const Tensor& g, const Needs&) {
            return Grads{raw::unary_backward(op, saved_x.get(), g)};
        });
    }
    return out;
}

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor sign(const Tensor& x) { return unary(UnaryOp::Sign, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
    return unary(approx == GeluApprox::Tanh ? UnaryOp::GeluTanh : UnaryOp::GeluErf, x);
}

// ---- selection ----

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
    Tensor out = raw::where(cond, a, b);
    if (needs_graph({a, b})) {
        SavedTensor saved_cond(cond, "where");
        record("where", out, {a, b}, [saved_cond, sa = a.shape(), sb = b.shape()](
                                         const Tensor& g, const Needs& n) {
            Tensor zero = zeros({}, g.dtype(), g.device());
            Tensor c = saved_cond.get();
            return Grads{n[0] ? raw::sum_to(raw::where(c, g, zero), sa) : Tensor(),
                         n[1] ? raw::sum_to(raw::where(c, zero, g), sb) : Tensor()};
        });
    }
    return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
    Tensor out = raw::masked_fill(x, mask, value);
    if (needs_graph({x})) {
        SavedTensor saved_mask(mask, "masked_fill");
        record("masked_fill", out, {x}, [saved_mask, sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{raw::sum_to(raw::masked_fill(g, saved_mask.get(), 0), sx)};
        });
    }
    return out;
}

Tensor eq(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return raw::binary(BinaryOp::Ge, a, b); }

// ---- operators ----

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& x, double s) { return add(x, s); }
Tensor operator+(double s, const Tensor& x) { return add(x, s); }
Tensor operator-(const Tensor& x, double s) { return add(x, -s); }
Tensor operator-(double s, const Tensor& x) { return add(neg(x), s); }
Tensor operator*(const Tensor& x, double s) { return mul(x, s); }
Tensor operator*(double s, const Tensor& x) { return mul(x, s); }
Tensor operator/(const Tensor& x, double s) { return mul(x, 1.0 / s); }
Tensor operator/(double s, const Tensor& x) { return mul(pow(x, -1.0), s); }

}  // namespace ember
