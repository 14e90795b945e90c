// CPU indexing kernels: gather / scatter_add (PyTorch's semantics), index_select / index_add
// along one dim, one_hot, and the triangle masks behind triu / tril.
//
// Every index is checked against the size it indexes; a bad one throws an error naming the op,
// the index and the size. Kernels that add into their output (scatter_add, index_add) never let
// two threads touch the same element, so their sums do not depend on the thread count.
#include "tensor/cpu/kernels.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

Shape without(Shape s, int dim) {
    s.erase(dim);
    return s;
}

// Strides that walk t over another shape of the same rank, ignoring dim (its offset comes from
// an index instead).
Shape strides_without_dim(const Tensor& t, int dim) {
    Shape s = t.strides();
    s[dim] = 0;
    return s;
}

template <typename I>
int64_t checked(const char* op, I id, int64_t size, int dim) {
    EMBER_CHECK(id >= 0 && int64_t(id) < size, op, ": index ", int64_t(id),
                " is out of range for dim ", dim, " of size ", size);
    return int64_t(id);
}

// out[p] = x[p with coordinate `dim` replaced by index[p]], for every position p of index.
template <typename T, typename I>
void gather_typed(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    const T* xp = x.data<T>();        // any strides; index.size(d) <= x.size(d) for d != dim
    const I* ip = index.data<I>();    // any strides
    T* op = out.data<T>();            // index's shape
    const int64_t size = x.size(dim), step = x.stride(dim);
    StridedLoop<3> loop(index.shape(),
                        {out.strides(), index.strides(), strides_without_dim(x, dim)});
    parallel_for(loop.numel(), ELEMENT_GRAIN, [&](int64_t begin, int64_t end) {
        loop.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
            for (int64_t i = 0; i < n; ++i) {
                int64_t id = checked("gather", ip[off[1] + i * st[1]], size, dim);
                op[off[0] + i * st[0]] = xp[off[2] + i * st[2] + id * step];
            }
        });
    });
}

// out[p with coordinate `dim` replaced by index[p]] += src[p]. Serial: two positions may hit
// the same element, and a fixed order keeps the sum reproducible.
template <typename T, typename I>
void scatter_add_typed(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    T* op = out.data<T>();            // any strides, written in place
    const I* ip = index.data<I>();    // any strides
    const T* sp = src.data<T>();      // index.size(d) <= src.size(d)
    const int64_t size = out.size(dim), step = out.stride(dim);
    StridedLoop<3> loop(index.shape(),
                        {strides_without_dim(out, dim), index.strides(), src.strides()});
    loop.run(0, loop.numel(), [&](const int64_t* off, const int64_t* st, int64_t n) {
        for (int64_t i = 0; i < n; ++i) {
            int64_t id = checked("scatter_add", ip[off[1] + i * st[1]], size, dim);
            op[off[0] + i * st[0] + id * step] += sp[off[2] + i * st[2]];
        }
    });
}

// out.select(dim, i) = x.select(dim, index[i]); threads split the i.
template <typename T, typename I>
void index_select_typed(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    const T* xp = x.data<T>();      // any strides
    const I* ip = index.data<I>();  // (L), any stride
    T* op = out.data<T>();          // x's shape with L at dim
    const int64_t L = index.size(0), size = x.size(dim);
    StridedLoop<2> slice(without(out.shape(), dim),
                         {without(out.strides(), dim), without(x.strides(), dim)});
    parallel_for(L, row_grain(slice.numel()), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            int64_t id = checked("index_select", ip[i * index.stride(0)], size, dim);
            T* o = op + i * out.stride(dim);
            const T* s = xp + id * x.stride(dim);
            slice.run(0, slice.numel(), [&](const int64_t* off, const int64_t* st, int64_t n) {
                for (int64_t k = 0; k < n; ++k) o[off[0] + k * st[0]] = s[off[1] + k * st[1]];
            });
        }
    });
}

// out.select(dim, index[i]) += src.select(dim, i). Threads split the positions within a slice and
// each adds the i in order, so repeated indices never race and the sums are reproducible.
template <typename T, typename I>
void index_add_typed(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    T* op = out.data<T>();          // any strides, written in place
    const I* ip = index.data<I>();  // (L), any stride
    const T* sp = src.data<T>();    // out's shape with L at dim
    const int64_t L = index.size(0), size = out.size(dim);
    for (int64_t i = 0; i < L; ++i) checked("index_add", ip[i * index.stride(0)], size, dim);
    StridedLoop<2> slice(without(src.shape(), dim),
                         {without(out.strides(), dim), without(src.strides(), dim)});
    parallel_for(slice.numel(), row_grain(L), [&](int64_t begin, int64_t end) {
        for (int64_t i = 0; i < L; ++i) {
            T* o = op + int64_t(ip[i * index.stride(0)]) * out.stride(dim);
            const T* s = sp + i * src.stride(dim);
            slice.run(begin, end, [&](const int64_t* off, const int64_t* st, int64_t n) {
                for (int64_t k = 0; k < n; ++k) o[off[0] + k * st[0]] += s[off[1] + k * st[1]];
            });
        }
    });
}

// fn(value_tag, index_tag) with the element type of the values and of the indices.
template <typename Fn>
void dispatch_value_index(DType value, DType index, const char* op, Fn&& fn) {
    dispatch_all(value, [&](auto value_tag) {
        dispatch_index(index, op, [&](auto index_tag) { fn(value_tag, index_tag); });
    });
}

}  // namespace

void gather(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    dispatch_value_index(x.dtype(), index.dtype(), "gather", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        gather_typed<T, I>(x, dim, index, out);
    });
}

void scatter_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    dispatch_value_index(out.dtype(), index.dtype(), "scatter_add", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        scatter_add_typed<T, I>(out, dim, index, src);
    });
}

void index_select(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    dispatch_value_index(x.dtype(), index.dtype(), "index_select", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        index_select_typed<T, I>(x, dim, index, out);
    });
}

void index_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    dispatch_value_index(out.dtype(), index.dtype(), "index_add", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        index_add_typed<T, I>(out, dim, index, src);
    });
}

void one_hot(const Tensor& ids, const Tensor& out) {
    fill(out, 0);
    const int64_t n = out.size(0), classes = out.size(1);
    dispatch_value_index(out.dtype(), ids.dtype(), "one_hot", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        const I* ip = ids.data<I>();  // (n), any stride
        T* op = out.data<T>();        // (n, classes), contiguous
        for (int64_t r = 0; r < n; ++r) {
            I c = ip[r * ids.stride(0)];
            EMBER_CHECK(c >= 0 && int64_t(c) < classes, "one_hot: class ", int64_t(c),
                        " is out of range for ", classes, " classes");
            op[r * classes + int64_t(c)] = T(1);
        }
    });
}

void triangle(const Tensor& x, int64_t diagonal, bool upper, const Tensor& out) {
    copy(x, out);
    const int64_t rows = out.size(-2), cols = out.size(-1);
    const int64_t matrices = rows * cols == 0 ? 0 : out.numel() / (rows * cols);
    dispatch_all(out.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* op = out.data<T>();  // (matrices, rows, cols), contiguous
        parallel_for(matrices * rows, row_grain(cols), [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                const int64_t i = r % rows;
                T* row = op + r * cols;
                for (int64_t j = 0; j < cols; ++j) {
                    bool keep = upper ? j - i >= diagonal : j - i <= diagonal;
                    if (!keep) row[j] = T(0);
                }
            }
        });
    });
}

}  // namespace cpu
}  // namespace ember
