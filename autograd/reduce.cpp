// Reductions and softmax. A reduction's backward spreads the output gradient back over the
// reduced dims: unsqueeze them again (unless keepdim kept them) and broadcast to the input shape.
#include <algorithm>

#include "autograd/functions.h"

namespace ember {

// Sorted, non-negative dims; an empty list means every dim.
static std::vector<int> normalized(std::vector<int> dims, int rank, const char* op) {
    if (dims.empty())
        for (int d = 0; d < rank; ++d) dims.push_back(d);
    for (int& d : dims) d = wrap_dim(d, rank, op);
    std::sort(dims.begin(), dims.end());
    return dims;
}

// g has the reduction's output shape; return it broadcast to x's shape.
static Tensor spread(const Tensor& g, const Shape& x_shape, const std::vector<int>& dims, bool keepdim) {
    Tensor out = g;
    if (!keepdim)
        for (int d : dims) out = raw::unsqueeze(out, d);
    return raw::expand(out, x_shape);
}

static int64_t reduced_count(const Shape& shape, const std::vector<int>& dims) {
    int64_t n = 1;
    for (int d : dims) n *= shape[d];
    return n;
}

Tensor sum(const Tensor& x, std::vector<int> dims, bool keepdim) {
    Tensor out = raw::sum(x, dims, keepdim);
    if (needs_graph({x})) {
        dims = normalized(dims, x.dim(), "sum");
        record("sum", out, {x}, [dims, keepdim, sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{spread(g, sx, dims, keepdim)};
        });
    }
    return out;
}

Tensor mean(const Tensor& x, std::vector<int> dims, bool keepdim) {
    Tensor out = raw::mean(x, dims, keepdim);
    if (needs_graph({x})) {
        dims = normalized(dims, x.dim(), "mean");
        double scale = 1.0 / double(std::max<int64_t>(1, reduced_count(x.shape(), dims)));
        record("mean", out, {x}, [dims, keepdim, scale, sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{spread(raw::mul_scalar(g, scale), sx, dims, keepdim)};
        });
    }
    return out;
}

// max / min: the gradient goes to the elements equal to the result, shared evenly among ties.
static Tensor extreme(bool is_max, const Tensor& x, std::vector<int> dims, bool keepdim) {
    const char* name = is_max ? "max" : "min";
    Tensor out = is_max ? raw::max(x, dims, keepdim) : raw::min(x, dims, keepdim);
    if (needs_graph({x})) {
        dims = normalized(dims, x.dim(), name);
        SavedTensor saved_x(x, name), saved_out(out, name);
        record(name, out, {x}, [saved_x, saved_out, dims, keepdim](const Tensor& g, const Needs&) {
            Tensor x = saved_x.get();
            Tensor hit = raw::binary(BinaryOp::Eq, x, spread(saved_out.get(), x.shape(), dims, keepdim));
            Tensor ties = raw::sum(hit, dims, true);
            Tensor share = raw::div(hit, raw::expand(ties, x.shape()));
            return Grads{raw::mul(share, spread(g, x.shape(), dims, keepdim))};
        });
    }
    return out;
}
Tensor max(const Tensor& x, std::vector<int> dims, bool keepdim) { return extreme(true, x, dims, keepdim); }
Tensor min(const Tensor& x, std::vector<int> dims, bool keepdim) { return extreme(false, x, dims, keepdim); }

Tensor argmax(const Tensor& x, int dim, bool keepdim) { return raw::argmax(x, dim, keepdim); }

Tensor var(const Tensor& x, std::vector<int> dims, bool unbiased, bool keepdim) {
    Tensor out = raw::var(x, dims, unbiased, keepdim);
    if (needs_graph({x})) {
        dims = normalized(dims, x.dim(), "var");
        int64_t n = reduced_count(x.shape(), dims);
        double scale = 2.0 / double(std::max<int64_t>(1, unbiased ? n - 1 : n));
        SavedTensor saved_x(x, "var");
        record("var", out, {x}, [saved_x, dims, keepdim, scale](const Tensor& g, const Needs&) {
            // d var / dx = 2 (x - mean) / (n - unbiased)
            Tensor x = saved_x.get();
            Tensor centered = raw::sub(x, raw::expand(raw::mean(x, dims, true), x.shape()));
            return Grads{raw::mul(raw::mul_scalar(centered, scale), spread(g, x.shape(), dims, keepdim))};
        });
    }
    return out;
}

Tensor std_dev(const Tensor& x, std::vector<int> dims, bool unbiased, bool keepdim) {
    return sqrt(var(x, dims, unbiased, keepdim));
}

Tensor logsumexp(const Tensor& x, std::vector<int> dims, bool keepdim) {
    Tensor out = raw::logsumexp(x, dims, keepdim);
    if (needs_graph({x})) {
        dims = normalized(dims, x.dim(), "logsumexp");
        SavedTensor saved_x(x, "logsumexp"), saved_out(out, "logsumexp");
        record("logsumexp", out, {x}, [saved_x, saved_out, dims, keepdim](const Tensor& g, const Needs&) {
            // d lse / dx = exp(x - lse), a softmax over the reduced dims
            Tensor x = saved_x.get();
            Tensor probs = raw::unary(UnaryOp::Exp, raw::sub(x, spread(saved_out.get(), x.shape(), dims, keepdim)));
            return Grads{raw::mul(probs, spread(g, x.shape(), dims, keepdim))};
        });
    }
    return out;
}

Tensor softmax(const Tensor& x, int dim) {
    Tensor out = raw::softmax(x, dim);
    if (needs_graph({x})) {
        SavedTensor saved_y(out, "softmax");
        record("softmax", out, {x}, [saved_y, dim](const Tensor& g, const Needs&) {
            return Grads{raw::softmax_backward(saved_y.get(), g, dim)};
        });
    }
    return out;
}

Tensor log_softmax(const Tensor& x, int dim) {
    Tensor out = raw::log_softmax(x, dim);
    if (needs_graph({x})) {
        SavedTensor saved_y(out, "log_softmax");
        record("log_softmax", out, {x}, [saved_y, dim](const Tensor& g, const Needs&) {
            return Grads{raw::log_softmax_backward(saved_y.get(), g, dim)};
        });
    }
    return out;
}

Tensor scaled_softmax(const Tensor& scores, double scale, bool causal) {
    Tensor out = raw::scaled_softmax(scores, scale, causal);
    if (needs_graph({scores})) {
        SavedTensor saved_y(out, "scaled_softmax");
        record("scaled_softmax", out, {scores}, [saved_y, scale, causal](const Tensor& g, const Needs&) {
            return Grads{raw::scaled_softmax_backward(saved_y.get(), g, scale, causal)};
        });
    }
    return out;
}

}  // namespace ember
