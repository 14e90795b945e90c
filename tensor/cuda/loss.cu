// CUDA cross-entropy fused with log-softmax, for logits (N, C) and class ids (N). The formulas,
// label smoothing and ignore_index are those of tensor/cpu/loss.cpp:
//
//   loss_r   = -((1 - eps) * logp[r, t_r] + eps / C * sum_c logp[r, c])
//   loss     = mean of loss_r over the rows whose target is not ignore_index (0 if there are none)
//   dlogits  = grad / counted * (softmax - ((1 - eps) * onehot + eps / C)), 0 on ignored rows
//
// Forward: one warp or block per row writes the row's log-probs and its loss; then one block adds
// the row losses in a fixed order (reproducible, no atomics) into the mean. The count of counted
// rows (the front-end returns it) and any target out of range (thrown on the host, naming the
// row) come back together in one copy: one host synchronization per forward.
//
// Backward: one warp or block per row again, the row's target read once, the upstream gradient
// read on the device, no division per element.
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"
#include "tensor/cuda/runtime.h"

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

// What the host reads back after the forward, in one copy.
struct CeResult {
    IndexError error;
    long long counted;
};

// loss[0] = mean of row_loss over the counted rows; result->counted = their number. One block.
template <typename T, typename I>
__global__ void ce_mean_kernel(const double* row_loss, const I* targets, int64_t target_stride,
                               int64_t N, long long ignore_index, T* loss, CeResult* result) {
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
        loss[0] = n > 0 ? T(s / double(n)) : T(0);
        result->counted = n;
    }
}

// dlogits = grad / counted * (softmax - ((1 - eps) * onehot + eps / C)), 0 on ignored rows.
template <typename T, typename I, bool WARP>
__global__ void ce_backward_kernel(const T* grad, const T* log_probs, const I* targets,
                                   int64_t target_stride, T* dlogits, int64_t N, int64_t C,
                                   long long ignore_index, double smoothing, long long counted,
                                   IndexError* error) {  // log_probs, dlogits (N, C)
    RowGroup<WARP> g;
    const T off = T(smoothing / double(C)), on = T(1 - smoothing) + off;
    const T scale = counted > 0 ? T(double(grad[0]) / double(counted)) : T(0);
    FOR_EACH_ROW(g, row, N) {
        const T* lr = log_probs + row * C;
        T* dr = dlogits + row * C;
        const long long t = (long long)targets[row * target_stride];
        const bool bad = t != ignore_index && (t < 0 || t >= C);
        if (bad && g.lane() == 0) report_bad_index(error, t, C, row);
        if (t == ignore_index || counted == 0 || bad) {
            for (int64_t j = g.lane(); j < C; j += g.size()) dr[j] = T(0);
            continue;
        }
        for (int64_t j = g.lane(); j < C; j += g.size())
            dr[j] = scale * (exp(lr[j]) - (j == t ? on : off));
    }
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                           double label_smoothing, const Tensor& log_probs, const Tensor& loss,
                           int64_t* counted) {
    const int64_t N = logits.size(0), C = logits.size(1);
    // The row losses (N doubles), then the CeResult the host reads back.
    const int64_t result_doubles = (int64_t(sizeof(CeResult)) + 7) / 8;
    Tensor buffer = make_tensor({N + result_doubles}, DType::F64, Device::cuda());
    double* rl = buffer.data<double>();
    auto* result = reinterpret_cast<CeResult*>(rl + N);
    CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(CeResult), stream()));
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            if (C > 0)
                launch_rows(N, C, [&](auto warp, unsigned grid, int threads) {
                    ce_rows_kernel<T, I, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                        logits.data<T>(), targets.data<I>(), targets.stride(0), log_probs.data<T>(),
                        rl, N, C, (long long)ignore_index, label_smoothing, &result->error);
                });
            else if (N > 0)
                CUDA_CHECK(cudaMemsetAsync(rl, 0, size_t(N) * sizeof(double), stream()));
            ce_mean_kernel<T, I><<<1, 1024, 0, stream()>>>(rl, targets.data<I>(), targets.stride(0),
                                                           N, (long long)ignore_index,
                                                           loss.data<T>(), result);
            CUDA_LAUNCHED();
        });
    });
    CeResult host{};
    copy_to_host(&host, result, sizeof host);  // the one synchronization
    EMBER_CHECK(host.error.flag == 0, "cross_entropy: target ", host.error.value, " in row ",
                host.error.where, " is out of range for ", host.error.limit,
                " classes (and is not ignore_index ", ignore_index, ")");
    *counted = int64_t(host.counted);
}

void cross_entropy_backward(const Tensor& grad, const Tensor& log_probs, const Tensor& targets,
                            int64_t ignore_index, double label_smoothing, int64_t counted,
                            const Tensor& dlogits) {
    const int64_t N = log_probs.size(0), C = log_probs.size(1);
    if (N * C == 0) return;
    begin_index_check();
    dispatch_float(log_probs.dtype(), "cross_entropy_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        EMBER_CHECK(grad.dtype() == log_probs.dtype() && grad.numel() == 1 && grad.device().is_cuda(),
                    "cuda::cross_entropy_backward: the upstream gradient must be one ",
                    log_probs.dtype(), " element on the GPU, got ", grad.dtype(), " ", grad.shape(),
                    " on ", grad.device());
        dispatch_index(targets.dtype(), "cross_entropy_backward", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            launch_rows(N, C, [&](auto warp, unsigned grid, int threads) {
                ce_backward_kernel<T, I, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                    grad.data<T>(), log_probs.data<T>(), targets.data<I>(), targets.stride(0),
                    dlogits.data<T>(), N, C, (long long)ignore_index, label_smoothing,
                    (long long)counted, index_error_slot());
            });
        });
    });
    // A target the forward accepted is in range here too; the check is for direct callers.
    IndexError err;
    EMBER_CHECK(!end_index_check(&err), "cross_entropy_backward: target ", err.value, " in row ",
                err.where, " is out of range for ", err.limit, " classes");
}

}  // namespace cuda
}  // namespace ember
