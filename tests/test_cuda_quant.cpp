// CUDA against CPU for the 4-bit kernels (tensor/cuda/quant.cu): the same codes and statistics
// from quantize on both devices, the same dequantized values, and products (batch 1, a tiled
// GEMM batch, the input gradient) within f32 rounding of the CPU's. Every case skips itself
// where no GPU answers.
#include "nn/quant_linear.h"
#include "tensor/cuda/cuda.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

const auto NO_GPU = [] { return !cuda_is_available(); };

std::vector<uint8_t> bytes_of(const ByteBuffer& b) {
    ByteBuffer host = b.to(Device::cpu());
    return std::vector<uint8_t>(host.data(), host.data() + host.bytes);
}

double max_rel(const Tensor& got, const Tensor& want) {
    double scale = 0;
    for (double v : want.to_vector<double>()) scale = std::max(scale, std::abs(v));
    return max_abs_diff(got.to(Device::cpu()), want.to(Device::cpu())) / std::max(scale, 1e-30);
}

// Awkward sizes: rows not a multiple of the 64-wide tiles, a block count not a multiple of 256,
// and an NF4 layout with blocks straddling rows (in = 100).
struct QuantShape { int64_t out, in; };
const QuantShape SHAPES[] = {{1, 64}, {65, 128}, {300, 512}, {7, 100}};

// INT4 groups of 32 where they fit (the vector matvec), else of 4 (the per-element one).
QuantizedWeight make(QuantFormat f, const Tensor& w) {
    return f == QuantFormat::NF4 ? quantize_nf4(w) : quantize_int4(w, w.size(1) % 32 == 0 ? 32 : 4);
}

}  // namespace

TEST_CASE("cuda: quantize gives the CPU's codes and statistics" * doctest::skip(NO_GPU())) {
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::INT4})
        for (QuantShape s : SHAPES) {
            CAPTURE(s.out);
            CAPTURE(s.in);
            Tensor w = seeded_normal({s.out, s.in}, 1);
            QuantizedWeight cpu = make(f, w), gpu = make(f, w.to(Device::cuda()));
            CHECK(gpu.device().is_cuda());
            CHECK(bytes_of(gpu.codes) == bytes_of(cpu.codes));
            if (f == QuantFormat::NF4) {
                CHECK(bytes_of(gpu.absmax_codes) == bytes_of(cpu.absmax_codes));
                CHECK(gpu.nested_absmax.to(Device::cpu()).to_vector<float>() == cpu.nested_absmax.to_vector<float>());
                CHECK(gpu.absmax_offset == cpu.absmax_offset);
            } else {
                CHECK(gpu.scales.to(Device::cpu()).to_vector<float>() == cpu.scales.to_vector<float>());
                CHECK(gpu.zeros.to(Device::cpu()).to_vector<float>() == cpu.zeros.to_vector<float>());
            }
        }
}

TEST_CASE("cuda: dequantize and the 4-bit products match the CPU" * doctest::skip(NO_GPU())) {
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::INT4})
        for (QuantShape s : SHAPES) {
            CAPTURE(s.out);
            CAPTURE(s.in);
            QuantizedWeight cpu = make(f, seeded_normal({s.out, s.in}, 2));
            QuantizedWeight gpu = cpu.to(Device::cuda());
            CHECK(dequantize(gpu).to(Device::cpu()).to_vector<float>() == dequantize(cpu).to_vector<float>());
            CHECK(dequantize(gpu, DType::F64).to(Device::cpu()).to_vector<double>() ==
                  dequantize(cpu, DType::F64).to_vector<double>());
            for (int64_t M : {1, 3, 130}) {
                CAPTURE(M);
                Tensor x = seeded_normal({M, s.in}, 3), dy = seeded_normal({M, s.out}, 4);
                CHECK(max_rel(raw::quant_matmul(x.to(Device::cuda()), gpu), raw::quant_matmul(x, cpu)) < 1e-5);
                CHECK(max_rel(raw::quant_matmul_t(dy.to(Device::cuda()), gpu), raw::quant_matmul_t(dy, cpu)) < 1e-5);
            }
        }
}

TEST_CASE("cuda: QuantLinear forward and input gradient match the CPU" * doctest::skip(NO_GPU())) {
    Generator gen(5);
    nn::Linear linear(256, 96, true, gen);
    auto on_cpu = nn::QuantLinear::from_linear(linear, {});
    auto on_gpu = nn::QuantLinear::from_linear(linear, {});
    on_gpu->to(Device::cuda());
    CHECK(on_gpu->weight.device().is_cuda());
    Tensor x = seeded_normal({4, 9, 256}, 6), g = seeded_normal({4, 9, 96}, 7);
    Tensor xc = x.detach(), xg = x.to(Device::cuda()).detach();
    xc.set_requires_grad(), xg.set_requires_grad();
    Tensor yc = on_cpu->forward(xc), yg = on_gpu->forward(xg);
    CHECK(max_rel(yg, yc) < 1e-5);
    yc.backward(g);
    yg.backward(g.to(Device::cuda()));
    CHECK(max_rel(xg.grad(), xc.grad()) < 1e-5);
}
