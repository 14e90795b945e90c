// Mixed-precision training on the CPU: inside a Bf16Autocast scope, every f32 Linear product on
// the CPU (nn::linear: each Linear, and the GPT head) runs in bf16 with f32 sums, as
// torch.autocast("cpu", dtype=torch.bfloat16) runs torch.nn.Linear. The weights stay f32 (the
// optimizer updates those, the "master" weights); each forward rounds them to a bf16 copy, and
// the three products of a Linear take bf16 operands:
//   forward          y  = bf16(x) bf16(W)^T + b
//   input gradient   dx = bf16(dy) bf16(W)
//   weight gradient  dW = bf16(dy)^T bf16(x)      (x is saved in bf16: half the bytes of f32)
//   bias gradient    db = sum of dy over rows     (f32)
// The products' results stay f32; torch's bf16 products also round theirs to bf16.
//
// Why: on a CPU with AVX-512 BF16, vdpbf16ps does twice the multiply-adds of an f32 FMA, and a
// full training step is ~80% products (bench/NOTES.md). Without it the products widen to f32
// and run slower than plain f32: the examples say so when asked for bf16 on such a CPU.
//
// Only f32 CPU products change: f64 ones (gradient checks) and the attention, norms, softmax
// and loss stay as they are. A CUDA product under the guard is refused (the CUDA path has no
// bf16 kernels yet). A frozen base trains faster still as a bf16 copy made once
// (GPT::cast_to_bf16, nn/bf16_linear.h) instead of rounded on every forward.
#pragma once

#include "tensor/tensor.h"

namespace ember {
namespace nn {

// Thread-local, like GradMode: the products a thread records inside the scope are bf16 ones.
// Their backward runs in bf16 wherever backward() is called, since each node keeps its copies.
class Bf16Autocast {
public:
    explicit Bf16Autocast(bool enabled = true);
    ~Bf16Autocast();
    Bf16Autocast(const Bf16Autocast&) = delete;
    Bf16Autocast& operator=(const Bf16Autocast&) = delete;

    static bool is_enabled();

private:
    bool previous_;
};

// y = x W^T + b with the bf16 products above, differentiable in x, W and b. x (..., in) f32 on the
// CPU, W (out, in) f32, b (out) or undefined. nn::linear calls it inside a Bf16Autocast scope.
Tensor bf16_autocast_linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace nn
}  // namespace ember
