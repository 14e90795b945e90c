// The bf16 mixed-precision Linear (nn/bf16_autocast.h): one autograd node for x and W whose
// backward holds the forward's bf16 copies of both, so neither is rounded twice.
#include "nn/bf16_autocast.h"

#include "autograd/autograd.h"
#include "autograd/functions.h"
#include "tensor/bf16.h"
#include "tensor/ops.h"

namespace ember {
namespace nn {

namespace {
thread_local bool g_enabled = false;
}

Bf16Autocast::Bf16Autocast(bool enabled) : previous_(g_enabled) { g_enabled = enabled; }
Bf16Autocast::~Bf16Autocast() { g_enabled = previous_; }
bool Bf16Autocast::is_enabled() { return g_enabled; }

Tensor bf16_autocast_linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    EMBER_CHECK(x.defined() && weight.defined() && weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
                "bf16_autocast_linear: input of shape ", x.defined() ? make_message(x.shape()) : std::string("(undefined)"),
                " does not fit a weight of shape ", weight.defined() ? make_message(weight.shape()) : std::string("(undefined)"),
                "; the last dim must be the weight's second");
    EMBER_CHECK(x.device().type == DeviceType::CPU && weight.device().type == DeviceType::CPU,
                "bf16_autocast_linear: the input is on ", x.device(), " and the weight on ", weight.device(),
                "; bf16 autocast is a CPU path (the CUDA path has no bf16 products): leave the Bf16Autocast "
                "scope (--precision f32) on the GPU");
    EMBER_CHECK(x.dtype() == DType::F32 && weight.dtype() == DType::F32, "bf16_autocast_linear: needs f32 input and "
                "weight, got ", x.dtype(), " and ", weight.dtype());
    const int64_t in = weight.size(1), out = weight.size(0);
    Shape out_shape = x.shape();
    out_shape[out_shape.rank - 1] = out;
    Tensor x2 = x.reshape({-1, in});
    auto w16 = std::make_shared<const Bf16Weight>(to_bf16(weight.detach()));
    Tensor y = raw::bf16_matmul(x2, *w16);
    if (needs_graph({x2, weight})) {
        // Only a weight that trains needs its input kept, in bf16 as the product read it.
        std::shared_ptr<const Bf16Weight> x16;
        if (weight.requires_grad()) x16 = std::make_shared<const Bf16Weight>(to_bf16(x2.detach()));
        record("bf16_autocast_linear", y, {x2, weight}, [w16, x16](const Tensor& g, const Needs& needs) {
            return Grads{needs[0] ? raw::bf16_matmul_t(g, *w16) : Tensor(),
                         needs[1] ? raw::bf16_weight_grad(g, *x16) : Tensor()};
        });
    }
    if (bias.defined()) y = y + bias;
    return y.reshape(out_shape);
}

}  // namespace nn
}  // namespace ember
