// Cross-entropy front-ends: logits (N, C) and class ids (N), fused with log-softmax. The formulas,
// label smoothing and ignore_index handling are described in tensor/cpu/loss.cpp.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {

static void check_targets(const char* op, const Tensor& logits, const Tensor& targets) {
    check_defined(op, targets, "targets");
    check_same_device(op, logits, targets);
    dispatch_index(targets.dtype(), op, [](auto) {});
    EMBER_CHECK(logits.dim() == 2, op, ": logits must be (N, C), got shape ", logits.shape(),
                "; flatten the leading dims with reshape({-1, C})");
    EMBER_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), op, ": targets of shape ",
                targets.shape(), " do not fit logits of shape ", logits.shape(), "; they must be (",
                logits.size(0), ",)");
}

static void check_smoothing(const char* op, double label_smoothing) {
    EMBER_CHECK(label_smoothing >= 0 && label_smoothing <= 1, op, ": label_smoothing must lie in "
                "[0, 1], got ", label_smoothing);
}

CrossEntropyOutput cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                         int64_t ignore_index, double label_smoothing) {
    check_defined("cross_entropy", logits, "logits");
    dispatch_float(logits.dtype(), "cross_entropy", [](auto) {});
    check_targets("cross_entropy", logits, targets);
    check_smoothing("cross_entropy", label_smoothing);
    Tensor x = contiguous(logits);
    Tensor log_probs = make_tensor(x.shape(), x.dtype(), x.device());
    Tensor loss = make_tensor({}, x.dtype(), x.device());
    int64_t counted = 0;
    switch (x.device().type) {
        case DeviceType::CPU:
            cpu::cross_entropy_forward(x, targets, ignore_index, label_smoothing, log_probs, loss,
                                       &counted);
            break;
        case DeviceType::CUDA:
            ON_CUDA("cross_entropy", cuda::cross_entropy_forward(x, targets, ignore_index,
                                                                 label_smoothing, log_probs, loss,
                                                                 &counted));
            break;
    }
    return {loss, log_probs, counted};
}

Tensor cross_entropy_backward(const Tensor& grad, const CrossEntropyOutput& saved,
                              const Tensor& targets, int64_t ignore_index, double label_smoothing) {
    const char* op = "cross_entropy_backward";
    check_defined(op, grad, "gradient");
    check_defined(op, saved.log_probs, "saved log_probs");
    dispatch_float(saved.log_probs.dtype(), op, [](auto) {});
    check_targets(op, saved.log_probs, targets);
    check_smoothing(op, label_smoothing);
    EMBER_CHECK(grad.numel() == 1, op, ": the upstream gradient of a scalar loss must have one "
                "element, got shape ", grad.shape());
    Tensor log_probs = contiguous(saved.log_probs);
    Tensor dlogits = empty_like(log_probs);
    switch (log_probs.device().type) {
        case DeviceType::CPU:
            cpu::cross_entropy_backward(grad.item<double>(), log_probs, targets, ignore_index,
                                        label_smoothing, saved.counted, dlogits);
            break;
        case DeviceType::CUDA:  // the gradient stays on the GPU: no host sync to read it
            ON_CUDA(op, cuda::cross_entropy_backward(
                            to_device(to_dtype(grad, log_probs.dtype()), log_probs.device()),
                            log_probs, targets, ignore_index, label_smoothing, saved.counted,
                            dlogits));
            break;
    }
    return dlogits;
}

}  // namespace raw
}  // namespace ember
