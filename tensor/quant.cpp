// Quantized weights: the tables, quantize and dequantize, placement, and the front-ends of the
// products through a quantized weight. The kernels are in tensor/cpu/quant.cpp and
// tensor/cuda/quant.cu; this file checks arguments, allocates, and picks one.
#include "tensor/quant.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/dispatch.h"
#include "tensor/ops.h"
#include "tensor/quant_kernels.h"

namespace ember {

// bitsandbytes functional.py get_4bit_type("nf4") (the same literals as csrc/kernels.cu).
const std::array<float, 16> NF4_VALUES = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// csrc/kernels.cu dQuantizeNF4: the thresholds of its decision tree, ascending.
const std::array<float, 15> NF4_MIDPOINTS = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

// functional.py create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponent
// i = 0..6, the mid-points of torch.linspace(0.1, 1, n + 1) times 10^(i - 6), with n = 2^i and
// both signs (signed) or n = 2^(i + 1) and no sign (unsigned); then 0 and 1; sorted. Either way
// 254 + 2 = 256 values. torch computes in f32 (linspace from both ends, the scalar 10^(i-6) cast
// to f32 before the product), and so does this.
static std::array<float, 256> make_dynamic_code(bool is_signed) {
    std::vector<float> v;
    for (int i = 0; i < 7; ++i) {
        const int64_t steps = (int64_t(1) << (is_signed ? i : i + 1)) + 1;
        const float start = 0.1f, end = 1.0f, step = (end - start) / float(steps - 1);
        std::vector<float> bounds(static_cast<size_t>(steps));
        for (int64_t k = 0; k < steps; ++k)
            bounds[size_t(k)] = k < steps / 2 ? start + step * float(k)
                                              : end - step * float(steps - k - 1);
        const float scale = float(std::pow(10.0, double(i - 6)));
        for (int64_t k = 0; k + 1 < steps; ++k) {
            float mean = (bounds[size_t(k)] + bounds[size_t(k + 1)]) / 2.0f;
            v.push_back(scale * mean);
            if (is_signed) v.push_back(-scale * mean);
        }
    }
    v.push_back(0.0f);
    v.push_back(1.0f);
    std::sort(v.begin(), v.end());
    std::array<float, 256> code{};
    std::copy(v.begin(), v.end(), code.begin());
    return code;
}

const std::array<float, 256>& dynamic_code_8bit() {
    static const std::array<float, 256> code = make_dynamic_code(true);
    return code;
}

const std::array<float, 256>& dynamic_code_8bit_unsigned() {
    static const std::array<float, 256> code = make_dynamic_code(false);
    return code;
}

uint8_t quantize_to_code_8bit(const float* code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) {
            lower_pivot = pivot, lower = val, pivot += step;
        } else {
            upper_pivot = pivot, upper = val, pivot -= step;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) return uint8_t(x > (upper + val) * 0.5f ? upper_pivot : pivot);
    return uint8_t(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

// ---- ByteBuffer ----

ByteBuffer ByteBuffer::zeros(int64_t bytes, Device device) {
    return {ember::zeros({(bytes + 3) / 4}, DType::I32, device), bytes};
}

const char* quant_format_name(QuantFormat f) { return f == QuantFormat::NF4 ? "nf4" : "int4"; }

// ---- QuantizedWeight ----

QuantizedWeight QuantizedWeight::to(Device device) const {
    QuantizedWeight out = *this;
    auto move = [&](Tensor& t) { if (t.defined()) t = t.to(device); };
    out.codes = codes.to(device);
    if (absmax_codes.words.defined()) out.absmax_codes = absmax_codes.to(device);
    move(out.absmax), move(out.nested_absmax), move(out.nested_code);
    move(out.scales), move(out.zeros);
    return out;
}

int64_t QuantizedWeight::storage_bytes() const {
    int64_t bytes = codes.bytes + absmax_codes.bytes;
    // Not counted: nested_code, the 256-entry table every weight shares (bitsandbytes' 4.127
    // bits per parameter does not count it either).
    for (const Tensor* t : {&absmax, &nested_absmax, &scales, &zeros})
        if (t->defined()) bytes += t->numel() * int64_t(dtype_size(t->dtype()));
    if (double_quant) bytes += 4;  // the offset
    return bytes;
}

std::string QuantizedWeight::describe() const {
    char bits[32];
    std::snprintf(bits, sizeof bits, "%.3f", bits_per_param());
    return make_message(quant_format_name(format), " (", rows, ", ", cols, "), ",
                        format == QuantFormat::NF4 ? "block " : "group ", blocksize,
                        double_quant ? ", double-quantized" : "", ", ", bits, " bits/param");
}

// The kernels' view of a weight.
static QuantView view_of(const QuantizedWeight& w) {
    for (const Tensor* t : {&w.absmax, &w.nested_absmax, &w.nested_code, &w.scales, &w.zeros})
        EMBER_CHECK(!t->defined() || t->dtype() == DType::F32, "quantized weight ", w.describe(),
                    ": its statistics must stay f32, got ", t->dtype(), " (Module::to(dtype) "
                    "converts them); convert the model before quantizing it, or keep it in f32");
    QuantView v;
    v.int4 = w.format == QuantFormat::INT4;
    v.rows = w.rows, v.cols = w.cols, v.blocksize = w.blocksize;
    v.codes = w.codes.data();
    if (v.int4) {
        v.scales = w.scales.data<float>();
        v.zeros = w.zeros.data<float>();
    } else if (w.double_quant) {
        v.absmax_codes = w.absmax_codes.data();
        v.nested_absmax = w.nested_absmax.data<float>();
        v.nested_code = w.nested_code.data<float>();
        v.absmax_offset = w.absmax_offset;
        v.nested_blocksize = w.nested_blocksize;
    } else {
        v.absmax = w.absmax.data<float>();
    }
    return v;
}

static void check_weight(const char* op, const Tensor& w) {
    EMBER_CHECK(w.defined() && w.dim() == 2, op, ": needs a 2-D weight (out, in), got ",
                w.defined() ? make_message(w.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(w.dtype() == DType::F32, op, ": quantizes f32 weights, got ", w.dtype(),
                "; convert it with .to(DType::F32)");
    EMBER_CHECK(w.numel() > 0, op, ": the weight is empty");
}

// Double quantization (functional.py quantize_4bit with compress_statistics): the absmaxes less
// their mean, quantized blockwise (256) to the dynamic code. Done on the host: the absmaxes are
// 1/64 of the weight.
static void double_quantize(QuantizedWeight& q, const Tensor& absmax_f32) {
    std::vector<float> a = absmax_f32.to_vector<float>();
    double sum = 0;
    for (float x : a) sum += x;
    const float offset = float(sum / double(a.size()));
    const int64_t blocks = int64_t(a.size()), nested = (blocks + q.nested_blocksize - 1) / q.nested_blocksize;
    const float* code = dynamic_code_8bit().data();
    ByteBuffer qcodes = ByteBuffer::zeros(blocks);
    std::vector<float> nested_absmax(static_cast<size_t>(nested));
    for (int64_t nb = 0; nb < nested; ++nb) {
        const int64_t lo = nb * q.nested_blocksize, hi = std::min(blocks, lo + q.nested_blocksize);
        float m = 0;
        for (int64_t b = lo; b < hi; ++b) m = std::max(m, std::fabs(a[size_t(b)] - offset));
        nested_absmax[size_t(nb)] = m;
        const float inv = 1.0f / m;  // as bitsandbytes: the reciprocal, then products
        for (int64_t b = lo; b < hi; ++b)
            qcodes.data()[b] = quantize_to_code_8bit(code, (a[size_t(b)] - offset) * inv);
    }
    const Device device = absmax_f32.device();
    q.double_quant = true;
    q.absmax_offset = offset;
    q.absmax_codes = qcodes.to(device);
    q.nested_absmax = from_vector(nested_absmax, {nested}, device);
    static const Tensor shared_code = from_vector(std::vector<float>(code, code + 256), {256});
    q.nested_code = device.is_cpu() ? shared_code : shared_code.to(device);
}

QuantizedWeight quantize_nf4(const Tensor& weight, bool double_quant, int64_t blocksize) {
    check_weight("quantize_nf4", weight);
    EMBER_CHECK(blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0,
                "quantize_nf4: blocksize must be a power of two in [32, 4096] (bitsandbytes' "
                "choices), got ", blocksize);
    Tensor w = weight.detach().contiguous();
    QuantizedWeight q;
    q.format = QuantFormat::NF4;
    q.rows = w.size(0), q.cols = w.size(1), q.blocksize = blocksize;
    q.codes = ByteBuffer::zeros((q.numel() + 1) / 2, w.device());
    Tensor absmax = make_tensor({q.blocks()}, DType::F32, w.device());
    switch (w.device().type) {
        case DeviceType::CPU:
            cpu::quantize_nf4(w.data<float>(), q.numel(), blocksize, q.codes.data(), absmax.data<float>());
            break;
        case DeviceType::CUDA:
            ON_CUDA("quantize_nf4", cuda::quantize_nf4(w.data<float>(), q.numel(), blocksize,
                                                       q.codes.data(), absmax.data<float>()));
            break;
    }
    if (double_quant) {
        double_quantize(q, absmax);
    } else {
        q.absmax = absmax;
    }
    return q;
}

QuantizedWeight quantize_int4(const Tensor& weight, int64_t group) {
    check_weight("quantize_int4", weight);
    EMBER_CHECK(group >= 2 && group % 2 == 0, "quantize_int4: the group size must be even and "
                ">= 2, got ", group);
    EMBER_CHECK(weight.size(1) % group == 0, "quantize_int4: in_features ", weight.size(1),
                " is not a multiple of the group size ", group, "; pick a group size that "
                "divides it (QA-LoRA uses 32)");
    Tensor w = weight.detach().contiguous();
    QuantizedWeight q;
    q.format = QuantFormat::INT4;
    q.rows = w.size(0), q.cols = w.size(1), q.blocksize = group;
    q.codes = ByteBuffer::zeros(q.numel() / 2, w.device());
    q.scales = make_tensor({q.rows, q.groups_per_row()}, DType::F32, w.device());
    q.zeros = make_tensor({q.rows, q.groups_per_row()}, DType::F32, w.device());
    switch (w.device().type) {
        case DeviceType::CPU:
            cpu::quantize_int4(w.data<float>(), q.rows, q.cols, group, q.codes.data(),
                               q.scales.data<float>(), q.zeros.data<float>());
            break;
        case DeviceType::CUDA:
            ON_CUDA("quantize_int4",
                    cuda::quantize_int4(w.data<float>(), q.rows, q.cols, group, q.codes.data(),
                                        q.scales.data<float>(), q.zeros.data<float>()));
            break;
    }
    return q;
}

Tensor dequantize(const QuantizedWeight& w, DType dtype) {
    dispatch_float(dtype, "dequantize", [](auto) {});
    Tensor out = make_tensor({w.rows, w.cols}, dtype, w.device());
    const QuantView v = view_of(w);
    dispatch_float(dtype, "dequantize", [&](auto tag) {
        using T = typename decltype(tag)::type;
        switch (w.device().type) {
            case DeviceType::CPU: cpu::dequantize(v, out.data<T>()); break;
            case DeviceType::CUDA: ON_CUDA("dequantize", cuda::dequantize(v, out.data<T>())); break;
        }
    });
    return out;
}

Tensor nf4_block_absmax(const QuantizedWeight& w) {
    EMBER_CHECK(w.format == QuantFormat::NF4, "nf4_block_absmax: the weight is ", w.describe());
    if (!w.double_quant) return w.absmax.clone();
    // Only the statistics come to the host, not the codes.
    const ByteBuffer codes = w.absmax_codes.to(Device::cpu());
    const std::vector<float> nested = w.nested_absmax.to_vector<float>(), code = w.nested_code.to_vector<float>();
    std::vector<float> a(size_t(w.blocks()));
    for (int64_t b = 0; b < w.blocks(); ++b)
        a[size_t(b)] = code[codes.data()[b]] * nested[size_t(b / w.nested_blocksize)] + w.absmax_offset;
    return from_vector(a, {w.blocks()}, w.device());
}

void fold_into_zero_points(QuantizedWeight& w, const Tensor& delta) {
    EMBER_CHECK(w.format == QuantFormat::INT4, "fold_into_zero_points: needs an INT4 weight (its "
                "zero points carry the change), got ", w.describe());
    EMBER_CHECK(delta.defined() && delta.dim() == 2 && delta.size(0) == w.rows &&
                    delta.size(1) == w.groups_per_row(),
                "fold_into_zero_points: the change must be (out, in / L) = (", w.rows, ", ",
                w.groups_per_row(), ") for ", w.describe(), ", got ",
                delta.defined() ? make_message(delta.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(delta.device() == w.device(), "fold_into_zero_points: the change is on ",
                delta.device(), " but the weight is on ", w.device());
    Tensor d = delta.dtype() == DType::F32 ? delta.detach() : raw::to_dtype(delta.detach(), DType::F32);
    w.zeros = raw::sub(w.zeros, raw::div(d, w.scales));
}

QuantizedWeight requantize_merge(const QuantizedWeight& w, const Tensor& delta, RequantizeError* error) {
    EMBER_CHECK(delta.defined() && delta.dim() == 2 && delta.size(0) == w.rows && delta.size(1) == w.cols,
                "requantize_merge: the change must be (", w.rows, ", ", w.cols, ") for ",
                w.describe(), ", got ", delta.defined() ? make_message(delta.shape()) : std::string("an undefined tensor"));
    Tensor d = delta.dtype() == DType::F32 ? delta.detach() : raw::to_dtype(delta.detach(), DType::F32);
    Tensor exact = raw::add(dequantize(w), d);
    QuantizedWeight out = w.format == QuantFormat::INT4 ? quantize_int4(exact, w.blocksize)
                                                         : quantize_nf4(exact, w.double_quant, w.blocksize);
    if (error) {
        std::vector<float> e = raw::sub(dequantize(out), exact).to_vector<float>();
        std::vector<float> dv = d.to_vector<float>();
        double sq = 0;
        *error = {};
        for (float v : e) error->max_abs = std::max(error->max_abs, double(std::fabs(v))), sq += double(v) * v;
        for (float v : dv) error->max_abs_delta = std::max(error->max_abs_delta, double(std::fabs(v)));
        error->rms = std::sqrt(sq / double(e.size()));
    }
    return out;
}

namespace raw {

// The shared checks of the two products; true when a kernel can take them (else the caller
// dequantizes and multiplies).
static bool check_product(const char* op, const Tensor& x, int64_t width, const char* width_name,
                          const QuantizedWeight& w) {
    EMBER_CHECK(x.defined() && x.dim() == 2, op, ": needs a 2-D input (M, ", width_name, "), got ",
                x.defined() ? make_message(x.shape()) : std::string("an undefined tensor"));
    EMBER_CHECK(x.size(1) == width, op, ": input of shape ", x.shape(), " does not fit ",
                w.describe(), "; its last dim must be ", width);
    EMBER_CHECK(x.device() == w.device(), op, ": the input is on ", x.device(), " but the weight "
                "is on ", w.device(), "; move one with .to(device)");
    dispatch_float(x.dtype(), op, [](auto) {});
    return x.dtype() == DType::F32 && view_of(w).rows_are_blocked();
}

Tensor quant_matmul(const Tensor& x, const QuantizedWeight& w) {
    if (!check_product("quant_matmul", x, w.cols, "in", w))
        return matmul(x, transpose(dequantize(w, x.dtype()), 0, 1));
    Tensor xc = contiguous(x);
    Tensor y = make_tensor({x.size(0), w.rows}, DType::F32, x.device());
    if (y.numel() == 0) return y;
    const QuantView v = view_of(w);
    switch (x.device().type) {
        case DeviceType::CPU: cpu::quant_matmul(v, xc.data<float>(), x.size(0), y.data<float>()); break;
        case DeviceType::CUDA:
            ON_CUDA("quant_matmul", cuda::quant_matmul(v, xc.data<float>(), x.size(0), y.data<float>()));
            break;
    }
    return y;
}

Tensor quant_matmul_t(const Tensor& dy, const QuantizedWeight& w) {
    if (!check_product("quant_matmul_t", dy, w.rows, "out", w))
        return matmul(dy, dequantize(w, dy.dtype()));
    Tensor gc = contiguous(dy);
    Tensor dx = make_tensor({dy.size(0), w.cols}, DType::F32, dy.device());
    if (dx.numel() == 0) return dx;
    const QuantView v = view_of(w);
    switch (dy.device().type) {
        case DeviceType::CPU: cpu::quant_matmul_t(v, gc.data<float>(), dy.size(0), dx.data<float>()); break;
        case DeviceType::CUDA:
            ON_CUDA("quant_matmul_t",
                    cuda::quant_matmul_t(v, gc.data<float>(), dy.size(0), dx.data<float>()));
            break;
    }
    return dx;
}

}  // namespace raw
}  // namespace ember
