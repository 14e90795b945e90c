// CUDA reductions over the last dim of a contiguous (rows, n) tensor: sum, mean, max, min,
// argmax and logsumexp. The front-end (tensor/ops_reduce.cpp) moves the reduced dims to the end,
// so this one row kernel family serves every reduction. Rows map to warps or blocks as
// tensor/cuda/rows.cuh describes; sums accumulate in double (int64 for integers), as on the CPU.
//
// A few long rows (a whole-tensor sum is one row) would leave all but a few multiprocessors idle,
// so there the row is split: each block of a (splits, rows) grid reduces one chunk of a row into
// a partial, and a second kernel combines each row's partials in chunk order. The split depends
// on the shape alone, so the result is the same run to run and GPU to GPU.
//
// Also here: column sums of a contiguous (rows, cols) tensor (a bias gradient: the reduced dims
// lead), without the transposing copy the row kernels would need; and the sum of squares over a
// list of tensors (the gradient norm of clip_grad_norm) in one launch and one host sync.
#include <limits>

#include <vector>

#include "tensor/cuda/cuda.h"
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"
#include "tensor/cuda/runtime.h"

namespace ember {
namespace cuda {
namespace {

// Sum (mean = true: divided by n, 0 / 0 = NaN for an empty row, as on the CPU).
template <typename T, bool WARP>
__global__ void sum_rows_kernel(const T* x, T* out, int64_t rows, int64_t n, bool mean) {
    using A = Acc<T>;
    ROW_SCRATCH(A, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        A s = 0;
        for (int64_t j = g.lane(); j < n; j += g.size()) s += A(xr[j]);
        s = g.reduce(s, SumOp{}, A(0), scratch);
        if (g.lane() == 0) out[row] = mean ? T(double(s) / double(n)) : T(s);
    }
}

// A candidate for max / min / argmax: a value and its index; index -1 is "nothing yet".
template <typename T>
struct Pick {
    T value;
    long long index;
};

template <typename T>
__device__ __forceinline__ Pick<T> shfl_xor(Pick<T> p, int mask) {
    return {__shfl_xor_sync(0xffffffffu, p.value, mask),
            __shfl_xor_sync(0xffffffffu, p.index, mask)};
}

// The better of two picks: a NaN beats everything (the first NaN, as on the CPU), then the larger
// (MAX) or smaller value, then the smaller index. The order of combination never matters.
template <typename T>
struct PickOp {
    bool max;
    __device__ __forceinline__ Pick<T> operator()(Pick<T> a, Pick<T> b) const {
        if (a.index < 0) return b;
        if (b.index < 0) return a;
        const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
        if (a_nan || b_nan) {
            if (a_nan && b_nan) return a.index < b.index ? a : b;
            return a_nan ? a : b;
        }
        if (a.value != b.value) return (max ? a.value > b.value : a.value < b.value) ? a : b;
        return a.index < b.index ? a : b;
    }
};

// Max or min into values (or, with indices non-null, argmax into indices).
template <typename T, bool WARP>
__global__ void pick_rows_kernel(const T* x, T* values, long long* indices, int64_t rows,
                                 int64_t n, bool max) {
    ROW_SCRATCH(Pick<T>, scratch);
    RowGroup<WARP> g;
    const PickOp<T> op{max};
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        Pick<T> best{T(0), -1};
        for (int64_t j = g.lane(); j < n; j += g.size()) best = op(best, Pick<T>{xr[j], j});
        best = g.reduce(best, op, Pick<T>{T(0), -1}, scratch);
        if (g.lane() == 0) {
            if (indices) indices[row] = best.index < 0 ? 0 : best.index;
            else values[row] = best.value;
        }
    }
}

// log(sum(exp(x))) = m + log(sum(exp(x - m))), m the row max; a non-finite max is the answer.
template <typename T, bool WARP>
__global__ void logsumexp_rows_kernel(const T* x, T* out, int64_t rows, int64_t n) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * n;
        T m = neg_inf<T>();
        for (int64_t j = g.lane(); j < n; j += g.size()) m = MaxOp{}(m, xr[j]);
        // Reduce the max in double: one scratch type for both reductions.
        double md = g.reduce(double(m), MaxOp{}, neg_inf<double>(), scratch);
        m = T(md);
        double s = 0;
        if (isfinite(md))
            for (int64_t j = g.lane(); j < n; j += g.size()) s += double(exp(xr[j] - m));
        s = g.reduce(s, SumOp{}, 0.0, scratch);
        if (g.lane() == 0) out[row] = isfinite(md) ? T(md + log(s)) : m;
    }
}

// ---- split rows: partials per (row, chunk), then one block per row combines them ----

