// matmul's backward: for C = A @ B, dA = dC @ B^T and dB = A^T @ dC (transposes are views, so
// no copies), each summed back over broadcast batch dims. A frozen side is neither computed nor
// saved: this is what makes a frozen weight cost no gradient product.
//
// A batched A times a plain matrix B, (..., M, K) @ (K, N), is one (rows, K) @ (K, N) product
// with the batch folded into the rows, as torch.matmul does. Its dB is then one product over
// all rows, instead of a (batch, K, N) stack of per-matrix gradients summed afterwards (for a
// GPT's lm_head that stack is batch x C x vocabulary floats).
//
// When B is the transpose of a row-major matrix W (a Linear's weight.t()), dB is computed as
// (dC^T @ A)^T: the product lands in W's own layout, so W's gradient is contiguous and the
// optimizer needs no transposing copy of it.
#include "autograd/functions.h"

namespace ember {
namespace {

// True when x (2-D) is the transpose view of a contiguous matrix.
bool is_transposed_matrix(const Tensor& x) {
    return x.dim() == 2 && x.size(0) > 1 && x.size(1) > 1 && x.stride(0) == 1 &&
           x.stride(1) == x.size(0);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
    if (a.defined() && b.defined() && a.dim() > 2 && b.dim() == 2 && a.size(-1) == b.size(0)) {
        Shape out_shape = a.shape();
        out_shape[out_shape.rank - 1] = b.size(1);
        return matmul(a.reshape({-1, a.size(-1)}), b).reshape(out_shape);
    }
    Tensor out = raw::matmul(a, b);
    if (needs_graph({a, b})) {
        SavedTensor saved_a(b.requires_grad() ? a : Tensor(), "matmul");
        SavedTensor saved_b(a.requires_grad() ? b : Tensor(), "matmul");
        record("matmul", out, {a, b}, [saved_a, saved_b, sa = a.shape(), sb = b.shape(),
                                       b_transposed = a.dim() == 2 && is_transposed_matrix(b)](
                                          const Tensor& g, const Needs& n) {
            Tensor ga, gb;
            if (n[0]) ga = raw::sum_to(raw::matmul(g, raw::transpose(saved_b.get(), -2, -1)), sa);
            if (n[1]) {
                const Tensor& sa_ = saved_a.get();
                gb = b_transposed ? raw::transpose(raw::matmul(raw::transpose(g, 0, 1), sa_), 0, 1)
                                  : raw::sum_to(raw::matmul(raw::transpose(sa_, -2, -1), g), sb);
            }
            return Grads{ga, gb};
        });
    }
    return out;
}

}  // namespace ember
