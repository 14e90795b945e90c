// What the attention tests share: one forward and backward of an attention function, so that two
// implementations (fused and composed, or a pattern and its reference) compare in every output.
#pragma once

#include "tests/helpers.h"

namespace ember {
namespace testing {

struct AttentionResult {
    Tensor out, dq, dk, dv;
};

// Forward, then backward of sum(out * w) for a fixed random w.
template <typename Attn>
AttentionResult run_attention(Attn&& attn, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& w) {
    Tensor q = q0.detach(), k = k0.detach(), v = v0.detach();
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad();
    Tensor out = attn(q, k, v);
    sum(mul(out, w)).backward();
    return {out.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace testing
}  // namespace ember
