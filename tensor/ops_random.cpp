// Dropout, with masks from the counter-based Philox generator: element i of x (row-major) is kept
// iff philox_uniform(seed, offset, i) > p, where offset is the generator's next fill offset. The
// mask is therefore the same on every device and for every thread count, and a saved generator
// state replays it exactly.
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace ember {
namespace raw {

std::pair<Tensor, Tensor> dropout(const Tensor& x, double p, Generator& gen) {
    check_defined("dropout", x);
    dispatch_float(x.dtype(), "dropout", [](auto) {});
    EMBER_CHECK(p >= 0 && p < 1, "dropout: p must lie in [0, 1), got ", p,
                " (p = 1 would drop everything; multiply by zero instead)");
    Tensor out = empty_like(x), mask = empty_like(x);
    const uint64_t offset = gen.next_offset();
    switch (x.device().type) {
        case DeviceType::CPU: cpu::dropout(x, p, gen.seed(), offset, out, mask); break;
        case DeviceType::CUDA:
            ON_CUDA("dropout", cuda::dropout(x, p, gen.seed(), offset, out, mask));
            break;
    }
    return {out, mask};
}

}  // namespace raw
}  // namespace ember
