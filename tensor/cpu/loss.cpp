// CPU cross-entropy fused with log-softmax, forward and backward, for logits (N, C) and class ids
// (N). With label smoothing eps, the target distribution is (1 - eps) * onehot(t) + eps / C:
//
//   loss_r   = -((1 - eps) * logp[r, t_r] + eps / C * sum_c logp[r, c])
//   loss     = mean of loss_r over the rows whose target is not ignore_index
//   dlogits  = grad / counted * (softmax - ((1 - eps) * onehot + eps / C)), 0 on ignored rows
//
// When every row is ignored there is nothing to average: the loss is 0 and so is the gradient
// (PyTorch returns NaN here; a batch of padding should not poison a training run).
// Threads split the rows; the per-row losses are then added in row order, so the result does not
// depend on the thread count.
#include <cmath>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/row_math.h"
#include "tensor/cpu/strided_loop.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                           double label_smoothing, const Tensor& log_probs, const Tensor& loss,
                           int64_t* counted) {
    const int64_t N = logits.size(0), C = logits.size(1);
    std::vector<double> row_loss(size_t(N), 0.0);
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            const T* x = logits.data<T>();     // (N, C)
            const I* t = targets.data<I>();    // (N), any stride
            T* lp = log_probs.data<T>();       // (N, C)
            parallel_for(N, row_grain(C), [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r) {
                    T* row = lp + r * C;
                    softmax_row(x + r * C, row, C, true);
                    const int64_t target = int64_t(t[r * targets.stride(0)]);
                    if (target == ignore_index) continue;
                    EMBER_CHECK(target >= 0 && target < C, "cross_entropy: target ", target,
                                " in row ", r, " is out of range for ", C, " classes (and is not "
                                "ignore_index ", ignore_index, ")");
                    double smooth = label_smoothing > 0 ? double(row_sum(row, C)) / double(C) : 0;
                    row_loss[size_t(r)] = -((1 - label_smoothing) * double(row[target]) +
                                            label_smoothing * smooth);
                }
            });
            double total = 0;
            int64_t count = 0;
            for (int64_t r = 0; r < N; ++r) {
                if (int64_t(t[r * targets.stride(0)]) == ignore_index) continue;
                total += row_loss[size_t(r)];
                ++count;
            }
            loss.data<T>()[0] = count > 0 ? T(total / double(count)) : T(0);
            *counted = count;
        });
    });
}

void cross_entropy_backward(double grad, const Tensor& log_probs, const Tensor& targets,
                            int64_t ignore_index, double label_smoothing, int64_t counted,
                            const Tensor& dlogits) {
    const int64_t N = log_probs.size(0), C = log_probs.size(1);
    dispatch_float(log_probs.dtype(), "cross_entropy_backward", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dispatch_index(targets.dtype(), "cross_entropy_backward", [&](auto index_tag) {
            using I = typename decltype(index_tag)::type;
            const T* lp = log_probs.data<T>();  // (N, C)
            const I* t = targets.data<I>();     // (N), any stride
            T* d = dlogits.data<T>();           // (N, C)
            const T scale = counted > 0 ? T(grad / double(counted)) : T(0);
            const T on = T(1 - label_smoothing + label_smoothing / double(C));
            const T off = T(label_smoothing / double(C));
            parallel_for(N, row_grain(C), [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r) {
                    T* dr = d + r * C;
                    const int64_t target = int64_t(t[r * targets.stride(0)]);
                    if (target == ignore_index || counted == 0) {
                        for (int64_t c = 0; c < C; ++c) dr[c] = T(0);
                        continue;
                    }
                    EMBER_CHECK(target >= 0 && target < C, "cross_entropy_backward: target ",
                                target, " in row ", r, " is out of range for ", C, " classes");
                    const T* row = lp + r * C;
                    for (int64_t c = 0; c < C; ++c) dr[c] = scale * (exp_of(row[c]) - off);
                    dr[target] = scale * (exp_of(row[target]) - on);
                }
            });
        });
    });
}

}  // namespace cpu
}  // namespace ember
