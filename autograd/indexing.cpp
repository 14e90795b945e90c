// Joining, splitting and indexing. Each backward routes the gradient to where the values came
// from: cat splits it, gather scatters it, index_select adds it back at the selected rows.
#include "autograd/functions.h"

namespace ember {

Tensor cat(const std::vector<Tensor>& xs, int dim) {
    Tensor out = raw::cat(xs, dim);
    if (needs_graph(xs)) {
        int d = wrap_dim(dim, xs[0].dim(), "cat");
        std::vector<int64_t> sizes;
        for (const Tensor& x : xs) sizes.push_back(x.size(d));
        record("cat", out, xs, [sizes, d](const Tensor& g, const Needs& n) {
            std::vector<Tensor> parts = raw::split(g, sizes, d);
            Grads grads(parts.size());
            for (size_t i = 0; i < parts.size(); ++i)
                if (n[i]) grads[i] = parts[i];
            return grads;
        });
    }
    return out;
}

Tensor stack(const std::vector<Tensor>& xs, int dim) {
    EMBER_CHECK(!xs.empty(), "stack: needs at least one tensor");
    int d = wrap_dim(dim, xs[0].dim() + 1, "stack");
    std::vector<Tensor> expanded;
    for (const Tensor& x : xs) expanded.push_back(x.unsqueeze(d));
    return cat(expanded, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
    int d = wrap_dim(dim, x.dim(), "split");
    int64_t total = 0;
    for (int64_t s : sizes) total += s;
    EMBER_CHECK(total == x.size(d), "split: sizes add up to ", total, " but dim ", d, " of shape ",
          x.shape(), " has ", x.size(d));
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (int64_t s : sizes) {
        parts.push_back(x.narrow(d, start, s));
        start += s;
    }
    return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim) {
    EMBER_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
    int d = wrap_dim(dim, x.dim(), "chunk");
    int64_t n = x.size(d), step = (n + chunks - 1) / chunks;
    std::vector<int64_t> sizes;
    for (int64_t start = 0; start < n; start += step) sizes.push_back(std::min(step, n - start));
    return split(x, sizes, d);
}

Tensor gather(const Tensor& x, int dim, const Tensor& index) {
    Tensor out = raw::gather(x, dim, index);
    if (needs_graph({x})) {
        SavedTensor saved_index(index, "gather");
        record("gather", out, {x}, [saved_index, dim, sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{raw::scatter_add(zeros(sx, g.dtype(), g.device()), dim, saved_index.get(), g)};
        });
    }
    return out;
}

Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src) {
    Tensor out = raw::scatter_add(x, dim, index, src);
    if (needs_graph({x, src})) {
        SavedTensor saved_index(index, "scatter_add");
        record("scatter_add", out, {x, src}, [saved_index, dim](const Tensor& g, const Needs& n) {
            return Grads{n[0] ? g : Tensor(), n[1] ? raw::gather(g, dim, saved_index.get()) : Tensor()};
        });
    }
    return out;
}

Tensor index_select(const Tensor& x, int dim, const Tensor& index) {
    Tensor out = raw::index_select(x, dim, index);
    if (needs_graph({x})) {
        SavedTensor saved_index(index, "index_select");
        record("index_select", out, {x}, [saved_index, dim, sx = x.shape()](const Tensor& g, const Needs&) {
            return Grads{raw::index_add(zeros(sx, g.dtype(), g.device()), dim, saved_index.get(), g)};
        });
    }
    return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
    Tensor out = raw::embedding(weight, ids);
    if (needs_graph({weight})) {
        SavedTensor saved_ids(ids, "embedding");
        record("embedding", out, {weight}, [saved_ids, vocab = weight.size(0)](const Tensor& g, const Needs&) {
            return Grads{raw::embedding_backward(g, saved_ids.get(), vocab)};
        });
    }
    return out;
}

Tensor triu(const Tensor& x, int64_t diagonal) {
    Tensor out = raw::triu(x, diagonal);
    if (needs_graph({x}))
        record("triu", out, {x}, [diagonal](const Tensor& g, const Needs&) {
            return Grads{raw::triu(g, diagonal)};
        });
    return out;
}

Tensor tril(const Tensor& x, int64_t diagonal) {
    Tensor out = raw::tril(x, diagonal);
    if (needs_graph({x}))
        record("tril", out, {x}, [diagonal](const Tensor& g, const Needs&) {
            return Grads{raw::tril(g, diagonal)};
        });
    return out;
}

Tensor one_hot(const Tensor& ids, int64_t classes, DType dtype) { return raw::one_hot(ids, classes, dtype); }

}  // namespace ember
