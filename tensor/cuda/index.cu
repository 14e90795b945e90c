// CUDA indexing kernels: gather / scatter_add (PyTorch's semantics), index_select / index_add
// along one dim, one_hot, and the triangle masks behind triu / tril.
//
// Every index is checked on the device; a bad one is recorded (tensor/cuda/common.cuh) and the
// launcher throws on the host with the op, the index and the size, as the CPU does. That costs a
// stream synchronization per call.
//
// Determinism: scatter_add and index_add (and so embedding's backward) add without atomics, and
// every output element receives its contributions in index order, the CPU's order, so the sums
// are the same on every run and match the CPU's bit for bit.
//   scatter_add: a thread owns one "line" (every coordinate but `dim` fixed) and walks the index
//     along dim; no other thread touches that line's outputs.
//   index_add: a segmented reduction. The index list (1-D, typically the B*T token ids of an
//     embedding backward) is brought to the host, checked, and stably sorted by id; the
//     permutation and the segment bounds go back to the GPU, and one thread per (distinct id,
//     slice position) adds its segment's source slices in their original order. That gives
//     distinct-ids x slice-size threads (thousands x the embedding width) instead of one thread
//     per slice position walking the whole list; the price is one host round trip per call,
//     which the index check needs anyway.
#include <algorithm>
#include <numeric>
#include <vector>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/kernels.h"

namespace ember {
namespace cuda {
namespace {

Shape zero_dim(Shape s, int dim) {
    s[dim] = 0;
    return s;
}

Shape one_dim(Shape s, int dim) {
    s[dim] = 1;
    return s;
}

template <typename I>
__device__ __forceinline__ bool valid(I id, int64_t size) {
    return id >= 0 && (long long)id < (long long)size;
}

// out[p] = x[p with coordinate dim replaced by index[p]]. Layout: 0 out, 1 index, 2 x (dim 0).
template <typename T, typename I>
__global__ void gather_kernel(const T* x, const I* index, T* out, Layout<3> layout, int64_t n,
                              int64_t size, int64_t step, int dim, IndexError* error) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[3];
        layout.offsets(i, off);
        const I id = index[off[1]];
        if (!valid(id, size)) {
            report_bad_index(error, (long long)id, size, dim);
            out[off[0]] = T(0);
            continue;
        }
        out[off[0]] = x[off[2] + int64_t(id) * step];
    }
}

// One thread per line: out[line + index[k] * out_step] += src[line + k * src_step], k in order.
// Layout over index's shape with dim set to 1: 0 out, 1 index, 2 src.
template <typename T, typename I>
__global__ void scatter_add_kernel(T* out, const I* index, const T* src, Layout<3> layout,
                                   int64_t lines, int64_t L, int64_t out_step, int64_t index_step,
                                   int64_t src_step, int64_t size, int dim, IndexError* error) {
    GRID_STRIDE_LOOP(line, lines) {
        int64_t off[3];
        layout.offsets(line, off);
        for (int64_t k = 0; k < L; ++k) {
            const I id = index[off[1] + k * index_step];
            if (!valid(id, size)) {
                report_bad_index(error, (long long)id, size, dim);
                continue;
            }
            out[off[0] + int64_t(id) * out_step] += src[off[2] + k * src_step];
        }
    }
}

// out.select(dim, i) = x.select(dim, index[i]). Layout over out's shape: 0 out, 1 x (dim 0),
// 2 the index position (every stride 0 but dim's).
template <typename T, typename I>
__global__ void index_select_kernel(const T* x, const I* index, T* out, Layout<3> layout,
                                    int64_t n, int64_t size, int64_t step, int dim,
                                    IndexError* error) {
    GRID_STRIDE_LOOP(i, n) {
        int64_t off[3];
        layout.offsets(i, off);
        const I id = index[off[2]];
        if (!valid(id, size)) {
            report_bad_index(error, (long long)id, size, dim);
            out[off[0]] = T(0);
            continue;
        }
        out[off[0]] = x[off[1] + int64_t(id) * step];
    }
}

// One thread per (segment, slice position): out[pos + id_k * out_step] += src[pos + i * src_step]
// for the source rows i of segment k, in their original order. plan = [order (L) | segment starts
// (U + 1) | segment ids (U)], int64. Layout over src's shape with dim set to 1: 0 out, 1 src.
template <typename T>
__global__ void index_add_segments_kernel(T* out, const T* src, const long long* plan,
                                          Layout<2> layout, int64_t positions, int64_t L,
                                          int64_t segments, int64_t out_step, int64_t src_step) {
    const long long* order = plan;
    const long long* starts = plan + L;
    const long long* ids = starts + segments + 1;
    GRID_STRIDE_LOOP(e, segments * positions) {
        const int64_t seg = e / positions, pos = e % positions;
        int64_t off[2];
        layout.offsets(pos, off);
        T* o = out + off[0] + ids[seg] * out_step;
        T acc = *o;
        for (long long k = starts[seg]; k < starts[seg + 1]; ++k)
            acc += src[off[1] + order[k] * src_step];
        *o = acc;
    }
}

template <typename T, typename I>
__global__ void one_hot_kernel(const I* ids, int64_t ids_stride, T* out, int64_t n,
                               int64_t classes, IndexError* error) {
    GRID_STRIDE_LOOP(r, n) {
        const I c = ids[r * ids_stride];
        if (!valid(c, classes)) {
            report_bad_index(error, (long long)c, classes, r);
            continue;
        }
        out[r * classes + int64_t(c)] = T(1);
    }
}

// out (contiguous) = x where the triangle keeps it, else 0. Layout over x's shape: 0 out, 1 x.
template <typename T>
__global__ void triangle_kernel(const T* x, T* out, Layout<2> layout, int64_t n, int64_t rows,
                                int64_t cols, int64_t diagonal, bool upper) {
    GRID_STRIDE_LOOP(e, n) {
        int64_t off[2];
        layout.offsets(e, off);
        const int64_t j = e % cols, i = (e / cols) % rows;
        const bool keep = upper ? j - i >= diagonal : j - i <= diagonal;
        out[off[0]] = keep ? x[off[1]] : T(0);
    }
}

template <typename Fn>
void dispatch_value_index(DType value, DType index, const char* op, Fn&& fn) {
    dispatch_all(value, [&](auto value_tag) {
        dispatch_index(index, op, [&](auto index_tag) { fn(value_tag, index_tag); });
    });
}

void throw_if_bad_index(const char* op) {
    IndexError err;
    EMBER_CHECK(!end_index_check(&err), op, ": index ", err.value,
                " is out of range for dim ", err.where, " of size ", err.limit);
}

}  // namespace

