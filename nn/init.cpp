// Initializers: draw on the tensor's device in its dtype, then copy into the slot in place, so a
// parameter keeps its identity (and its requires_grad) while it is filled.
#include "nn/init.h"

#include <cmath>

namespace ember {
namespace nn {
namespace init {

static void check_fillable(const Tensor& t, const char* op) {
    EMBER_CHECK(t.defined(), op, ": the tensor is undefined");
    EMBER_CHECK(is_floating(t.dtype()), op, ": needs a floating-point tensor, got ", t.dtype());
}

std::pair<int64_t, int64_t> fans(const Tensor& t, const char* op) {
    EMBER_CHECK(t.dim() >= 2, op, ": fan in and fan out need a tensor of rank >= 2, got shape ",
                t.shape(), "; use normal_ / uniform_ for biases and other 1-D tensors");
    int64_t receptive = 1;
    for (int d = 2; d < t.dim(); ++d) receptive *= t.size(d);
    return {t.size(1) * receptive, t.size(0) * receptive};
}

void normal_(Tensor& t, double mean, double std, Generator& gen) {
    check_fillable(t, "normal_");
    NoGradGuard no_grad;
    Tensor r = randn(t.shape(), gen, t.dtype(), t.device());
    raw::copy_(t, raw::add_scalar(raw::mul_scalar(r, std), mean));
}

void uniform_(Tensor& t, double lo, double hi, Generator& gen) {
    check_fillable(t, "uniform_");
    EMBER_CHECK(lo <= hi, "uniform_: lo ", lo, " must not exceed hi ", hi);
    NoGradGuard no_grad;
    Tensor r = rand(t.shape(), gen, t.dtype(), t.device());  // (0, 1]
    raw::copy_(t, raw::add_scalar(raw::mul_scalar(r, hi - lo), lo));
}

void trunc_normal_(Tensor& t, double mean, double std, Generator& gen, double lo, double hi) {
    check_fillable(t, "trunc_normal_");
    EMBER_CHECK(lo < hi && std > 0, "trunc_normal_: need lo < hi and std > 0, got [", lo, ", ", hi,
                "] and std ", std);
    EMBER_CHECK((hi - mean) / std > -3 && (lo - mean) / std < 3, "trunc_normal_: [", lo, ", ", hi,
                "] lies more than 3 std from the mean ", mean, "; redrawing would rarely succeed");
    NoGradGuard no_grad;
    // Redraw out-of-range values on the host in f64: a few rounds suffice since each value lands
    // inside with a probability that is not tiny (checked above).
    std::vector<double> values(size_t(t.numel()));
    std::vector<size_t> pending(values.size());
    for (size_t i = 0; i < pending.size(); ++i) pending[i] = i;
    while (!pending.empty()) {
        std::vector<double> draw = randn({int64_t(pending.size())}, gen, DType::F64).to_vector<double>();
        std::vector<size_t> still;
        for (size_t j = 0; j < pending.size(); ++j) {
            double v = mean + std * draw[j];
            if (v >= lo && v <= hi)
                values[pending[j]] = v;
            else
                still.push_back(pending[j]);
        }
        pending.swap(still);
    }
    Tensor host = from_vector(values, t.shape());
    raw::copy_(t, raw::to_device(raw::to_dtype(host, t.dtype()), t.device()));
}

void xavier_uniform_(Tensor& t, Generator& gen, double gain) {
    auto [fan_in, fan_out] = fans(t, "xavier_uniform_");
    double b = gain * std::sqrt(6.0 / double(fan_in + fan_out));
    uniform_(t, -b, b, gen);
}

void xavier_normal_(Tensor& t, Generator& gen, double gain) {
    auto [fan_in, fan_out] = fans(t, "xavier_normal_");
    normal_(t, 0, gain * std::sqrt(2.0 / double(fan_in + fan_out)), gen);
}

void kaiming_uniform_(Tensor& t, double a, Generator& gen) {
    int64_t fan_in = fans(t, "kaiming_uniform_").first;
    double gain = std::sqrt(2.0 / (1 + a * a));
    double b = gain * std::sqrt(3.0 / double(fan_in));
    uniform_(t, -b, b, gen);
}

void kaiming_normal_(Tensor& t, double a, Generator& gen) {
    int64_t fan_in = fans(t, "kaiming_normal_").first;
    double gain = std::sqrt(2.0 / (1 + a * a));
    normal_(t, 0, gain / std::sqrt(double(fan_in)), gen);
}

void constant_(Tensor& t, double value) {
    check_fillable(t, "constant_");
    NoGradGuard no_grad;
    raw::fill_(t, value);
}

void zeros_(Tensor& t) { constant_(t, 0); }
void ones_(Tensor& t) { constant_(t, 1); }

}  // namespace init
}  // namespace nn
}  // namespace ember
