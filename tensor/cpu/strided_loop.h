// Walking N-d tensors of any strides, several operands at once, for the CPU kernels.
//
// A StridedLoop<N> holds one shape and N sets of element strides (one per operand, stride 0 where
// an operand is broadcast). Its constructor simplifies the layout: size-1 dims are dropped and
// neighbouring dims that follow one another in memory in every operand are merged, so contiguous
// operands become a single dim and the common case is one long run.
//
// run(begin, end, body) visits the linear indices [begin, end) of the shape (row-major) as runs
// along the innermost dim, calling
//     body(const int64_t* offsets /* [N] */, const int64_t* strides /* [N] */, int64_t count)
// once per run: operand k's elements are at offsets[k] + i * strides[k] for i in [0, count).
// Starting from any linear index lets each parallel_for chunk take its own slice of the range.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "tensor/shape.h"

namespace ember {
namespace cpu {

template <int N>
class StridedLoop {
public:
    StridedLoop(const Shape& shape, const std::array<Shape, N>& strides) {
        numel_ = shape.numel();
        rank_ = 0;
        for (int d = 0; d < shape.rank; ++d) {
            if (shape[d] == 1) continue;
            if (rank_ > 0 && mergeable(rank_ - 1, shape[d], strides, d)) {
                sizes_[rank_ - 1] *= shape[d];
                for (int k = 0; k < N; ++k) strides_[k][rank_ - 1] = strides[k][d];
                continue;
            }
            sizes_[rank_] = shape[d];
            for (int k = 0; k < N; ++k) strides_[k][rank_] = strides[k][d];
            ++rank_;
        }
        if (rank_ == 0) {  // a scalar, or only size-1 dims: one run of one element
            sizes_[0] = 1;
            for (int k = 0; k < N; ++k) strides_[k][0] = 0;
            rank_ = 1;
        }
    }

    int64_t numel() const { return numel_; }
    // The simplified layout: rank() dims (at least 1), outermost first.
    int rank() const { return rank_; }
    int64_t size(int d) const { return sizes_[d]; }
    int64_t stride(int operand, int d) const { return strides_[operand][d]; }

    template <typename Body>
    void run(int64_t begin, int64_t end, Body&& body) const {
        if (begin >= end) return;
        const int inner = rank_ - 1;
        int64_t index[MAX_DIMS];
        int64_t offsets[N] = {};
        int64_t rest = begin;
        for (int d = inner; d >= 0; --d) {
            index[d] = rest % sizes_[d];
            rest /= sizes_[d];
            for (int k = 0; k < N; ++k) offsets[k] += index[d] * strides_[k][d];
        }
        int64_t inner_strides[N];
        for (int k = 0; k < N; ++k) inner_strides[k] = strides_[k][inner];
        for (int64_t pos = begin; pos < end;) {
            int64_t count = std::min(sizes_[inner] - index[inner], end - pos);
            body(static_cast<const int64_t*>(offsets), static_cast<const int64_t*>(inner_strides),
                 count);
            pos += count;
            index[inner] += count;
            for (int k = 0; k < N; ++k) offsets[k] += count * inner_strides[k];
            // Carry into the outer dims, odometer style.
            for (int d = inner; d > 0 && index[d] == sizes_[d]; --d) {
                index[d] = 0;
                ++index[d - 1];
                for (int k = 0; k < N; ++k)
                    offsets[k] += strides_[k][d - 1] - sizes_[d] * strides_[k][d];
            }
        }
    }

private:
    // Can dim d (size `size`) be folded into the merged dim `at` just outside it?
    bool mergeable(int at, int64_t size, const std::array<Shape, N>& strides, int d) const {
        for (int k = 0; k < N; ++k)
            if (strides_[k][at] != strides[k][d] * size) return false;
        return true;
    }

    int64_t numel_ = 0;
    int rank_ = 0;
    int64_t sizes_[MAX_DIMS] = {};
    int64_t strides_[N][MAX_DIMS] = {};
};

// Elements per parallel_for chunk for cheap elementwise work.
constexpr int64_t ELEMENT_GRAIN = 32768;

// Rows per parallel_for chunk when each row costs about n elements of work.
inline int64_t row_grain(int64_t n) {
    return std::max<int64_t>(1, ELEMENT_GRAIN / std::max<int64_t>(n, 1));
}

}  // namespace cpu
}  // namespace ember