void gather(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    const int64_t n = index.numel();
    if (n == 0) return;
    Layout<3> layout = make_layout<3>(index.shape(),
                                      {out.strides(), index.strides(), zero_dim(x.strides(), dim)});
    begin_index_check();
    dispatch_value_index(x.dtype(), index.dtype(), "gather", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        gather_kernel<T, I><<<grid_for(n), THREADS, 0, stream()>>>(
            x.data<T>(), index.data<I>(), out.data<T>(), layout, n, x.size(dim), x.stride(dim),
            dim, index_error_slot());
        CUDA_LAUNCHED();
    });
    throw_if_bad_index("gather");
}

void scatter_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    if (index.numel() == 0) return;
    const Shape lines_shape = one_dim(index.shape(), dim);
    const int64_t lines = lines_shape.numel(), L = index.size(dim);
    Layout<3> layout = make_layout<3>(
        lines_shape, {zero_dim(out.strides(), dim), index.strides(), src.strides()});
    begin_index_check();
    dispatch_value_index(out.dtype(), index.dtype(), "scatter_add", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        scatter_add_kernel<T, I><<<grid_for(lines), THREADS, 0, stream()>>>(
            out.data<T>(), index.data<I>(), src.data<T>(), layout, lines, L, out.stride(dim),
            index.stride(dim), src.stride(dim), out.size(dim), dim, index_error_slot());
        CUDA_LAUNCHED();
    });
    throw_if_bad_index("scatter_add");
}

