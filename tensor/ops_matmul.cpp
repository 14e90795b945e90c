// matmul front-end: (..., M, K) @ (..., K, N) -> (..., M, N) with broadcast batch dims.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {

Tensor matmul(const Tensor& a, const Tensor& b) {
    check_defined("matmul", a, "left");
    check_defined("matmul", b, "right");
    EMBER_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims, got shapes ",
          a.shape(), " and ", b.shape(), "; add a dim with unsqueeze() for a vector");
    int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    EMBER_CHECK(b.size(-2) == K, "matmul: shapes ", a.shape(), " and ", b.shape(), " do not fit: the "
          "left operand has ", K, " columns but the right one has ", b.size(-2), " rows");
    check_same_dtype("matmul", a, b);
    check_same_device("matmul", a, b);
    dispatch_float(a.dtype(), "matmul", [](auto) {});

    // A batch times one matrix: fold the batch into the rows, one (rows, K) @ (K, N) product.
    if (a.dim() > 2 && b.dim() == 2) {
        Shape out_shape = a.shape();
        out_shape[out_shape.rank - 1] = N;
        return reshape(matmul(reshape(a, {-1, K}), b), out_shape);
    }

    // Broadcast the batch dims, then fold them into one: (batch, M, K) and (batch, K, N) views.
    Shape batch_a(a.shape()), batch_b(b.shape());
    batch_a.rank -= 2;
    batch_b.rank -= 2;
    Shape batch = broadcast_shapes(batch_a, batch_b, "matmul (batch dims)");
    Shape a_shape = batch, b_shape = batch, out_shape = batch;
    a_shape.push_back(M), a_shape.push_back(K);
    b_shape.push_back(K), b_shape.push_back(N);
    out_shape.push_back(M), out_shape.push_back(N);
    int64_t batch_count = batch.numel();
    // Flattening the batch dims of an expanded view may copy (when a broadcast dim sits between
    // real ones); a plain batch or a single broadcast operand stays a view.
    Tensor a3 = reshape(expand(a, a_shape), {batch_count, M, K});
    Tensor b3 = reshape(expand(b, b_shape), {batch_count, K, N});

    Tensor out = make_tensor({batch_count, M, N}, a.dtype(), a.device());
    switch (a.device().type) {
        case DeviceType::CPU: cpu::matmul(a3, b3, out); break;
        case DeviceType::CUDA: ON_CUDA("matmul", cuda::matmul(a3, b3, out)); break;
    }
    return reshape(out, out_shape);
}

}  // namespace raw
}  // namespace ember
