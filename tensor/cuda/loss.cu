// CUDA cross-entropy fused with log-softmax, for logits (N, C) and class ids (N). The formulas,
// label smoothing and ignore_index are those of tensor/cpu/loss.cpp:
//
//   loss_r   = -((1 - eps) * logp[r, t_r] + eps / C * sum_c logp[r, c])
//   loss     = mean of loss_r over the rows whose target is not ignore_index (0 if there are none)
//   dlogits  = grad / counted * (softmax - ((1 - eps) * onehot + eps / C)), 0 on ignored rows
//
// Forward: one warp or block per row writes the row's log-probs and its loss; then one block adds
// the row losses in a fixed order (reproducible, no atomics) into the mean, and the count of
// counted rows is copied back to the host (the front-end returns it). A target out of range is
// recorded on the device and thrown on the host, naming the row.
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"

namespace ember {
namespace cuda {
namespace {

template <typename T, typename I, bool WARP>
__global__ void ce_rows_kernel(const T* x, const I* targets, int64_t target_stride, T* log_probs,
                               double* row_loss, int64_t N, int64_t C, long long ignore_index,
                               double smoothing, IndexError* error) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, N) {
        const T* xr = x + row * C;
        T* lr = log_probs + row * C;
        const auto [m, s] = row_max_sum_exp(g, xr, C, scratch);
        const T lse = T(log(s));
        double sum_lp = 0;
        for (int64_t j = g.lane(); j < C; j += g.size()) {
            const T v = (xr[j] - m) - lse;
            lr[j] = v;
            sum_lp += double(v);
        }
        sum_lp = g.reduce(sum_lp, SumOp{}, 0.0, scratch);
        if (g.lane() == 0) {
            const long long t = (long long)targets[row * target_stride];
            double loss = 0;
            if (t != ignore_index) {
                if (t < 0 || t >= C) {
                    report_bad_index(error, t, C, row);
                } else {
                    // logp[t] recomputed as written above (another lane wrote lr[t]).
                    const T lp_t = (xr[t] - m) - lse;
                    const double smooth = smoothing > 0 ? sum_lp / double(C) : 0;
                    loss = -((1 - smoothing) * double(lp_t) + smoothing * smooth);
                }
            }
            row_loss[row] = loss;
        }
    }
}

// loss[0] = mean of row_loss over the counted rows; counted[0] = their number. One block.
template <typename I>
__global__ void ce_mean_kernel(const double* row_loss, const I* targets, int64_t target_stride,
                               int64_t N, long long ignore_index, double* total_out,
                               long long* counted) {
    __shared__ double scratch_d[32];
    __shared__ long long scratch_n[32];
    double s = 0;
    long long n = 0;
    for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
        if ((long long)targets[r * target_stride] == ignore_index) continue;
        s += row_loss[r];
        ++n;
    }
    s = block_reduce(s, SumOp{}, 0.0, scratch_d);
    n = block_reduce(n, SumOp{}, 0ll, scratch_n);
    if (threadIdx.x == 0) {
        *total_out = s;
        *counted = n;
    }
}

template <typename T>
__global__ void ce_finish_kernel(const double* total, const long long* counted, T* loss) {
    if (threadIdx.x == 0 && blockIdx.x == 0)
        loss[0] = *counted > 0 ? T(*total / double(*counted)) : T(0);
}

template <typename T, typename I>
__global__ void ce_backward_kernel(const T* log_probs, const I* targets, int64_t target_stride,
                                   T* dlogits, int64_t N, int64_t C, long long ignore_index,
                                   T scale, T on, T off, long long counted, IndexError* error) {
    GRID_STRIDE_LOOP(e, N * C) {
        const int64_t r = e / C, c = e % C;
        const long long t = (long long)targets[r * target_stride];
        if (t == ignore_index || counted == 0) {
            dlogits[e] = T(0);
            continue;
        }
        if (t < 0 || t >= C) {
            report_bad_index(error, t, C, r);
            dlogits[e] = T(0);
            continue;
        }
        dlogits[e] = scale * (exp(log_probs[e]) - (c == t ? on : off));
    }
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                           double label_smoothing, const Tensor& log_probs, const Tensor& loss,
                           int64_t* counted) {
    const int64_t N = logits.size(0), C = logits.size(1);
    Tensor row_loss = make_tensor({N + 2}, DType::F64, Device::cuda());  // + total and count
    double* rl = row_loss.data<double>();
    double* total = rl + N;
    long long* count = reinterpret_cast<long long*>(rl + N + 1);
    begin_index_check();
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            if (C > 0)
                launch_rows(N, C, [&](auto warp, unsigned grid, int threads) {
                    ce_rows_kernel<T, I, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                        logits.data<T>(), targets.data<I>(), targets.stride(0), log_probs.data<T>(),
                        rl, N, C, (long long)ignore_index, label_smoothing, index_error_slot());
                });
            else if (N > 0)
                CUDA_CHECK(cudaMemsetAsync(rl, 0, size_t(N) * sizeof(double), stream()));
            ce_mean_kernel<I><<<1, 1024, 0, stream()>>>(rl, targets.data<I>(), targets.stride(0),
                                                        N, (long long)ignore_index, total, count);
            CUDA_LAUNCHED();
            ce_finish_kernel<T><<<1, 32, 0, stream()>>>(total, count, loss.data<T>());
            CUDA_LAUNCHED();
        });
    });
    IndexError err;
    const bool bad = end_index_check(&err);  // synchronizes the stream
    EMBER_CHECK(!bad, "cross_entropy: target ", err.value, " in row ", err.where,
                " is out of range for ", err.limit, " classes (and is not ignore_index ",
                ignore_index, ")");
    long long host_count = 0;
    CUDA_CHECK(cudaMemcpy(&host_count, count, sizeof host_count, cudaMemcpyDeviceToHost));
    *counted = int64_t(host_count);
}

void cross_entropy_backward(double grad, const Tensor& log_probs, const Tensor& targets,
                            int64_t ignore_index, double label_smoothing, int64_t counted,
                            const Tensor& dlogits) {
    const int64_t N = log_probs.size(0), C = log_probs.size(1);
    if (N * C == 0) return;
    begin_index_check();
    dispatch_float(log_probs.dtype(), "cross_entropy_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dispatch_index(targets.dtype(), "cross_entropy_backward", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            const T scale = counted > 0 ? T(grad / double(counted)) : T(0);
            const T on = T(1 - label_smoothing + label_smoothing / double(C));
            const T off = T(label_smoothing / double(C));
            ce_backward_kernel<T, I><<<grid_for(N * C), THREADS, 0, stream()>>>(
                log_probs.data<T>(), targets.data<I>(), targets.stride(0), dlogits.data<T>(), N, C,
                (long long)ignore_index, scale, on, off, (long long)counted, index_error_slot());
            CUDA_LAUNCHED();
        });
    });
    IndexError err;
    EMBER_CHECK(!end_index_check(&err), "cross_entropy_backward: target ", err.value, " in row ",
                err.where, " is out of range for ", err.limit, " classes");
}

}  // namespace cuda
}  // namespace ember