void index_select(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    Shape position;  // walks the index list along dim
    position.rank = out.dim();
    position[dim] = index.stride(0);
    Layout<3> layout =
        make_layout<3>(out.shape(), {out.strides(), zero_dim(x.strides(), dim), position});
    begin_index_check();
    dispatch_value_index(x.dtype(), index.dtype(), "index_select", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        index_select_kernel<T, I><<<grid_for(n), THREADS, 0, stream()>>>(
            x.data<T>(), index.data<I>(), out.data<T>(), layout, n, x.size(dim), x.stride(dim),
            dim, index_error_slot());
        CUDA_LAUNCHED();
    });
    throw_if_bad_index("index_select");
}

void index_add(const Tensor& out, int dim, const Tensor& index, const Tensor& src) {
    const int64_t L = index.size(0), size = out.size(dim);
    const Shape slice_shape = one_dim(src.shape(), dim);
    const int64_t positions = slice_shape.numel();
    if (L == 0 || positions == 0) return;
    // The plan, on the host: check the ids, sort positions 0..L-1 stably by id, cut segments.
    const std::vector<int64_t> id = index.to_vector<int64_t>();  // waits for the stream
    for (int64_t v : id)
        EMBER_CHECK(v >= 0 && v < size, "index_add: index ", v, " is out of range for dim ", dim,
                    " of size ", size);
    std::vector<int64_t> order(static_cast<size_t>(L));
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return id[size_t(a)] < id[size_t(b)]; });
    std::vector<int64_t> starts, seg_ids;
    for (int64_t k = 0; k < L; ++k) {
        const int64_t v = id[size_t(order[size_t(k)])];
        if (k == 0 || v != seg_ids.back()) {
            starts.push_back(k);
            seg_ids.push_back(v);
        }
    }
    starts.push_back(L);
    const int64_t segments = int64_t(seg_ids.size());
    std::vector<int64_t> plan_host(order);
    plan_host.insert(plan_host.end(), starts.begin(), starts.end());
    plan_host.insert(plan_host.end(), seg_ids.begin(), seg_ids.end());
    Tensor plan = from_vector(plan_host, {int64_t(plan_host.size())}, out.device());

    Layout<2> layout =
        make_layout<2>(slice_shape, {zero_dim(out.strides(), dim), zero_dim(src.strides(), dim)});
    const int64_t work = segments * positions;
    dispatch_all(out.dtype(), [&](auto t) {
        using T = typename decltype(t)::type;
        index_add_segments_kernel<T><<<grid_for(work), THREADS, 0, stream()>>>(
            out.data<T>(), src.data<T>(), reinterpret_cast<const long long*>(plan.data<int64_t>()),
            layout, positions, L, segments, out.stride(dim), src.stride(dim));
        CUDA_LAUNCHED();
    });
}

void one_hot(const Tensor& ids, const Tensor& out) {
    fill(out, 0);
    const int64_t n = out.size(0), classes = out.size(1);
    if (n == 0) return;
    begin_index_check();
    dispatch_value_index(out.dtype(), ids.dtype(), "one_hot", [&](auto t, auto i) {
        using T = typename decltype(t)::type;
        using I = typename decltype(i)::type;
        one_hot_kernel<T, I><<<grid_for(n), THREADS, 0, stream()>>>(
            ids.data<I>(), ids.stride(0), out.data<T>(), n, classes, index_error_slot());
        CUDA_LAUNCHED();
    });
    IndexError err;
    EMBER_CHECK(!end_index_check(&err), "one_hot: class ", err.value, " is out of range for ",
                err.limit, " classes");
}

void triangle(const Tensor& x, int64_t diagonal, bool upper, const Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const int64_t rows = out.size(-2), cols = out.size(-1);
    Layout<2> layout = make_layout<2>(x.shape(), {out.strides(), x.strides()});
    dispatch_all(out.dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        triangle_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(x.data<T>(), out.data<T>(),
                                                                  layout, n, rows, cols, diagonal,
                                                                  upper);
        CUDA_LAUNCHED();
    });
}

}  // namespace cuda
}  // namespace ember
