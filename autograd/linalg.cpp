// matmul's backward: for C = A @ B, dA = dC @ B^T and dB = A^T @ dC (transposes are views, so
// no copies), each summed back over broadcast batch dims. A frozen side is neither computed nor
// saved: this is what makes a frozen weight cost no gradient product.
#include "autograd/functions.h"

namespace ember {

Tensor matmul(const Tensor& a, const Tensor& b) {
    Tensor out = raw::matmul(a, b);
    if (needs_graph({a, b})) {
        SavedTensor saved_a(b.requires_grad() ? a : Tensor(), "matmul");
        SavedTensor saved_b(a.requires_grad() ? b : Tensor(), "matmul");
        record("matmul", out, {a, b}, [saved_a, saved_b, sa = a.shape(), sb = b.shape()](
                                          const Tensor& g, const Needs& n) {
            Tensor ga, gb;
            if (n[0]) ga = raw::sum_to(raw::matmul(g, raw::transpose(saved_b.get(), -2, -1)), sa);
            if (n[1]) gb = raw::sum_to(raw::matmul(raw::transpose(saved_a.get(), -2, -1), g), sb);
            return Grads{ga, gb};
        });
    }
    return out;
}

}  // namespace ember
