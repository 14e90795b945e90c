// The fused CPU attention's visibility rule as a mask (tensor/cpu/attention.cpp), so the composed
// path (nn::composed_attention) can apply exactly the keys the kernel walks.
#pragma once

#include <cstdint>

#include "tensor/ops.h"

namespace ember {
namespace cpu {

// out: (H, Tq, Tk), contiguous, on the CPU, any float dtype; set to 1 where query i of head h may
// see key j under `pattern` (padding aside), 0 elsewhere.
void attention_visible(const raw::AttentionPattern& pattern, int64_t H, int64_t Tq, int64_t Tk,
                       const Tensor& out);

}  // namespace cpu
}  // namespace ember
