// The device switch every raw op ends in:
//
//     switch (x.device().type) {
//         case DeviceType::CPU: cpu::softmax(x, dim, out); break;
//         case DeviceType::CUDA: ON_CUDA("softmax", cuda::softmax(x, dim, out)); break;
//     }
//
// In a CPU-only build ON_CUDA drops the call and throws an error that names the op instead, so
// the CUDA kernels need not exist for the library to link.
#pragma once

#include "tensor/check.h"
#include "tensor/tensor.h"

#ifdef EMBER_WITH_CUDA
#define ON_CUDA(op, ...) __VA_ARGS__
#else
#define ON_CUDA(op, ...)                                                                      \
    throw ::ember::Error(::ember::make_message(                                               \
        op, ": this build of Ember has no CUDA (built without nvcc); rebuild with `make CUDA=1` " \
            "on a machine with the CUDA toolkit, or keep the tensors on the CPU"))
#endif

namespace ember {

// Every tensor given to an op must live on the same device.
inline void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
    EMBER_CHECK(a.device() == b.device(), op, ": tensors are on different devices (", a.device(),
          " and ", b.device(), "); move one with .to(device)");
}

inline void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
    EMBER_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ (", a.dtype(), " and ", b.dtype(),
          "); convert one with .to(DType::...)");
}

inline void check_defined(const char* op, const Tensor& t, const char* what = "input") {
    EMBER_CHECK(t.defined(), op, ": the ", what, " tensor is undefined");
}

}  // namespace ember
