// CPU AdamW: one pass over the parameter, decoupled weight decay as torch.optim.AdamW.
//
//   p  <- p * (1 - lr * wd)                         decay the weight, not the gradient
//   m  <- beta1 * m + (1 - beta1) * g               first moment
//   v  <- beta2 * v + (1 - beta2) * g^2             second moment
//   p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// The step-dependent scalars are computed once in double; the per-element arithmetic runs in the
// element type, in a fixed order, so a resumed run repeats the same bits (and a tensor updated
// alone or with others gets the same bits). This file is built with -fno-math-errno, so the
// square roots vectorize.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/cpu/adamw_scalars.h"
#include "tensor/cpu/kernels.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ember {
namespace cpu {

namespace {

// The per-element update over [begin, end) of one tensor, with its scalars.
template <typename T>
struct AdamWRange {
    T* w;
    const T* g;
    T* m;
    T* v;
    AdamWScalars<T> c;

    explicit AdamWRange(const raw::AdamWSlot& s)
        : w(s.param.data<T>()),        // (n)
          g(s.grad.data<T>()),         // (n)
          m(s.exp_avg.data<T>()),      // (n)
          v(s.exp_avg_sq.data<T>()),   // (n)
          c(s.hp) {}

    void run(int64_t begin, int64_t end) const {
        for (int64_t i = begin; i < end; ++i) c.update(w[i], g[i], m[i], v[i]);
    }
};

}  // namespace

// All slots in one parallel_for over their elements laid end to end: threads split the total,
// not each tensor, so a hundred small biases cost one fork/join instead of a hundred.
void adamw_multi_(const std::vector<raw::AdamWSlot>& slots) {
    if (slots.empty()) return;
    dispatch_float(slots[0].param.dtype(), "adamw_", [&](auto tag) {
        using T = typename decltype(tag)::type;
        std::vector<AdamWRange<T>> ranges;
        std::vector<int64_t> starts{0};  // slot k covers [starts[k], starts[k + 1])
        for (const raw::AdamWSlot& s : slots) {
            ranges.emplace_back(s);
            starts.push_back(starts.back() + s.param.numel());
        }
        parallel_for(starts.back(), 1 << 14, [&](int64_t begin, int64_t end) {
            size_t k = size_t(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin()) - 1;
            for (; k < ranges.size() && starts[k] < end; ++k) {
                const int64_t lo = std::max(begin, starts[k]) - starts[k];
                const int64_t hi = std::min(end, starts[k + 1]) - starts[k];
                ranges[k].run(lo, hi);
            }
        });
    });
}

}  // namespace cpu
}  // namespace ember
