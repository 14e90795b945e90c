#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/functions.h"

namespace ember {

// Element e (row-major over the shape) of a CPU f64 tensor with any strides.
static double& element(const Tensor& t, int64_t e) {
    int64_t offset = 0;
    for (int d = t.dim() - 1; d >= 0; --d) {
        offset += (e % t.shape()[d]) * t.strides()[d];
        e /= t.shape()[d];
    }
    return t.data<double>()[offset];
}

static std::string index_string(const Shape& shape, int64_t e) {
    std::vector<int64_t> idx(size_t(shape.rank));
    for (int d = shape.rank - 1; d >= 0; --d) {
        idx[size_t(d)] = e % shape[d];
        e /= shape[d];
    }
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < idx.size(); ++i) os << (i ? ", " : "") << idx[i];
    return os.str() + ")";
}

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
    for (size_t i = 0; i < inputs.size(); ++i) {
        EMBER_CHECK(inputs[i].dtype() == DType::F64 && inputs[i].device().is_cpu(), "gradcheck: input ",
              i, " is ", inputs[i].dtype(), " on ", inputs[i].device(), "; gradcheck needs f64 "
              "CPU tensors (use .to(DType::F64))");
    }

    // Analytic: backward of L = sum(f(x) * R).
    for (const Tensor& x : inputs) x.zero_grad();
    Tensor out = f(inputs);
    EMBER_CHECK(out.dtype() == DType::F64, "gradcheck: f returned ", out.dtype(), ", expected f64");
    std::string name = options.name;
    if (name.empty()) name = out.grad_fn() ? out.grad_fn()->name() : "f";
    Generator gen(options.seed);
    Tensor projection = randn(out.shape(), gen, DType::F64);
    Tensor loss = sum(mul(out, projection));
    if (loss.requires_grad()) loss.backward();

    auto projected = [&]() {
        NoGradGuard no_grad;
        return raw::sum(raw::mul(f(inputs), projection)).item<double>();
    };

    GradcheckResult result;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const Tensor& x = inputs[i];
        if (!x.requires_grad()) continue;
        Tensor analytic = x.grad().defined() ? raw::contiguous(x.grad()) : Tensor();
        for (int64_t e = 0; e < x.numel(); ++e) {
            double& value = element(x, e);
            const double original = value;
            value = original + options.eps;
            double plus = projected();
            value = original - options.eps;
            double minus = projected();
            value = original;

            double numeric = (plus - minus) / (2 * options.eps);
            double ana = analytic.defined() ? element(analytic, e) : 0.0;
            double err = std::fabs(numeric - ana);
            result.elements_checked++;
            result.max_abs_error = std::max(result.max_abs_error, err);
            if (result.ok && !(err <= options.atol + options.rtol * std::fabs(numeric))) {
                result.ok = false;
                std::ostringstream os;
                os.precision(10);
                os << "gradcheck failed for '" << name << "': input " << i << " (shape " << x.shape()
                   << "), element " << index_string(x.shape(), e) << ": numeric " << numeric
                   << ", analytic " << ana << (analytic.defined() ? "" : " (no gradient reached it)")
                   << ", |difference| " << err;
                result.report = os.str();
            }
        }
    }
    return result;
}

}  // namespace ember
