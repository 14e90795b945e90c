// Losses: thin wrappers that check shapes with nn-level messages.
#include "nn/loss.h"

namespace ember {
namespace nn {

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     double label_smoothing) {
    EMBER_CHECK(logits.defined() && targets.defined(), "nn::cross_entropy: logits and targets must be defined");
    EMBER_CHECK(logits.dim() == targets.dim() + 1, "nn::cross_entropy: logits ", logits.shape(),
                " must have one more dim (the classes) than targets ", targets.shape());
    for (int d = 0; d < targets.dim(); ++d)
        EMBER_CHECK(logits.size(d) == targets.size(d), "nn::cross_entropy: logits ", logits.shape(),
                    " and targets ", targets.shape(), " differ in dim ", d);
    return ember::cross_entropy(logits, targets, ignore_index, label_smoothing);
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
    EMBER_CHECK(pred.defined() && target.defined(), "mse_loss: pred and target must be defined");
    EMBER_CHECK(broadcast_shapes(pred.shape(), target.shape(), "mse_loss") == pred.shape(),
                "mse_loss: target ", target.shape(), " does not broadcast to pred ", pred.shape());
    Tensor diff = pred - target;
    return mean(diff * diff);
}

}  // namespace nn
}  // namespace ember
