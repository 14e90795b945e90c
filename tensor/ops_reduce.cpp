// Reduction front-ends: sum, mean, max, min, argmax, var, logsumexp and sum_to.
//
// Every reduction runs through one row kernel: the reduced dims are permuted to the end, the
// tensor is made contiguous and viewed as (rows, n) with n the number of reduced elements per
// output, the kernel reduces each row, and the (rows) result is reshaped to the output shape
// (with size-1 dims where keepdim keeps them).
#include <algorithm>

#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {
namespace {

// Sorted, non-negative, distinct dims; an empty list means every dim.
std::vector<int> reduced_dims(std::vector<int> dims, int rank, const char* op) {
    if (rank == 0) {  // a 0-dim tensor has nothing to reduce; dim 0 or -1 still name it
        for (int d : dims) wrap_dim(d, 1, op);
        return {};
    }
    if (dims.empty())
        for (int d = 0; d < rank; ++d) dims.push_back(d);
    for (int& d : dims) d = wrap_dim(d, rank, op);
    std::sort(dims.begin(), dims.end());
    for (size_t i = 1; i < dims.size(); ++i)
        EMBER_CHECK(dims[i] != dims[i - 1], op, ": dim ", dims[i], " appears twice in the list of "
                    "dims to reduce; name each dim once");
    return dims;
}

// x viewed as (rows, n), reduced dims last, and the shape of the reduction's result.
struct RowsView {
    Tensor rows;  // (rows, n), contiguous
    Shape out_shape;
};

RowsView as_rows(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
    bool reduced[MAX_DIMS] = {};
    for (int d : dims) reduced[d] = true;
    Shape order, out_shape;
    int64_t rows = 1, n = 1;
    for (int d = 0; d < x.dim(); ++d) {
        if (reduced[d]) {
            if (keepdim) out_shape.push_back(1);
            continue;
        }
        order.push_back(d);
        out_shape.push_back(x.size(d));
        rows *= x.size(d);
    }
    for (int d : dims) {
        order.push_back(d);
        n *= x.size(d);
    }
    return {reshape(contiguous(permute(x, order)), {rows, n}), out_shape};
}

// A sum or mean over the leading dims of a contiguous float tensor (a bias gradient: (B, T, C) ->
// (C)) reduces the columns of x viewed as (rows, cols), with no transposing copy, on either device.
// False when the reduction is not of that form (or is empty: the row path gives 0 and NaN means).
bool leading_dims(const Tensor& x, const std::vector<int>& dims) {
    if (dims.empty() || int(dims.size()) == x.dim() || !x.is_contiguous() || x.numel() == 0) return false;
    for (size_t i = 0; i < dims.size(); ++i)
        if (dims[i] != int(i)) return false;
    return x.dtype() == DType::F32 || x.dtype() == DType::F64;
}

Tensor reduce(cpu::ReduceOp op, const char* name, const Tensor& x, const std::vector<int>& dims_in,
              bool keepdim, DType out_dtype) {
    std::vector<int> dims = reduced_dims(dims_in, x.dim(), name);
    if ((op == cpu::ReduceOp::Sum || op == cpu::ReduceOp::Mean) && leading_dims(x, dims) && out_dtype == x.dtype()) {
        const bool mean = op == cpu::ReduceOp::Mean;
        Shape out_shape;
        int64_t rows = 1;
        for (int d = 0; d < x.dim(); ++d) {
            if (d < int(dims.size())) {
                rows *= x.size(d);
                if (keepdim) out_shape.push_back(1);
            } else {
                out_shape.push_back(x.size(d));
            }
        }
        Tensor out = make_tensor(out_shape, out_dtype, x.device());
        Tensor columns = reshape(x, {rows, out.numel()}), flat = reshape(out, {out.numel()});
        switch (x.device().type) {
            case DeviceType::CPU: cpu::sum_columns(columns, flat, mean); break;
            case DeviceType::CUDA: ON_CUDA(name, cuda::reduce_cols(mean, columns, flat)); break;
        }
        return out;
    }
    RowsView view = as_rows(x, dims, keepdim);
    const int64_t rows = view.rows.size(0), n = view.rows.size(1);
    bool needs_elements = op == cpu::ReduceOp::Max || op == cpu::ReduceOp::Min ||
                          op == cpu::ReduceOp::ArgMax;
    EMBER_CHECK(!(needs_elements && n == 0 && rows > 0), name, ": cannot reduce a tensor of shape ",
                x.shape(), " over dims of size 0 (there is no element to pick)");
    Tensor out = make_tensor({rows}, out_dtype, x.device());
    switch (x.device().type) {
        case DeviceType::CPU: cpu::reduce_rows(op, view.rows, out); break;
        case DeviceType::CUDA:  // cuda::ReduceOp lists the same ops in the same order
            ON_CUDA(name, cuda::reduce_rows(static_cast<cuda::ReduceOp>(op), view.rows, out));
            break;
    }
    return reshape(out, view.out_shape);
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int> dims, bool keepdim) {
    check_defined("sum", x);
    return reduce(cpu::ReduceOp::Sum, "sum", x, dims, keepdim, x.dtype());
}

Tensor mean(const Tensor& x, std::vector<int> dims, bool keepdim) {
    check_defined("mean", x);
    dispatch_float(x.dtype(), "mean", [](auto) {});
    return reduce(cpu::ReduceOp::Mean, "mean", x, dims, keepdim, x.dtype());
}

Tensor max(const Tensor& x, std::vector<int> dims, bool keepdim) {
    check_defined("max", x);
    return reduce(cpu::ReduceOp::Max, "max", x, dims, keepdim, x.dtype());
}

Tensor min(const Tensor& x, std::vector<int> dims, bool keepdim) {
    check_defined("min", x);
    return reduce(cpu::ReduceOp::Min, "min", x, dims, keepdim, x.dtype());
}

Tensor argmax(const Tensor& x, int dim, bool keepdim) {
    check_defined("argmax", x);
    return reduce(cpu::ReduceOp::ArgMax, "argmax", x, {dim}, keepdim, DType::I64);
}

Tensor logsumexp(const Tensor& x, std::vector<int> dims, bool keepdim) {
    check_defined("logsumexp", x);
    dispatch_float(x.dtype(), "logsumexp", [](auto) {});
    return reduce(cpu::ReduceOp::LogSumExp, "logsumexp", x, dims, keepdim, x.dtype());
}

// Two passes over the (rows, n) view: the row means, then the sum of squared deviations from
// them (more accurate than E[x^2] - E[x]^2). Dividing by n - 1 when n = 1 gives NaN, as in PyTorch.
Tensor var(const Tensor& x, std::vector<int> dims, bool unbiased, bool keepdim) {
    check_defined("var", x);
    dispatch_float(x.dtype(), "var", [](auto) {});
    dims = reduced_dims(dims, x.dim(), "var");
    RowsView view = as_rows(x, dims, keepdim);
    const int64_t n = view.rows.size(1);
    Tensor means = reduce(cpu::ReduceOp::Mean, "var", view.rows, {1}, true, x.dtype());  // (rows, 1)
    Tensor centered = sub(view.rows, means);
    Tensor squares =
        reduce(cpu::ReduceOp::Sum, "var", mul(centered, centered), {1}, false, x.dtype());
    Tensor out = mul_scalar(squares, 1.0 / double(unbiased ? n - 1 : n));
    return reshape(out, view.out_shape);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
    check_defined("sum_to", x);
    EMBER_CHECK(shape.rank <= x.dim() && broadcast_shapes(shape, x.shape(), "sum_to") == x.shape(),
                "sum_to: a tensor of shape ", x.shape(), " cannot be summed down to shape ", shape,
                "; the target shape must broadcast to the tensor's shape");
    const int lead = x.dim() - shape.rank;
    std::vector<int> dims;
    for (int d = 0; d < x.dim(); ++d)
        if (x.size(d) != 1 && (d < lead || shape[d - lead] == 1)) dims.push_back(d);
    if (dims.empty()) return reshape(x, shape);  // only size-1 dims differ: a view
    return reshape(sum(x, dims, true), shape);
}

}  // namespace raw
}  // namespace ember
