// CPU elementwise kernels: unary ops and their derivatives, binary ops, where, and the in-place
// axpy / scale the optimizers use. The formulas come from tensor/elementwise_math.h.
//
// The op is turned into a template argument once per call (with_unary_op / with_binary_op), so the
// inner loops hold no switch and the compiler can vectorize them. Inputs arrive expanded to the
// output's shape; StridedLoop merges contiguous dims, so contiguous operands run as one plain
// loop, and a broadcast scalar operand (stride 0) gets its own loop too.
#include <type_traits>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

template <UnaryOp OP> using UnaryTag = std::integral_constant<UnaryOp, OP>;
template <BinaryOp OP> using BinaryTag = std::integral_constant<BinaryOp, OP>;

// fn(UnaryTag<op>{}): the runtime op as a compile-time constant.
template <typename Fn>
void with_unary_op(UnaryOp op, Fn&& fn) {
    switch (op) {
        case UnaryOp::Neg: return fn(UnaryTag<UnaryOp::Neg>{});
        case UnaryOp::Exp: return fn(UnaryTag<UnaryOp::Exp>{});
        case UnaryOp::Log: return fn(UnaryTag<UnaryOp::Log>{});
        case UnaryOp::Sqrt: return fn(UnaryTag<UnaryOp::Sqrt>{});
        case UnaryOp::Rsqrt: return fn(UnaryTag<UnaryOp::Rsqrt>{});
        case UnaryOp::Abs: return fn(UnaryTag<UnaryOp::Abs>{});
        case UnaryOp::Sign: return fn(UnaryTag<UnaryOp::Sign>{});
        case UnaryOp::Tanh: return fn(UnaryTag<UnaryOp::Tanh>{});
        case UnaryOp::Sigmoid: return fn(UnaryTag<UnaryOp::Sigmoid>{});
        case UnaryOp::Relu: return fn(UnaryTag<UnaryOp::Relu>{});
        case UnaryOp::GeluTanh: return fn(UnaryTag<UnaryOp::GeluTanh>{});
        case UnaryOp::GeluErf: return fn(UnaryTag<UnaryOp::GeluErf>{});
        case UnaryOp::Silu: return fn(UnaryTag<UnaryOp::Silu>{});
    }
}

template <typename Fn>
void with_binary_op(BinaryOp op, Fn&& fn) {
    switch (op) {
        case BinaryOp::Add: return fn(BinaryTag<BinaryOp::Add>{});
        case BinaryOp::Sub: return fn(BinaryTag<BinaryOp::Sub>{});
        case BinaryOp::Mul: return fn(BinaryTag<BinaryOp::Mul>{});
        case BinaryOp::Div: return fn(BinaryTag<BinaryOp::Div>{});
        case BinaryOp::Pow: return fn(BinaryTag<BinaryOp::Pow>{});
        case BinaryOp::Maximum: return fn(BinaryTag<BinaryOp::Maximum>{});
        case BinaryOp::Minimum: return fn(BinaryTag<BinaryOp::Minimum>{});
        case BinaryOp::Eq: return fn(BinaryTag<BinaryOp::Eq>{});
        case BinaryOp::Ne: return fn(BinaryTag<BinaryOp::Ne>{});
        case BinaryOp::Lt: return fn(BinaryTag<BinaryOp::Lt>{});
        case BinaryOp::Le: return fn(BinaryTag<BinaryOp::Le>{});
        case BinaryOp::Gt: return fn(BinaryTag<BinaryOp::Gt>{});
        case BinaryOp::Ge: return fn(BinaryTag<BinaryOp::Ge>{});
    }
}

// out = f(x) elementwise; out and x share a shape, any strides.
template <typename T, typename F>
void map1(const Tensor& x, const Tensor& out, F f) {
    const T* xp = x.data<T>();
    T* op = out.data<T>();
    StridedLoop<2> loop(out.shape(), {out.strides(), x.strides()});
    parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
        loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
            T* o = op + off[0];
            const T* a = xp + off[1];
            if (st[0] == 1 && st[1] == 1)
                for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
            else
                for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(a[i * st[1]]);
        });
    });
}

// out = f(a, b) elementwise; all three share a shape, any strides (0 where broadcast).
template <typename T, typename F>
void map2(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* op = out.data<T>();
    StridedLoop<3> loop(out.shape(), {out.strides(), a.strides(), b.strides()});
    parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
        loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
            T* o = op + off[0];
            const T* x = ap + off[1];
            const T* y = bp + off[2];
            if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
                for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
            } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
                const T yv = y[0];
                for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
            } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
                const T xv = x[0];
                for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
            } else {
                for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
            }
        });
    });
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
    dispatch_float(x.dtype(), unary_name(op), [&](auto tag) {
        using T = typename decltype(tag)::type;
        with_unary_op(op, [&](auto op_tag) {
            map1<T>(x, out, [](T v) { return unary_forward(decltype(op_tag)::value, v); });
        });
    });
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& grad, const Tensor& out) {
    dispatch_float(x.dtype(), unary_name(op), [&](auto tag) {
        using T = typename decltype(tag)::type;
        with_unary_op(op, [&](auto op_tag) {
            map2<T>(grad, x, out, [](T g, T v) {
                return g * unary_derivative(decltype(op_tag)::value, v);
            });
        });
    });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(a.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        with_binary_op(op, [&](auto op_tag) {
            map2<T>(a, b, out, [](T x, T y) {
                return binary_forward(decltype(op_tag)::value, x, y);
            });
        });
    });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch_all(cond.dtype(), [&](auto cond_tag) {
        dispatch_all(a.dtype(), [&](auto tag) {
            using C = typename decltype(cond_tag)::type;
            using T = typename decltype(tag)::type;
            const C* cp = cond.data<C>();  // out's shape, any strides, like a and b
            const T* ap = a.data<T>();
            const T* bp = b.data<T>();
            T* op = out.data<T>();
            StridedLoop<4> loop(out.shape(),
                                {out.strides(), cond.strides(), a.strides(), b.strides()});
            parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
                loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
                    for (int64_t i = 0; i < n; ++i)
                        op[off[0] + i * st[0]] = cp[off[1] + i * st[1]] != C(0)
                                                     ? ap[off[2] + i * st[2]]
                                                     : bp[off[3] + i * st[3]];
                });
            });
        });
    });
}

void axpy(const Tensor& x, const Tensor& y, double alpha) {
    dispatch_all(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T a = T(alpha);
        map2<T>(x, y, x, [a](T u, T v) { return u + a * v; });
    });
}

void scale(const Tensor& x, double s) {
    dispatch_all(x.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T k = T(s);
        map1<T>(x, x, [k](T v) { return v * k; });
    });
}

}  // namespace cpu
}  // namespace ember
