// Rotary position embeddings and their scalings; see rope.h.
#include "nn/rope.h"

#include <algorithm>
#include <cmath>

#include "autograd/functions.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace ember {
namespace nn {

RopeScaling RopeScaling::linear(double factor) {
    RopeScaling s;
    s.type = Type::Linear, s.factor = factor;
    return s;
}

RopeScaling RopeScaling::yarn(double factor, int64_t original_context) {
    RopeScaling s;
    s.type = Type::Yarn, s.factor = factor, s.original_context = original_context;
    return s;
}

void RopeScaling::validate(const char* op) const {
    EMBER_CHECK(std::isfinite(factor) && factor > 0, op, ": the rope_scaling factor must be positive, not ", factor);
    if (type != Type::Yarn) return;
    EMBER_CHECK(original_context > 0, op, ": yarn rope_scaling needs original_max_position_embeddings, the context "
                "the model was trained on (positive), not ", original_context);
    EMBER_CHECK(std::isfinite(beta_fast) && std::isfinite(beta_slow) && beta_slow > 0 && beta_fast > beta_slow, op,
                ": yarn rope_scaling needs 0 < beta_slow < beta_fast (turns within the trained context; 1 and 32 "
                "by default), got beta_slow ", beta_slow, " and beta_fast ", beta_fast);
    EMBER_CHECK(std::isfinite(attention_factor) && attention_factor >= 0, op, ": yarn rope_scaling's "
                "attention_factor must be positive, or 0 for 0.1 ln(factor) + 1; not ", attention_factor);
}

bool RopeScaling::operator==(const RopeScaling& o) const {
    return type == o.type && factor == o.factor && original_context == o.original_context &&
           beta_fast == o.beta_fast && beta_slow == o.beta_slow && attention_factor == o.attention_factor;
}

std::vector<double> RopeScaling::frequency_multipliers(int64_t D, double theta) const {
    const int64_t half = D / 2;
    if (type == Type::None) return std::vector<double>(size_t(half), 1.0);
    if (type == Type::Linear) return std::vector<double>(size_t(half), 1.0 / factor);
    // Pair j turns original_context * theta^(-2j/D) / (2 pi) times within the trained context;
    // index_turning(n) solves that for the (fractional) j at which it turns n times.
    auto index_turning = [&](double n) {
        return double(D) * std::log(double(original_context) / (n * 2 * M_PI)) / (2 * std::log(theta));
    };
    const double low = std::max(std::floor(index_turning(beta_fast)), 0.0);
    double high = std::min(std::ceil(index_turning(beta_slow)), double(D - 1));
    if (high == low) high += 0.001;  // HF's guard against a zero-width ramp
    std::vector<double> m(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j) {
        const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);  // 0: keep, 1: interpolate
        m[size_t(j)] = ramp / factor + (1 - ramp);
    }
    return m;
}

double RopeScaling::cos_sin_factor() const {
    if (type != Type::Yarn) return 1;
    return attention_factor > 0 ? attention_factor : 0.1 * std::log(factor) + 1;
}

RopeTables rope_tables(int64_t T, int64_t D, int64_t position_offset, double theta, const RopeScaling& scaling,
                       DType dtype, Device device) {
    EMBER_CHECK(D % 2 == 0 && T >= 0, "rope_tables: D must be even, got ", D);
    EMBER_CHECK(theta > 0, "rope_tables: theta must be positive, got ", theta);
    scaling.validate("rope_tables");
    const int64_t half = D / 2;
    // dims j and j + half share the angle pos * frequency_j, frequency_j = theta^(-2j/D) * m_j
    std::vector<double> frequency = scaling.frequency_multipliers(D, theta);
    for (int64_t j = 0; j < half; ++j) frequency[size_t(j)] *= std::pow(theta, -2.0 * double(j) / double(D));
    const double c_factor = scaling.cos_sin_factor();
    std::vector<double> c(size_t(T * D)), s(size_t(T * D));
    for (int64_t t = 0; t < T; ++t) {
        const double pos = double(position_offset + t);
        for (int64_t j = 0; j < half; ++j) {
            const double angle = pos * frequency[size_t(j)];
            c[size_t(t * D + j)] = c[size_t(t * D + j + half)] = c_factor * std::cos(angle);
            s[size_t(t * D + j)] = s[size_t(t * D + j + half)] = c_factor * std::sin(angle);
        }
    }
    auto table = [&](const std::vector<double>& v) {
        return raw::to_device(raw::to_dtype(from_vector(v, {T, D}), dtype), device);
    };
    return {table(c), table(s)};
}

Tensor apply_rope(const Tensor& x, const RopeTables& tables) {
    EMBER_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rope: x must be (B, H, T, D) with D even, "
                "got ", x.shape());
    EMBER_CHECK(tables.cos.shape() == Shape({x.size(2), x.size(3)}), "apply_rope: tables of shape ",
                tables.cos.shape(), " do not fit x of shape ", x.shape(), "; they must be (T, D)");
    const int64_t D = x.size(3), half = D / 2;
    // rotate_half(x) = [-x2, x1] for x = [x1, x2] split along D
    Tensor x1 = x.slice(3, 0, half), x2 = x.slice(3, half, D);
    Tensor rotated = cat({neg(x2), x1}, 3);
    return x * tables.cos + rotated * tables.sin;
}

Tensor apply_rope(const Tensor& x, int64_t position_offset, double theta, const RopeScaling& scaling) {
    EMBER_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rope: x must be (B, H, T, D) with D even, "
                "got ", x.shape());
    return apply_rope(x, rope_tables(x.size(2), x.size(3), position_offset, theta, scaling, x.dtype(), x.device()));
}

}  // namespace nn
}  // namespace ember
