// Tensor metadata, host access and printing. Views live in ops_views.cpp, factories in
// factories.cpp, the autograd methods in autograd/.
#include "tensor/tensor.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "tensor/ops.h"

namespace ember {

TensorImpl& Tensor::impl() const {
    EMBER_CHECK(impl_ != nullptr, "Tensor: this tensor is undefined (default-constructed, or a gradient "
                            "that was never computed)");
    return *impl_;
}

int64_t Tensor::size(int d) const { return shape()[wrap_dim(d, dim(), "Tensor::size")]; }
int64_t Tensor::stride(int d) const { return strides()[wrap_dim(d, dim(), "Tensor::stride")]; }

bool Tensor::is_contiguous() const {
    int64_t expected = 1;
    for (int i = dim() - 1; i >= 0; --i) {
        if (shape()[i] == 1) continue;  // the stride of a size-1 dim never matters
        if (strides()[i] != expected) return false;
        expected *= shape()[i];
    }
    return true;
}

void* Tensor::raw_data() const {
    return static_cast<char*>(impl().storage->data()) + impl().offset * dtype_size(dtype());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
    Tensor host = raw::contiguous(device().is_cpu() ? *this : raw::to_device(*this, Device::cpu()));
    std::vector<T> out(size_t(host.numel()));
    dispatch_all(host.dtype(), [&](auto tag) {
        using S = typename decltype(tag)::type;
        const S* src = host.data<S>();
        for (size_t i = 0; i < out.size(); ++i) out[i] = T(src[i]);
    });
    return out;
}

template <typename T>
T Tensor::item() const {
    EMBER_CHECK(numel() == 1, "Tensor::item: needs a tensor of one element, got shape ", shape(),
          "; reduce it first (e.g. with sum or mean)");
    return to_vector<T>()[0];
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int32_t Tensor::item<int32_t>() const;
template int64_t Tensor::item<int64_t>() const;

// Prints nested brackets like numpy, eliding the middle of long dims.
static void print_values(std::ostream& os, const std::vector<double>& v, const Shape& shape,
                         int dim, int64_t base, bool integer, int indent) {
    const int64_t EDGE = 3;
    if (shape.rank == 0) {
        os << v[0];
        return;
    }
    int64_t n = shape[dim], inner = 1;
    for (int d = dim + 1; d < shape.rank; ++d) inner *= shape[d];
    os << "[";
    for (int64_t i = 0; i < n; ++i) {
        if (n > 2 * EDGE && i == EDGE) {
            os << (dim + 1 == shape.rank ? "..., " : "...,\n" + std::string(indent + 1, ' '));
            i = n - EDGE;
        }
        if (dim + 1 == shape.rank) {
            double x = v[size_t(base + i)];
            if (integer)
                os << int64_t(x);
            else
                os << std::setw(10) << std::setprecision(4) << x;
        } else {
            print_values(os, v, shape, dim + 1, base + i * inner, integer, indent + 1);
        }
        if (i + 1 < n) os << (dim + 1 == shape.rank ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    os << "]";
}

std::string Tensor::to_string() const {
    if (!defined()) return "Tensor(undefined)";
    std::ostringstream os;
    os << "Tensor(";
    print_values(os, to_vector<double>(), shape(), 0, 0, !is_floating(dtype()), 7);
    os << ", shape=" << shape() << ", dtype=" << dtype();
    if (!device().is_cpu()) os << ", device=" << device();
    if (requires_grad()) os << ", requires_grad";
    os << ")";
    return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace ember
