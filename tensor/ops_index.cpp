// Joining and indexing front-ends: cat, stack, split, chunk, gather, scatter_add, index_select,
// index_add, embedding (and its backward), one_hot, and the masks triu, tril and causal_mask.
//
// cat writes each input into its slice of the output with the copy kernel; split and chunk are
// views. embedding is index_select of weight rows; its backward is index_add into zeros, which
// adds repeated ids in a fixed order, so the result does not depend on the thread count.
#include <algorithm>
#include <limits>

#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

void check_index_tensor(const char* op, const Tensor& x, const Tensor& index) {
    check_defined(op, x);
    check_defined(op, index, "index");
    check_same_device(op, x, index);
    dispatch_index(index.dtype(), op, [](auto) {});
}

// On the CPU, throws if an id lies outside [0, vocab), naming it. (On a GPU the kernel checks.)
void check_ids(const char* op, const Tensor& ids, int64_t vocab) {
    if (!ids.device().is_cpu()) return;
    for (int64_t id : ids.to_vector<int64_t>())
        EMBER_CHECK(id >= 0 && id < vocab, op, ": id ", id, " is out of range for a vocabulary of ",
                    vocab, " rows; ids must lie in [0, ", vocab, ")");
}

}  // namespace

Tensor cat(const std::vector<Tensor>& xs, int dim) {
    EMBER_CHECK(!xs.empty(), "cat: needs at least one tensor");
    for (const Tensor& x : xs) check_defined("cat", x);
    const Tensor& first = xs[0];
    EMBER_CHECK(first.dim() > 0, "cat: cannot join 0-dim tensors; unsqueeze them or use stack");
    const int d = wrap_dim(dim, first.dim(), "cat");
    Shape shape = first.shape();
    shape[d] = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
        check_same_device("cat", first, xs[i]);
        check_same_dtype("cat", first, xs[i]);
        Shape a = first.shape(), b = xs[i].shape();
        bool fits = a.rank == b.rank;
        for (int k = 0; fits && k < a.rank; ++k) fits = k == d || a[k] == b[k];
        EMBER_CHECK(fits, "cat: tensor ", i, " has shape ", b, " but tensor 0 has shape ", a,
                    "; every dim except dim ", d, " must match");
        shape[d] += b[d];
    }
    Tensor out = make_tensor(shape, first.dtype(), first.device());
    int64_t start = 0;
    for (const Tensor& x : xs) {
        Tensor dst = slice(out, d, start, start + x.size(d));
        start += x.size(d);
        if (x.numel() == 0) continue;
        switch (out.device().type) {
            case DeviceType::CPU: cpu::copy(x, dst); break;
            case DeviceType::CUDA: ON_CUDA("cat", cuda::copy(x, dst)); break;
        }
    }
    return out;
}

Tensor stack(const std::vector<Tensor>& xs, int dim) {
    EMBER_CHECK(!xs.empty(), "stack: needs at least one tensor");
    for (const Tensor& x : xs) check_defined("stack", x);
    const int d = wrap_dim(dim, xs[0].dim() + 1, "stack");
    std::vector<Tensor> parts;
    for (size_t i = 0; i < xs.size(); ++i) {
        EMBER_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ",
                    xs[i].shape(), " but tensor 0 has shape ", xs[0].shape(),
                    "; stack needs equal shapes");
        parts.push_back(unsqueeze(xs[i], d));
    }
    return cat(parts, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
    check_defined("split", x);
    const int d = wrap_dim(dim, x.dim(), "split");
    int64_t total = 0;
    for (int64_t s : sizes) {
        EMBER_CHECK(s >= 0, "split: sizes must not be negative, got ", s);
        total += s;
    }
    EMBER_CHECK(total == x.size(d), "split: sizes add up to ", total, " but dim ", d, " of shape ",
                x.shape(), " has ", x.size(d));
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (int64_t s : sizes) {
        parts.push_back(slice(x, d, start, start + s));
        start += s;
    }
    return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim) {
    check_defined("chunk", x);
    EMBER_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
    const int d = wrap_dim(dim, x.dim(), "chunk");
    const int64_t n = x.size(d), step = (n + chunks - 1) / chunks;
    std::vector<int64_t> sizes;  // like PyTorch: chunks of ceil(n / chunks), perhaps fewer of them
    for (int64_t start = 0; start < n; start += step) sizes.push_back(std::min(step, n - start));
    return split(x, sizes, d);
}

Tensor gather(const Tensor& x, int dim, const Tensor& index) {
    check_index_tensor("gather", x, index);
    EMBER_CHECK(index.dim() == x.dim(), "gather: index of shape ", index.shape(), " needs as many "
                "dims as the input of shape ", x.shape());
    const int d = wrap_dim(dim, x.dim(), "gather");
    for (int k = 0; k < x.dim(); ++k)
        EMBER_CHECK(k == d || index.size(k) <= x.size(k), "gather: index of shape ", index.shape(),
                    " is larger than the input of shape ", x.shape(), " at dim ", k,
                    " (only the gathered dim ", d, " may differ)");
    Tensor out = make_tensor(index.shape(), x.dtype(), x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::gather(x, d, index, out); break;
        case DeviceType::CUDA: ON_CUDA("gather", cuda::gather(x, d, index, out)); break;
    }
    return out;
}

Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src) {
    check_index_tensor("scatter_add", x, index);
    check_defined("scatter_add", src, "source");
    check_same_device("scatter_add", x, src);
    check_same_dtype("scatter_add", x, src);
    EMBER_CHECK(index.dim() == x.dim() && src.dim() == x.dim(), "scatter_add: input ", x.shape(),
                ", index ", index.shape(), " and source ", src.shape(),
                " need the same number of dims");
    const int d = wrap_dim(dim, x.dim(), "scatter_add");
    for (int k = 0; k < x.dim(); ++k)
        EMBER_CHECK(index.size(k) <= src.size(k) && (k == d || index.size(k) <= x.size(k)),
                    "scatter_add: index of shape ", index.shape(), " is larger than the source ",
                    src.shape(), " or (outside dim ", d, ") the input ", x.shape(), " at dim ", k);
    Tensor out = clone(x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::scatter_add(out, d, index, src); break;
        case DeviceType::CUDA: ON_CUDA("scatter_add", cuda::scatter_add(out, d, index, src)); break;
    }
    return out;
}

