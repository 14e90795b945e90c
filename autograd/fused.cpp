// Fused layers: layer norm, RMS norm, softmax cross-entropy, attention and dropout. Each runs as one
// forward kernel and one backward kernel instead of a chain of primitives, which saves memory
// (fewer saved intermediates) and time.
#include "autograd/functions.h"

namespace ember {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    raw::NormOutput res = raw::layernorm_forward(x, weight, bias, eps);
    Tensor out = res.y;
    if (needs_graph({x, weight, bias})) {
        SavedTensor saved_x(x, "layer_norm"), saved_w(weight, "layer_norm");
        SavedTensor saved_mean(res.mean, "layer_norm"), saved_rstd(res.rstd, "layer_norm");
        record("layer_norm", out, {x, weight, bias},
               [saved_x, saved_w, saved_mean, saved_rstd](const Tensor& g, const Needs& n) {
                   raw::NormOutput stats{Tensor(), saved_mean.get(), saved_rstd.get()};
                   raw::NormGrads d = raw::layernorm_backward(g, saved_x.get(), saved_w.get(),
                                                              stats, n[0], n[1], n[2]);
                   return Grads{d.dx, d.dweight, d.dbias};
               });
    }
    return out;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
    raw::NormOutput res = raw::rmsnorm_forward(x, weight, eps);
    Tensor out = res.y;
    if (needs_graph({x, weight})) {
        SavedTensor saved_x(x, "rms_norm"), saved_w(weight, "rms_norm"), saved_rstd(res.rstd, "rms_norm");
        record("rms_norm", out, {x, weight}, [saved_x, saved_w, saved_rstd](const Tensor& g, const Needs& n) {
            raw::NormOutput stats{Tensor(), Tensor(), saved_rstd.get()};
            raw::NormGrads d = raw::rmsnorm_backward(g, saved_x.get(), saved_w.get(), stats, n[0], n[1]);
            return Grads{d.dx, d.dweight};
        });
    }
    return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     double label_smoothing) {
    EMBER_CHECK(logits.dim() >= 1 && targets.dim() == logits.dim() - 1, "cross_entropy: logits ",
          logits.shape(), " need one more dim (the classes) than targets ", targets.shape());
    int64_t classes = logits.size(-1);
    Tensor flat_logits = logits.reshape({-1, classes});
    Tensor flat_targets = raw::reshape(targets, {-1});
    raw::CrossEntropyOutput res =
        raw::cross_entropy_forward(flat_logits, flat_targets, ignore_index, label_smoothing);
    Tensor out = res.loss;
    if (needs_graph({flat_logits})) {
        SavedTensor saved_log_probs(res.log_probs, "cross_entropy");
        SavedTensor saved_targets(flat_targets, "cross_entropy");
        int64_t counted = res.counted;
        record("cross_entropy", out, {flat_logits},
               [saved_log_probs, saved_targets, counted, ignore_index, label_smoothing](
                   const Tensor& g, const Needs&) {
                   raw::CrossEntropyOutput saved{Tensor(), saved_log_probs.get(), counted};
                   return Grads{raw::cross_entropy_backward(g, saved, saved_targets.get(),
                                                            ignore_index, label_smoothing)};
               });
    }
    return out;
}

Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                       const raw::AttentionPattern& pattern, double scale) {
    raw::AttentionOutput res = raw::attention_forward(q, k, v, pattern, scale);
    Tensor out = res.out;
    if (needs_graph({q, k, v})) {
        SavedTensor sq(q, "attention"), sk(k, "attention"), sv(v, "attention");
        SavedTensor so(res.out, "attention"), sl(res.lse, "attention");
        record("attention", out, {q, k, v}, [sq, sk, sv, so, sl, pattern, scale](const Tensor& g, const Needs&) {
            raw::AttentionGrads d = raw::attention_backward(g, sq.get(), sk.get(), sv.get(),
                                                            {so.get(), sl.get()}, pattern, scale);
            return Grads{d.dq, d.dk, d.dv};
        });
    }
    return out;
}

Tensor dropout(const Tensor& x, double p, Generator& gen, bool training) {
    if (!training || p == 0) return x;
    auto [out, mask] = raw::dropout(x, p, gen);
    if (needs_graph({x})) {
        SavedTensor saved_mask(mask, "dropout");
        double scale = 1.0 / (1.0 - p);
        record("dropout", out, {x}, [saved_mask, scale](const Tensor& g, const Needs&) {
            return Grads{raw::mul(g, raw::mul_scalar(saved_mask.get(), scale))};
        });
    }
    return out;
}

}  // namespace ember