constexpr int SPLIT_THREADS = 256;
constexpr int64_t SPLIT_CHUNK = 16384;  // elements per block: 64 per thread
constexpr int64_t SPLIT_MAX_ROWS = 64;  // more rows than this fill the GPU one block per row
constexpr int64_t SPLIT_MAX = 1024;     // chunks per row at most

// Sum of chunk blockIdx.x of row blockIdx.y into partials[row * splits + chunk].
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
sum_chunks_kernel(const T* x, Acc<T>* partials, int64_t n, int64_t chunk) {  // x (rows, n)
    using A = Acc<T>;
    __shared__ A scratch[32];
    const T* xr = x + int64_t(blockIdx.y) * n;
    const int64_t begin = int64_t(blockIdx.x) * chunk, end = min(n, begin + chunk);
    A s = 0;
    for (int64_t j = begin + threadIdx.x; j < end; j += SPLIT_THREADS) s += A(xr[j]);
    s = block_reduce(s, SumOp{}, A(0), scratch);
    if (threadIdx.x == 0) partials[int64_t(blockIdx.y) * gridDim.x + blockIdx.x] = s;
}

template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
sum_partials_kernel(const Acc<T>* partials, T* out, int64_t splits, int64_t n, bool mean) {
    using A = Acc<T>;
    __shared__ A scratch[32];
    const Acc<T>* pr = partials + int64_t(blockIdx.x) * splits;  // (rows, splits)
    A s = 0;
    for (int64_t k = threadIdx.x; k < splits; k += SPLIT_THREADS) s += pr[k];
    s = block_reduce(s, SumOp{}, A(0), scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = mean ? T(double(s) / double(n)) : T(s);
}

template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
pick_chunks_kernel(const T* x, Pick<T>* partials, int64_t n, int64_t chunk, bool max) {
    __shared__ Pick<T> scratch[32];
    const PickOp<T> op{max};
    const T* xr = x + int64_t(blockIdx.y) * n;
    const int64_t begin = int64_t(blockIdx.x) * chunk, end = min(n, begin + chunk);
    Pick<T> best{T(0), -1};
    for (int64_t j = begin + threadIdx.x; j < end; j += SPLIT_THREADS) best = op(best, Pick<T>{xr[j], j});
    best = block_reduce(best, op, Pick<T>{T(0), -1}, scratch);
    if (threadIdx.x == 0) partials[int64_t(blockIdx.y) * gridDim.x + blockIdx.x] = best;
}

template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
pick_partials_kernel(const Pick<T>* partials, T* values, long long* indices, int64_t splits,
                     bool max) {
    __shared__ Pick<T> scratch[32];
    const PickOp<T> op{max};
    const Pick<T>* pr = partials + int64_t(blockIdx.x) * splits;
    Pick<T> best{T(0), -1};
    for (int64_t k = threadIdx.x; k < splits; k += SPLIT_THREADS) best = op(best, pr[k]);
    best = block_reduce(best, op, Pick<T>{T(0), -1}, scratch);
    if (threadIdx.x == 0) {
        if (indices) indices[blockIdx.x] = best.index < 0 ? 0 : best.index;
        else values[blockIdx.x] = best.value;
    }
}

// Chunks per row for the split path, or 0 when one group per row is the better plan.
int64_t row_splits(int64_t rows, int64_t n) {
    if (rows > SPLIT_MAX_ROWS || n < 2 * SPLIT_CHUNK) return 0;
    const int64_t splits = (n + SPLIT_CHUNK - 1) / SPLIT_CHUNK;
    return splits < SPLIT_MAX ? splits : SPLIT_MAX;
}

// ---- column sums: x (rows, cols) -> out (cols) ----
// A block is 32 columns by 8 row lanes: each thread sums every 8th row of its chunk for one
// column (a warp reads 32 neighbouring columns: coalesced), the 8 lanes are added in order in
// shared memory, and each chunk of rows leaves one partial row; a second kernel adds the chunks'
// partials in order.
constexpr int COL_TILE = 32, COL_LANES = 8;
constexpr int64_t COL_CHUNK_ROWS = 256;
constexpr int64_t COL_MAX_CHUNKS = 256;

template <typename T>
__global__ void __launch_bounds__(COL_TILE * COL_LANES)
col_chunks_kernel(const T* x, Acc<T>* partials, int64_t rows, int64_t cols, int64_t chunk) {
    using A = Acc<T>;
    __shared__ A lanes[COL_LANES][COL_TILE + 1];
    const int64_t c = int64_t(blockIdx.x) * COL_TILE + threadIdx.x;
    const int64_t begin = int64_t(blockIdx.y) * chunk, end = min(rows, begin + chunk);
    A s = 0;
    if (c < cols)
        for (int64_t r = begin + threadIdx.y; r < end; r += COL_LANES) s += A(x[r * cols + c]);
    lanes[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        A total = 0;
        for (int k = 0; k < COL_LANES; ++k) total += lanes[k][threadIdx.x];
        partials[int64_t(blockIdx.y) * cols + c] = total;  // (chunks, cols)
    }
}

template <typename T>
__global__ void col_partials_kernel(const Acc<T>* partials, T* out, int64_t chunks, int64_t cols,
                                    int64_t rows, bool mean) {
    GRID_STRIDE_LOOP(c, cols) {
        Acc<T> s = 0;
        for (int64_t k = 0; k < chunks; ++k) s += partials[k * cols + c];
        out[c] = mean ? T(double(s) / double(rows)) : T(s);
    }
}

// ---- the sum of squares over many tensors ----
// Every tensor is cut into chunks of SQ_CHUNK elements; block b finds its tensor by a binary
// search over the tensors' first chunk numbers, squares and sums its chunk in double, and writes
// one partial; one block then adds the partials in chunk order.
constexpr int SQ_THREADS = 256;
constexpr int64_t SQ_CHUNK = 16384;

struct SquaresSegment {
    const void* data;
    long long numel;
    long long first_chunk;
    int is_f64;
};

__global__ void __launch_bounds__(SQ_THREADS)
squares_chunks_kernel(const SquaresSegment* segments, int count, double* partials) {
    __shared__ double scratch[32];
    const long long b = blockIdx.x;
    int lo = 0, hi = count - 1;  // the last segment whose first_chunk <= b
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (segments[mid].first_chunk <= b) lo = mid;
        else hi = mid - 1;
    }
    const SquaresSegment seg = segments[lo];
    const int64_t begin = (b - seg.first_chunk) * SQ_CHUNK;
    const int64_t end = min(int64_t(seg.numel), begin + SQ_CHUNK);
    double s = 0;
    if (seg.is_f64) {
        const double* x = static_cast<const double*>(seg.data);
        for (int64_t i = begin + threadIdx.x; i < end; i += SQ_THREADS) s += x[i] * x[i];
    } else {
        const float* x = static_cast<const float*>(seg.data);
        for (int64_t i = begin + threadIdx.x; i < end; i += SQ_THREADS) {
            const double v = x[i];
            s += v * v;
        }
    }
    s = block_reduce(s, SumOp{}, 0.0, scratch);
    if (threadIdx.x == 0) partials[b] = s;
}

