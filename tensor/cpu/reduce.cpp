// CPU reductions over the last dim of a contiguous (rows, n) tensor: sum, mean, max, min, argmax
// and logsumexp. The front-end (tensor/ops_reduce.cpp) permutes whatever dims are reduced to the
// end and flattens them, so this one kernel serves every reduction.
//
// Each row is reduced by one thread from start to end, so results never depend on the thread
// count. Floating sums accumulate in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/row_math.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

// Index of the first largest value (of the first NaN, if any, as PyTorch does).
template <typename T>
int64_t row_argmax(const T* p, int64_t n) {  // p (n), n >= 1
    const T m = row_max(p, n);
    for (int64_t i = 0; i < n; ++i)
        if (p[i] == m || (is_nan(m) && is_nan(p[i]))) return i;
    return 0;
}

// log(sum(exp(p))) computed as m + log(sum(exp(p - m))) with m the row max.
template <typename T>
T row_logsumexp(const T* p, int64_t n, T* scratch) {  // p (n), scratch (n)
    if (n == 0) return -std::numeric_limits<T>::infinity();
    const T m = row_max(p, n);
    if (!std::isfinite(m)) return m;  // all -inf, a +inf, or a NaN: the max says it all
    return T(double(m) + std::log(sum_exp(p, n, m, scratch)));
}

template <typename T, typename R, typename RowFn>
void for_rows(const Tensor& x, const Tensor& out, RowFn row_fn) {
    const int64_t rows = x.size(0), n = x.size(1);
    const T* xp = x.data<T>();  // (rows, n)
    R* op = out.data<R>();      // (rows)
    parallel_for(rows, row_grain(n), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) op[r] = row_fn(xp + r * n, n);
    });
}

template <typename T>
void logsumexp_rows(const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), n = x.size(1);
    const T* xp = x.data<T>();  // (rows, n)
    T* op = out.data<T>();      // (rows)
    parallel_for(rows, row_grain(n), [&](int64_t begin, int64_t end) {
        std::vector<T> scratch(static_cast<size_t>(n));
        for (int64_t r = begin; r < end; ++r) op[r] = row_logsumexp(xp + r * n, n, scratch.data());
    });
}

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& x, const Tensor& out) {
    switch (op) {
        case ReduceOp::Sum:
            for_rows<T, T>(x, out, [](const T* p, int64_t n) { return T(row_sum(p, n)); });
            break;
        case ReduceOp::Mean:  // 0 / 0 = NaN for an empty row, as in PyTorch
            for_rows<T, T>(x, out, [](const T* p, int64_t n) {
                return T(double(row_sum(p, n)) / double(n));
            });
            break;
        case ReduceOp::Max: for_rows<T, T>(x, out, row_extreme<true, T>); break;
        case ReduceOp::Min: for_rows<T, T>(x, out, row_extreme<false, T>); break;
        case ReduceOp::ArgMax: for_rows<T, int64_t>(x, out, row_argmax<T>); break;
        case ReduceOp::LogSumExp: logsumexp_rows<T>(x, out); break;
    }
}

}  // namespace

// Threads split the columns into blocks; each block walks the rows top to bottom, adding a
// contiguous slice of each row into double accumulators, so every column is summed in row order
// (the same bits for any thread count) and the reads stay sequential.
void sum_columns(const Tensor& x, const Tensor& out, bool mean) {
    dispatch_float(x.dtype(), "sum", [&](auto tag) {
        using T = typename decltype(tag)::type;
        const int64_t rows = x.size(0), n = x.size(1);
        const T* xp = x.data<T>();  // (rows, n)
        T* op = out.data<T>();      // (n)
        constexpr int64_t BLOCK = 256;
        parallel_for((n + BLOCK - 1) / BLOCK, std::max<int64_t>(1, 16384 / std::max<int64_t>(rows * BLOCK, 1)),
                     [&](int64_t begin, int64_t end) {
            double acc[BLOCK];
            for (int64_t blk = begin; blk < end; ++blk) {
                const int64_t c0 = blk * BLOCK, w = std::min(BLOCK, n - c0);
                std::fill(acc, acc + w, 0.0);
                for (int64_t r = 0; r < rows; ++r) {
                    const T* row = xp + r * n + c0;
                    for (int64_t c = 0; c < w; ++c) acc[c] += double(row[c]);
                }
                for (int64_t c = 0; c < w; ++c) op[c0 + c] = T(mean ? acc[c] / double(rows) : acc[c]);
            }
        });
    });
}

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out) {
    if (op == ReduceOp::Mean || op == ReduceOp::LogSumExp) {
        dispatch_float(x.dtype(), op == ReduceOp::Mean ? "mean" : "logsumexp", [&](auto tag) {
            reduce_typed<typename decltype(tag)::type>(op, x, out);
        });
        return;
    }
    dispatch_all(x.dtype(), [&](auto tag) {
        reduce_typed<typename decltype(tag)::type>(op, x, out);
    });
}

}  // namespace cpu
}  // namespace ember
