// The fused CUDA attention kernel (tensor/cuda/attention.cu) against the CPU kernel
// (tensor/cpu/attention.cpp), forward values and the gradients of q, k, v, through the op-table
// harness (tests/op_table.h): lengths that are not a multiple of the kernel's tiles (16 rows a
// block, 32 streamed), head dims 40, 64 and 80 (lanes left idle in the last 32-chunk), GQA,
// padding masks (with a batch whose keys are all padding: the uniform row), prefix keys (Tk > Tq),
// both S2-Attn forms, f64, a strided q, and the error for a head dim the kernel does not take.
// The cases skip themselves where no GPU answers; with EMBER_TEST_GPU_AS_CPU "the GPU" is the CPU.
#include <cmath>

#include "tensor/cuda/cuda.h"
#include "tests/op_table.h"

using namespace ember;
using namespace ember::testing;

#ifdef EMBER_TEST_GPU_AS_CPU
#define NO_GPU false
#else
#define NO_GPU (!cuda_is_available())
#endif

namespace {

#ifdef EMBER_TEST_GPU_AS_CPU
const Device GPU = Device::cpu();
#else
const Device GPU = Device::cuda();
#endif

Tensor normal(const Shape& shape, uint64_t seed, DType dtype = DType::F32) {
    Generator gen(seed);
    return randn(shape, gen, dtype);
}

// (B, Tk) with 1 = real key: batch b keeps its first Tk - pad[b] keys (pad[b] == Tk: all padding).
Tensor padding(int64_t Tk, const std::vector<int64_t>& pad) {
    std::vector<float> m;
    for (int64_t p : pad)
        for (int64_t j = 0; j < Tk; ++j) m.push_back(j < Tk - p ? 1.f : 0.f);
    return from_vector(m, {int64_t(pad.size()), Tk});
}

struct Attn {
    std::string name;
    int64_t B, H, Hkv, Tq, Tk, D;
    raw::AttentionPattern pattern;
    DType dtype = DType::F32;
    bool strided_q = false;  // q as split_heads leaves it: (B, T, H, D) permuted
};

std::vector<OpCase> attention_cases() {
    raw::AttentionPattern plain, causal;
    causal.causal = true;
    auto padded = [](bool is_causal, Tensor kp) {
        raw::AttentionPattern p;
        p.causal = is_causal, p.key_padding = kp;
        return p;
    };
    auto s2 = [](int64_t G, bool roll, bool is_causal) {
        raw::AttentionPattern p;
        p.causal = is_causal, p.group = G, p.group_roll = roll;
        return p;
    };
    const std::vector<Attn> shapes = {
        {"causal, T = 77, D = 40", 1, 2, 2, 77, 77, 40, causal},
        {"no mask, GQA 4/2, T = 33, D = 64", 2, 4, 2, 33, 33, 64, plain},
        {"causal, GQA 6/2, T = 50, D = 80, strided q", 1, 6, 2, 50, 50, 80, causal, DType::F32, true},
        {"causal with padding, T = 45, D = 40", 2, 2, 1, 45, 45, 40, padded(true, padding(45, {0, 13}))},
        {"padding, one batch all padding, D = 64", 2, 2, 2, 21, 21, 64, padded(false, padding(21, {5, 21}))},
        {"prefix keys: causal, Tq = 19, Tk = 27, padding, D = 80", 2, 4, 2, 19, 27, 80,
         padded(true, padding(27, {3, 0}))},
        {"prefix keys without mask, Tq = 1, Tk = 70 (decoding), D = 64", 1, 4, 1, 1, 70, 64, plain},
        {"S2-Attn segments, causal, T = 48, G = 12, D = 40", 1, 4, 4, 48, 48, 40, s2(12, false, true)},
        {"S2-Attn segments, no mask, GQA, T = 60, G = 20, D = 64", 1, 4, 2, 60, 60, 64, s2(20, false, false)},
        {"S2-Attn roll, causal (the wrap), T = 48, G = 12, D = 80", 2, 4, 2, 48, 48, 80, s2(12, true, true)},
        {"S2-Attn roll, no mask, T = 40, G = 8, D = 40", 1, 2, 1, 40, 40, 40, s2(8, true, false)},
        {"S2-Attn roll, causal, T = 96, G = 32 (one tile a group), D = 64", 1, 2, 2, 96, 96, 64,
         s2(32, true, true)},
        {"f64 causal with padding, GQA, T = 35, D = 40", 2, 4, 2, 35, 35, 40,
         padded(true, padding(35, {0, 9})), DType::F64},
        {"f64 S2-Attn roll, causal, T = 36, G = 12, D = 80", 1, 2, 2, 36, 36, 80, s2(12, true, true),
         DType::F64},
    };
    std::vector<OpCase> cases;
    uint64_t seed = 900;
    for (const Attn& a : shapes) {
        const Shape qshape = a.strided_q ? Shape{a.B, a.Tq, a.H, a.D} : Shape{a.B, a.H, a.Tq, a.D};
        std::vector<Tensor> inputs = {normal(qshape, ++seed, a.dtype), normal({a.B, a.Hkv, a.Tk, a.D}, ++seed, a.dtype),
                                      normal({a.B, a.Hkv, a.Tk, a.D}, ++seed, a.dtype)};
        const raw::AttentionPattern pattern = a.pattern;
        const bool strided = a.strided_q;
        const double scale = 1.0 / std::sqrt(double(a.D));
        cases.push_back({"fused attention " + a.name, inputs,
                         [pattern, strided, scale](OpInputs v) {
                             Tensor q = strided ? v[0].permute({0, 2, 1, 3}) : v[0];
                             return fused_attention(q, v[1], v[2], pattern, scale);
                         },
                         a.dtype == DType::F64 ? 1e-10 : 2e-5});
    }
    return cases;
}

}  // namespace

TEST_CASE("cuda: the fused attention kernel matches the CPU kernel, forward and backward" *
          doctest::skip(NO_GPU)) {
    const std::vector<CaseReport> reports = run_op_table(attention_cases(), GPU);
    CHECK_MESSAGE(failure_list(reports).empty(), failure_list(reports));
}

#if defined(EMBER_WITH_CUDA) && !defined(EMBER_TEST_GPU_AS_CPU)
TEST_CASE("cuda: the fused attention kernel refuses a head dim above 256, naming it" *
          doctest::skip(NO_GPU)) {
    Tensor q = zeros({1, 1, 3, 257}, DType::F32, Device::cuda());
    const std::string msg = error_of([&] { raw::attention_forward(q, q, q, raw::AttentionPattern(), 1.0); });
    CHECK_MESSAGE(contains(msg, "head dims up to 256, got D = 257"), msg);
}
#endif
