// Making tensors: empty, filled, ranges, host vectors and seeded random fills.
#include <cmath>

#include "tensor/dispatch.h"
#include "tensor/ops.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/kernels.h"

namespace ember {

Tensor make_tensor(const Shape& shape, DType dtype, Device device) {
    for (int64_t d : shape) EMBER_CHECK(d >= 0, "empty: negative size in shape ", shape);
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(size_t(shape.numel()) * dtype_size(dtype), device);
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = dtype;
    return Tensor(impl);
}

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = base.storage();
    impl->offset = offset;
    impl->shape = shape;
    impl->strides = strides;
    impl->dtype = base.dtype();
    return Tensor(impl);
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
    return make_tensor(shape, dtype, device);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
    Tensor t = make_tensor(shape, dtype, device);
    raw::fill_(t, value);
    return t;
}

Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1, dtype, device); }
Tensor empty_like(const Tensor& t) { return make_tensor(t.shape(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor arange(double start, double end, double step, DType dtype) {
    EMBER_CHECK(step != 0, "arange: step must not be 0");
    int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
    Tensor t = make_tensor({n}, dtype, Device::cpu());
    dispatch_all(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = t.data<T>();
        for (int64_t i = 0; i < n; ++i) p[i] = T(start + double(i) * step);
    });
    return t;
}

Tensor eye(int64_t n, DType dtype) {
    Tensor t = zeros({n, n}, dtype);
    dispatch_all(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        for (int64_t i = 0; i < n; ++i) t.data<T>()[i * n + i] = T(1);
    });
    return t;
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
    EMBER_CHECK(int64_t(values.size()) == shape.numel(), "from_vector: ", values.size(),
          " values do not fill shape ", shape, " (", shape.numel(), " elements)");
    Tensor t = make_tensor(shape, dtype_of<T>(), Device::cpu());
    std::copy(values.begin(), values.end(), t.data<T>());
    return device.is_cpu() ? t : raw::to_device(t, device);
}
template Tensor from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, Device);

Tensor tensor(std::initializer_list<double> values, const Shape& shape, DType dtype) {
    Shape s = shape.rank == 0 ? Shape{int64_t(values.size())} : shape;
    Tensor t = from_vector(std::vector<double>(values), s);
    return dtype == DType::F64 ? t : raw::to_dtype(t, dtype);
}

// Random fills run on the tensor's own device; both backends use the same Philox formulas.
enum class Fill { Uniform, Normal };
static Tensor random_fill(const Shape& shape, Generator& gen, DType dtype, Device device, Fill kind) {
    Tensor t = make_tensor(shape, dtype, device);
    uint64_t offset = gen.next_offset();
    switch (device.type) {
        case DeviceType::CPU:
            if (kind == Fill::Uniform) cpu::uniform_fill(t, gen.seed(), offset);
            else cpu::normal_fill(t, gen.seed(), offset);
            break;
        case DeviceType::CUDA:
            ON_CUDA("rand", kind == Fill::Uniform ? cuda::uniform_fill(t, gen.seed(), offset)
                                                  : cuda::normal_fill(t, gen.seed(), offset));
            break;
    }
    return t;
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
    dispatch_float(dtype, "rand", [](auto) {});
    return random_fill(shape, gen, dtype, device, Fill::Uniform);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
    dispatch_float(dtype, "randn", [](auto) {});
    return random_fill(shape, gen, dtype, device, Fill::Normal);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, DType dtype,
               Device device) {
    EMBER_CHECK(high > low, "randint: need low < high, got [", low, ", ", high, ")");
    Tensor u = rand(shape, gen, DType::F64, Device::cpu());
    Tensor t = make_tensor(shape, dtype, Device::cpu());
    const double* src = u.data<double>();
    dispatch_all(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = t.data<T>();
        for (int64_t i = 0; i < t.numel(); ++i) {
            // u is in (0, 1]: map to [low, high) with the top value folded into the last bin.
            int64_t v = low + int64_t((1.0 - src[i]) * double(high - low));
            p[i] = T(std::min(v, high - 1));
        }
    });
    return device.is_cpu() ? t : raw::to_device(t, device);
}

}  // namespace ember
