// Views: new shapes and strides over the same storage, never a copy (reshape copies only when no
// strides can describe the result). Each checks its arguments and names itself in errors.
#include <algorithm>

#include "tensor/ops.h"

namespace ember {
namespace raw {

Tensor alias(const Tensor& x) { return make_view(x, x.shape(), x.strides(), x.offset()); }

// Replaces a single -1 in `shape` by the size that keeps numel.
static Shape infer_size(Shape shape, int64_t numel, const char* op, const Shape& from) {
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < shape.rank; ++i) {
        if (shape[i] == -1) {
            EMBER_CHECK(infer_at < 0, op, ": only one dimension can be -1, got ", shape);
            infer_at = i;
        } else {
            EMBER_CHECK(shape[i] >= 0, op, ": invalid size ", shape[i], " in ", shape);
            known *= shape[i];
        }
    }
    if (infer_at >= 0) {
        EMBER_CHECK(known > 0 && numel % known == 0, op, ": cannot infer -1 in ", shape, " for ", numel,
              " elements (from shape ", from, ")");
        shape[infer_at] = numel / known;
    }
    EMBER_CHECK(shape.numel() == numel, op, ": shape ", shape, " has ", shape.numel(),
          " elements but the tensor of shape ", from, " has ", numel);
    return shape;
}

// Strides that let `shape` view the same elements as x, if any exist. Works group by group: a run
// of x's dims that is contiguous in memory can be re-split into any dims of the same product.
static bool view_strides(const Tensor& x, const Shape& shape, Shape* strides) {
    strides->rank = shape.rank;
    if (x.numel() == 0 || x.is_contiguous()) {
        *strides = contiguous_strides(shape);
        return true;
    }
    int out = shape.rank - 1;
    int64_t chunk_base_stride = x.dim() ? x.strides().back() : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = x.dim() - 1; d >= 0; --d) {
        tensor_numel *= x.shape()[d];
        // A group ends where the dim before is not laid out right after this one.
        if (d == 0 || (x.shape()[d - 1] != 1 &&
                       x.strides()[d - 1] != tensor_numel * chunk_base_stride)) {
            while (out >= 0 && (view_numel < tensor_numel || shape[out] == 1)) {
                (*strides)[out] = view_numel * chunk_base_stride;
                view_numel *= shape[out];
                --out;
            }
            if (view_numel != tensor_numel) return false;
            if (d > 0) {
                chunk_base_stride = x.strides()[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return out == -1;
}

Tensor view(const Tensor& x, Shape shape) {
    shape = infer_size(shape, x.numel(), "view", x.shape());
    Shape strides;
    EMBER_CHECK(view_strides(x, shape, &strides), "view: a tensor of shape ", x.shape(), " and strides ",
          x.strides(), " cannot be viewed as ", shape, " without a copy; use reshape() or call "
          "contiguous() first");
    return make_view(x, shape, strides, x.offset());
}

Tensor reshape(const Tensor& x, Shape shape) {
    shape = infer_size(shape, x.numel(), "reshape", x.shape());
    Shape strides;
    if (view_strides(x, shape, &strides)) return make_view(x, shape, strides, x.offset());
    return view(contiguous(x), shape);
}

Tensor permute(const Tensor& x, const Shape& order) {
    EMBER_CHECK(order.rank == x.dim(), "permute: order ", order, " has ", order.rank,
          " entries for a tensor of rank ", x.dim());
    Shape shape, strides;
    bool used[MAX_DIMS] = {};
    for (int i = 0; i < order.rank; ++i) {
        int d = wrap_dim(int(order[i]), x.dim(), "permute");
        EMBER_CHECK(!used[d], "permute: dim ", d, " appears twice in ", order);
        used[d] = true;
        shape.push_back(x.shape()[d]);
        strides.push_back(x.strides()[d]);
    }
    return make_view(x, shape, strides, x.offset());
}

Tensor transpose(const Tensor& x, int d0, int d1) {
    d0 = wrap_dim(d0, x.dim(), "transpose");
    d1 = wrap_dim(d1, x.dim(), "transpose");
    Shape shape = x.shape(), strides = x.strides();
    std::swap(shape[d0], shape[d1]);
    std::swap(strides[d0], strides[d1]);
    return make_view(x, shape, strides, x.offset());
}

Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end, int64_t step) {
    dim = wrap_dim(dim, x.dim(), "slice");
    EMBER_CHECK(step > 0, "slice: step must be positive, got ", step);
    int64_t n = x.shape()[dim];
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, start, n);
    Shape shape = x.shape(), strides = x.strides();
    shape[dim] = (end - start + step - 1) / step;
    strides[dim] *= step;
    return make_view(x, shape, strides, x.offset() + start * x.strides()[dim]);
}

Tensor select(const Tensor& x, int dim, int64_t index) {
    dim = wrap_dim(dim, x.dim(), "select");
    int64_t n = x.shape()[dim];
    EMBER_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", dim,
          " of size ", n, " (shape ", x.shape(), ")");
    if (index < 0) index += n;
    Shape shape = x.shape(), strides = x.strides();
    shape.erase(dim);
    strides.erase(dim);
    return make_view(x, shape, strides, x.offset() + index * x.strides()[dim]);
}

Tensor expand(const Tensor& x, const Shape& shape) {
    EMBER_CHECK(shape.rank >= x.dim(), "expand: cannot expand shape ", x.shape(), " to fewer dims ", shape);
    Shape out_shape, strides;
    int lead = shape.rank - x.dim();
    for (int i = 0; i < shape.rank; ++i) {
        if (i < lead) {
            EMBER_CHECK(shape[i] >= 0, "expand: a new leading dim cannot be -1 (", shape, ")");
            out_shape.push_back(shape[i]);
            strides.push_back(0);
            continue;
        }
        int64_t have = x.shape()[i - lead], want = shape[i] == -1 ? have : shape[i];
        EMBER_CHECK(have == want || have == 1, "expand: cannot expand shape ", x.shape(), " to ", shape,
              " (dim ", i, " has size ", have, "; only size-1 dims can grow)");
        out_shape.push_back(want);
        strides.push_back(have == want ? x.strides()[i - lead] : 0);
    }
    return make_view(x, out_shape, strides, x.offset());
}

Tensor squeeze(const Tensor& x, int dim) {
    dim = wrap_dim(dim, x.dim(), "squeeze");
    if (x.shape()[dim] != 1) return alias(x);
    Shape shape = x.shape(), strides = x.strides();
    shape.erase(dim);
    strides.erase(dim);
    return make_view(x, shape, strides, x.offset());
}

Tensor unsqueeze(const Tensor& x, int dim) {
    dim = wrap_dim(dim, x.dim() + 1, "unsqueeze");
    Shape shape = x.shape(), strides = x.strides();
    int64_t stride = dim < x.dim() ? x.strides()[dim] * x.shape()[dim] : 1;
    shape.insert(dim, 1);
    strides.insert(dim, stride);
    return make_view(x, shape, strides, x.offset());
}

Tensor flatten(const Tensor& x, int start_dim, int end_dim) {
    if (x.dim() == 0) return reshape(x, {1});
    start_dim = wrap_dim(start_dim, x.dim(), "flatten");
    end_dim = wrap_dim(end_dim, x.dim(), "flatten");
    EMBER_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " is after end_dim ", end_dim);
    Shape shape;
    for (int i = 0; i < start_dim; ++i) shape.push_back(x.shape()[i]);
    int64_t merged = 1;
    for (int i = start_dim; i <= end_dim; ++i) merged *= x.shape()[i];
    shape.push_back(merged);
    for (int i = end_dim + 1; i < x.dim(); ++i) shape.push_back(x.shape()[i]);
    return reshape(x, shape);
}

}  // namespace raw
}  // namespace ember