__global__ void __launch_bounds__(1024) sum_doubles_kernel(const double* partials, int64_t n, double* out) {
    __shared__ double scratch[32];
    double s = 0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s += partials[k];
    s = block_reduce(s, SumOp{}, 0.0, scratch);
    if (threadIdx.x == 0) *out = s;
}

}  // namespace

void reduce_rows(ReduceOp op, const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), n = x.size(1);
    if (rows == 0) return;
    const int64_t splits = op == ReduceOp::LogSumExp ? 0 : row_splits(rows, n);
    auto typed = [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* xp = x.data<T>();  // (rows, n)
        if (splits > 0) {
            const int64_t chunk = (n + splits - 1) / splits;
            const dim3 grid = dim3(unsigned(splits), unsigned(rows));
            // Room for rows * splits partials of either kind (Pick<T> is at most 16 bytes).
            Tensor partials = make_tensor({rows * splits * 2}, DType::F64, Device::cuda());
            if (op == ReduceOp::Sum || op == ReduceOp::Mean) {
                auto* pp = reinterpret_cast<Acc<T>*>(partials.data<double>());
                sum_chunks_kernel<T><<<grid, SPLIT_THREADS, 0, stream()>>>(xp, pp, n, chunk);
                CUDA_LAUNCHED();
                sum_partials_kernel<T><<<unsigned(rows), SPLIT_THREADS, 0, stream()>>>(
                    pp, out.data<T>(), splits, n, op == ReduceOp::Mean);
            } else {
                auto* pp = reinterpret_cast<Pick<T>*>(partials.data<double>());
                const bool max = op != ReduceOp::Min;
                pick_chunks_kernel<T><<<grid, SPLIT_THREADS, 0, stream()>>>(xp, pp, n, chunk, max);
                CUDA_LAUNCHED();
                pick_partials_kernel<T><<<unsigned(rows), SPLIT_THREADS, 0, stream()>>>(
                    pp, op == ReduceOp::ArgMax ? nullptr : out.data<T>(),
                    op == ReduceOp::ArgMax ? reinterpret_cast<long long*>(out.data<int64_t>())
                                           : nullptr,
                    splits, max);
            }
            CUDA_LAUNCHED();
            return;
        }
        launch_rows(rows, n, [&](auto warp, unsigned grid, int threads) {
            constexpr bool W = decltype(warp)::value;
            switch (op) {
                case ReduceOp::Sum:
                case ReduceOp::Mean:
                    sum_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, out.data<T>(), rows, n, op == ReduceOp::Mean);
                    break;
                case ReduceOp::Max:
                case ReduceOp::Min:
                    pick_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, out.data<T>(), nullptr, rows, n, op == ReduceOp::Max);
                    break;
                case ReduceOp::ArgMax:
                    pick_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                        xp, nullptr, reinterpret_cast<long long*>(out.data<int64_t>()), rows, n,
                        true);
                    break;
                case ReduceOp::LogSumExp:
                    if constexpr (std::is_floating_point<T>::value)
                        logsumexp_rows_kernel<T, W><<<grid, threads, 0, stream()>>>(
                            xp, out.data<T>(), rows, n);
                    break;
            }
        });
    };
    if (op == ReduceOp::Mean || op == ReduceOp::LogSumExp)
        dispatch_float(x.dtype(), op == ReduceOp::Mean ? "mean" : "logsumexp", typed);
    else
        dispatch_all(x.dtype(), typed);
}