Tensor index_select(const Tensor& x, int dim, const Tensor& index) {
    check_index_tensor("index_select", x, index);
    EMBER_CHECK(index.dim() == 1, "index_select: index must be 1-D, got shape ", index.shape(),
                "; flatten it with reshape({-1})");
    const int d = wrap_dim(dim, x.dim(), "index_select");
    Shape shape = x.shape();
    shape[d] = index.size(0);
    Tensor out = make_tensor(shape, x.dtype(), x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::index_select(x, d, index, out); break;
        case DeviceType::CUDA: ON_CUDA("index_select", cuda::index_select(x, d, index, out)); break;
    }
    return out;
}

Tensor index_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src) {
    check_index_tensor("index_add", x, index);
    check_defined("index_add", src, "source");
    check_same_device("index_add", x, src);
    check_same_dtype("index_add", x, src);
    EMBER_CHECK(index.dim() == 1, "index_add: index must be 1-D, got shape ", index.shape());
    const int d = wrap_dim(dim, x.dim(), "index_add");
    Shape expected = x.shape();
    expected[d] = index.size(0);
    EMBER_CHECK(src.shape() == expected, "index_add: source of shape ", src.shape(),
                " does not fit input ", x.shape(), " and index ", index.shape(), "; it must be ",
                expected);
    Tensor out = clone(x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::index_add(out, d, index, src); break;
        case DeviceType::CUDA: ON_CUDA("index_add", cuda::index_add(out, d, index, src)); break;
    }
    return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
    check_index_tensor("embedding", weight, ids);
    EMBER_CHECK(weight.dim() == 2, "embedding: weight must be (V, C), got shape ", weight.shape());
    check_ids("embedding", ids, weight.size(0));
    Shape shape = ids.shape();
    shape.push_back(weight.size(1));
    return reshape(index_select(weight, 0, reshape(ids, {-1})), shape);
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t vocab_size) {
    check_index_tensor("embedding_backward", grad, ids);
    EMBER_CHECK(vocab_size >= 0, "embedding_backward: negative vocabulary size ", vocab_size);
    Shape expected = ids.shape();
    expected.push_back(grad.dim() > 0 ? grad.size(-1) : 0);
    EMBER_CHECK(grad.dim() == ids.dim() + 1 && grad.shape() == expected, "embedding_backward: ",
                "gradient of shape ", grad.shape(), " does not fit ids of shape ", ids.shape(),
                "; it must be the ids' shape plus the embedding dim");
    check_ids("embedding_backward", ids, vocab_size);
    const int64_t C = grad.size(-1);
    Tensor out = zeros({vocab_size, C}, grad.dtype(), grad.device());
    Tensor flat_ids = reshape(ids, {-1}), flat_grad = reshape(grad, {-1, C});
    switch (grad.device().type) {
        case DeviceType::CPU: cpu::index_add(out, 0, flat_ids, flat_grad); break;
        case DeviceType::CUDA:
            ON_CUDA("embedding_backward", cuda::index_add(out, 0, flat_ids, flat_grad));
            break;
    }
    return out;
}

Tensor one_hot(const Tensor& ids, int64_t classes, DType dtype) {
    check_defined("one_hot", ids, "ids");
    dispatch_index(ids.dtype(), "one_hot", [](auto) {});
    EMBER_CHECK(classes > 0, "one_hot: the number of classes must be positive, got ", classes);
    Shape shape = ids.shape();
    shape.push_back(classes);
    Tensor out = make_tensor(shape, dtype, ids.device());
    Tensor flat_ids = reshape(ids, {-1}), flat_out = reshape(out, {-1, classes});
    switch (ids.device().type) {
        case DeviceType::CPU: cpu::one_hot(flat_ids, flat_out); break;
        case DeviceType::CUDA: ON_CUDA("one_hot", cuda::one_hot(flat_ids, flat_out)); break;
    }
    return out;
}

static Tensor triangle(const char* name, const Tensor& x, int64_t diagonal, bool upper) {
    check_defined(name, x);
    EMBER_CHECK(x.dim() >= 2, name, ": needs a tensor of at least 2 dims, got shape ", x.shape());
    Tensor out = empty_like(x);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::triangle(x, diagonal, upper, out); break;
        case DeviceType::CUDA: ON_CUDA(name, cuda::triangle(x, diagonal, upper, out)); break;
    }
    return out;
}

Tensor triu(const Tensor& x, int64_t diagonal) { return triangle("triu", x, diagonal, true); }
Tensor tril(const Tensor& x, int64_t diagonal) { return triangle("tril", x, diagonal, false); }

Tensor causal_mask(int64_t T, DType dtype, Device device) {
    EMBER_CHECK(T >= 0, "causal_mask: negative size ", T);
    dispatch_float(dtype, "causal_mask", [](auto) {});
    // -inf everywhere, then keep it only strictly above the diagonal (key j > query i).
    return triu(full({T, T}, -std::numeric_limits<double>::infinity(), dtype, device), 1);
}

}  // namespace raw
}  // namespace ember
