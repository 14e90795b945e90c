// Tensor: a cheap-to-copy handle to a view of shared storage.
//
// A tensor is (storage, element offset, shape, element strides, dtype). Strides are counted in
// elements, row-major, with stride 0 for a broadcast dimension, so views (reshape, permute,
// slice, expand, ...) never copy: they make a new handle over the same storage. Copying a Tensor
// copies the handle, not the data; clone() copies the data.
//
// Autograd lives in autograd/: a tensor carries an optional pointer to its autograd metadata
// (requires_grad, .grad, the node that made it). The view and arithmetic methods declared here
// are differentiable and are defined in autograd/tensor_methods.cpp; tensor/ops.h holds the raw
// operations that never record anything.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "tensor/check.h"
#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/random.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace ember {

struct AutogradMeta;  // autograd/autograd.h
class Node;           // autograd/autograd.h

struct TensorImpl {
    std::shared_ptr<Storage> storage;
    int64_t offset = 0;  // in elements
    Shape shape;
    Shape strides;  // in elements
    DType dtype = DType::F32;
    std::shared_ptr<AutogradMeta> autograd;  // null until autograd needs it
};

class Tensor {
public:
    Tensor() = default;  // an undefined tensor: defined() is false
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // ---- metadata ----
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    const Shape& strides() const { return impl().strides; }
    int dim() const { return impl().shape.rank; }
    int64_t size(int d) const;    // negative d counts from the end
    int64_t stride(int d) const;  // likewise
    int64_t numel() const { return impl().shape.numel(); }
    DType dtype() const { return impl().dtype; }
    Device device() const { return impl().storage->device(); }
    int64_t offset() const { return impl().offset; }
    bool is_contiguous() const;
    const std::shared_ptr<Storage>& storage() const { return impl().storage; }
    TensorImpl& impl() const;
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same_storage(const Tensor& other) const { return storage() == other.storage(); }

    // Pointer to element 0 of this view (offset applied). T must match dtype().
    template <typename T>
    T* data() const {
        EMBER_CHECK(dtype_of<T>() == dtype(), "Tensor::data: the tensor holds ", dtype(),
              ", not the requested ", dtype_of<T>());
        return static_cast<T*>(impl().storage->data()) + impl().offset;
    }
    void* raw_data() const;  // element 0 of this view, untyped

    // ---- values on the host ----
    template <typename T> T item() const;               // the single element, converted to T
    template <typename T> std::vector<T> to_vector() const;  // row-major, converted to T
    std::string to_string() const;                     // readable, with shape and dtype

    // ---- views and copies (differentiable) ----
    Tensor reshape(const Shape& shape) const;  // a view when strides allow, else a copy; -1 infers
    Tensor view(const Shape& shape) const;     // a view or an error
    Tensor permute(const Shape& order) const;
    Tensor transpose(int d0, int d1) const;
    Tensor t() const { return transpose(-2, -1); }
    Tensor narrow(int dim, int64_t start, int64_t length) const;
    Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
    Tensor select(int dim, int64_t index) const;
    Tensor expand(const Shape& shape) const;  // -1 keeps a size
    Tensor squeeze(int dim) const;
    Tensor unsqueeze(int dim) const;
    Tensor flatten(int start_dim = 0, int end_dim = -1) const;
    Tensor contiguous() const;  // itself when already contiguous
    Tensor clone() const;
    Tensor to(DType dtype) const;
    Tensor to(Device device) const;

    // ---- autograd (autograd/autograd.cpp) ----
    bool requires_grad() const;
    Tensor& set_requires_grad(bool requires = true);  // leaves only
    bool is_leaf() const;
    Tensor grad() const;  // undefined until a backward pass reaches this leaf
    void set_grad(const Tensor& grad) const;
    void zero_grad() const;  // drops .grad
    std::shared_ptr<Node> grad_fn() const;
    Tensor detach() const;  // same data, no history, requires_grad false
    // Runs the backward pass from this tensor. A scalar needs no gradient argument.
    void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

private:
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories (tensor/factories.cpp) ----
Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
            Device device = Device::cpu());
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);  // contiguous, same shape, dtype and device
Tensor arange(double start, double end, double step = 1, DType dtype = DType::F32);
Tensor eye(int64_t n, DType dtype = DType::F32);
// Values from a host vector, row-major; the shape's product must equal the vector's size.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
// A tensor of the given values (1-D unless a shape is given): tensor({1, 2, 3, 4}, {2, 2}).
Tensor tensor(std::initializer_list<double> values, const Shape& shape = {},
              DType dtype = DType::F32);
Tensor scalar_tensor(double value, DType dtype = DType::F32, Device device = Device::cpu());
// Random fills: the same generator state gives the same numbers on every device.
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::F32,
            Device device = Device::cpu());  // uniform in (0, 1]
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32,
             Device device = Device::cpu());  // standard normal
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen,
               DType dtype = DType::I64, Device device = Device::cpu());  // in [low, high)

// A new tensor of this shape over a fresh contiguous allocation.
Tensor make_tensor(const Shape& shape, DType dtype, Device device);
// A view over an existing tensor's storage (no autograd history).
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace ember