void reduce_cols(bool mean, const Tensor& x, const Tensor& out) {
    const int64_t rows = x.size(0), cols = x.size(1);
    if (cols == 0) return;
    int64_t chunks = (rows + COL_CHUNK_ROWS - 1) / COL_CHUNK_ROWS;
    if (chunks > COL_MAX_CHUNKS) chunks = COL_MAX_CHUNKS;
    if (chunks < 1) chunks = 1;
    const int64_t chunk = (rows + chunks - 1) / chunks;
    auto typed = [&](auto tag) {
        using T = typename decltype(tag)::type;
        Tensor partials = make_tensor({chunks * cols}, DType::F64, Device::cuda());  // Acc<T>: 8 B
        auto* pp = reinterpret_cast<Acc<T>*>(partials.data<double>());
        const int64_t tiles = (cols + COL_TILE - 1) / COL_TILE;
        EMBER_CHECK(tiles < (int64_t(1) << 31), "sum: ", cols, " columns are too many for one launch");
        col_chunks_kernel<T><<<dim3(unsigned(tiles), unsigned(chunks)), dim3(COL_TILE, COL_LANES), 0,
                               stream()>>>(x.data<T>(), pp, rows, cols, chunk);
        CUDA_LAUNCHED();
        col_partials_kernel<T><<<grid_for(cols), THREADS, 0, stream()>>>(pp, out.data<T>(), chunks,
                                                                         cols, rows, mean);
        CUDA_LAUNCHED();
    };
    if (mean) dispatch_float(x.dtype(), "mean", typed);
    else dispatch_all(x.dtype(), typed);
}

double sum_of_squares(const std::vector<Tensor>& tensors) {
    std::vector<SquaresSegment> segments;
    long long chunks = 0;
    for (const Tensor& t : tensors) {
        EMBER_CHECK(t.device().is_cuda() && t.is_contiguous() &&
                        (t.dtype() == DType::F32 || t.dtype() == DType::F64),
                    "cuda::sum_of_squares: every tensor must be a contiguous f32 or f64 CUDA "
                    "tensor, got ", t.dtype(), " ", t.shape(), " on ", t.device());
        if (t.numel() == 0) continue;
        segments.push_back({t.raw_data(), (long long)t.numel(), chunks, t.dtype() == DType::F64});
        chunks += (t.numel() + SQ_CHUNK - 1) / SQ_CHUNK;
    }
    if (segments.empty()) return 0;
    EMBER_CHECK(chunks < (1ll << 31), "cuda::sum_of_squares: ", chunks, " chunks are too many");
    const int64_t seg_bytes = int64_t(segments.size() * sizeof(SquaresSegment));
    // One device buffer: the segment table, then the partials, then the result.
    const int64_t seg_doubles = (seg_bytes + 7) / 8;
    Tensor buffer = make_tensor({seg_doubles + chunks + 1}, DType::F64, Device::cuda());
    double* base = buffer.data<double>();
    auto* dev_segments = reinterpret_cast<SquaresSegment*>(base);
    double* partials = base + seg_doubles;
    double* result = partials + chunks;
    copy_to_device(dev_segments, segments.data(), size_t(seg_bytes));
    squares_chunks_kernel<<<unsigned(chunks), SQ_THREADS, 0, stream()>>>(
        dev_segments, int(segments.size()), partials);
    CUDA_LAUNCHED();
    sum_doubles_kernel<<<1, 1024, 0, stream()>>>(partials, chunks, result);
    CUDA_LAUNCHED();
    double host = 0;
    copy_to_host(&host, result, sizeof host);  // the one synchronization
    return host;
}

}  // namespace cuda
}  // namespace ember
