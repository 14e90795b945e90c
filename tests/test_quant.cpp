// 4-bit weights (tensor/quant.h): NF4 bit for bit as bitsandbytes packs it, double quantization,
// group-wise INT4, and the kernels (matvec, GEMM with decoding in the packing, the input
// gradient) against dequantize-then-matmul.
#include <cmath>
#include <cstdio>

#include "nn/quant_checkpoint.h"
#include "nn/quant_linear.h"
#include "models/gpt.h"
#include "nn/safetensors.h"
#include "tensor/parallel.h"
#include "tensor/quant_kernels.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

std::vector<uint8_t> bytes_of(const ByteBuffer& b) {
    ByteBuffer host = b.to(Device::cpu());
    return std::vector<uint8_t>(host.data(), host.data() + host.bytes);
}

// The reference every kernel is held to: the f32 weight, built, then an ordinary matmul.
Tensor reference_forward(const Tensor& x, const QuantizedWeight& w) {
    return raw::matmul(x, raw::transpose(dequantize(w), 0, 1));
}

double max_rel(const Tensor& got, const Tensor& want) {
    double scale = 0;
    for (double v : want.to_vector<double>()) scale = std::max(scale, std::abs(v));
    return max_abs_diff(got, want) / std::max(scale, 1e-30);
}

}  // namespace

TEST_CASE("quant: the 16 NF4 values times an absmax round-trip exactly") {
    // Each block holds the table scaled by its absmax (the block's largest |value| is 1 * absmax),
    // in a scrambled order, so every code and both nibbles are exercised.
    const float absmaxes[4] = {1.0f, 0.0625f, 3.5f, 1e-3f};
    std::vector<float> w;
    for (float a : absmaxes)
        for (int rep = 0; rep < 4; ++rep)
            for (int i = 0; i < 16; ++i) w.push_back(NF4_VALUES[size_t((i * 7 + rep * 3) % 16)] * a);
    Tensor weight = from_vector(w, {4, 64});
    for (bool dq : {false, true}) {
        CAPTURE(dq);
        QuantizedWeight q = quantize_nf4(weight, dq);
        std::vector<float> back = dequantize(q).to_vector<float>();
        if (!dq) {
            CHECK(back == w);  // exact: the codes are the table's indices, absmax is exact
        } else {
            // Double quantization approximates each absmax (8 bits), so compare with the
            // absmaxes it kept: the codes themselves must still be exact.
            std::vector<float> a = nf4_block_absmax(q).to_vector<float>();
            for (size_t i = 0; i < w.size(); ++i)
                CHECK(back[i] == NF4_VALUES[size_t(((i % 16) * 7 + (i / 16 % 4) * 3) % 16)] * a[i / 64]);
        }
    }
}

TEST_CASE("quant: NF4 packs a block of 64 normals into the bytes bitsandbytes gives") {
    // 64 normals (Python random.Random(13).gauss(0, 1), rounded to 6 decimals). The expected
    // bytes were derived outside Ember from the published algorithm: absmax = max |x|; for each
    // x the index of the NF4 value nearest to x * f32(1 / absmax) (an argmin over the 16 values,
    // not the mid-point tree, and no x within 1e-4 of a tie); byte j = code(2j) << 4 | code(2j+1).
    const std::vector<float> x = {
        -0.086019f, 1.518092f,  -0.782983f, -1.781108f, 0.284510f,  0.665759f,  0.430092f,
        0.570286f,  -0.052935f, -0.525559f, -0.680416f, -0.135631f, -0.294342f, 1.021349f,
        0.716616f,  -1.166834f, 0.800115f,  0.072755f,  1.223823f,  1.613246f,  0.663974f,
        -1.685057f, 0.762860f,  -1.465970f, 1.687625f,  -0.556285f, -0.082065f, 1.945943f,
        -1.671430f, 0.139097f,  -0.974718f, -0.415549f, -0.697003f, 0.798625f,  -0.194870f,
        0.460110f,  0.758213f,  -1.620694f, 1.526228f,  -0.137683f, -1.565803f, -0.555141f,
        0.995008f,  1.126526f,  -0.584453f, 0.217078f,  0.356693f,  1.162739f,  -0.023079f,
        1.108980f,  -0.791204f, -0.617702f, 0.791222f,  0.850894f,  0.066947f,  0.730104f,
        0.326630f,  0.897838f,  1.300311f,  0.644894f,  0.951951f,  -0.285241f, -0.451687f,
        -2.280667f};
    const std::vector<uint8_t> expected = {
        0x7E, 0x31, 0x9A, 0x9A, 0x75, 0x46, 0x6C, 0xB2, 0xB7, 0xDE, 0xA1, 0xB1, 0xE4, 0x7E, 0x18, 0x35,
        0x4B, 0x69, 0xB1, 0xE6, 0x14, 0xCC, 0x48, 0x9D, 0x7C, 0x34, 0xBB, 0x7B, 0x9C, 0xDA, 0xC6, 0x50};
    QuantizedWeight q = quantize_nf4(from_vector(x, {1, 64}), /*double_quant=*/false);
    CHECK(bytes_of(q.codes) == expected);
    REQUIRE(q.absmax.numel() == 1);
    CHECK(q.absmax.item<float>() == 2.280667f);
    // The same bytes from a (2, 32) view of the same numbers: blocks are over the flattened weight.
    CHECK(bytes_of(quantize_nf4(from_vector(x, {2, 32}), false).codes) == expected);
}

TEST_CASE("quant: every NF4 code is the nearest table value, whatever the size and tail") {
    // The argmin rule, written independently of the kernels' mid-point compares, over sizes that
    // leave a short last block and an odd element count (its last byte's low nibble is 0).
    for (int64_t n : {64, 100, 127, 333, 4096 + 7}) {
        CAPTURE(n);
        Tensor w = seeded_normal({1, n}, 100 + uint64_t(n));
        QuantizedWeight q = quantize_nf4(w, false);
        std::vector<float> x = w.to_vector<float>(), a = q.absmax.to_vector<float>();
        std::vector<uint8_t> b = bytes_of(q.codes);
        REQUIRE(int64_t(b.size()) == (n + 1) / 2);
        for (int64_t i = 0; i < n; ++i) {
            const float y = x[size_t(i)] * (1.0f / a[size_t(i / 64)]);
            int best = 0;
            for (int k = 1; k < 16; ++k)
                if (std::abs(y - NF4_VALUES[size_t(k)]) < std::abs(y - NF4_VALUES[size_t(best)])) best = k;
            const uint8_t byte = b[size_t(i / 2)];
            CHECK((i % 2 ? byte & 15 : byte >> 4) == best);
        }
        if (n % 2) CHECK((b.back() & 15) == 0);
    }
}

TEST_CASE("quant: the 8-bit dynamic code and its nearest-code search") {
    const auto& code = dynamic_code_8bit();
    // The extremes: 1, and minus the last mid-point of linspace(0.1, 1, 65): -(0.9859375 + 1) / 2.
    CHECK(code[0] == doctest::Approx(-0.99296875).epsilon(1e-6));
    CHECK(code[255] == 1.0f);
    CHECK(std::count(code.begin(), code.end(), 0.0f) == 1);
    for (size_t i = 1; i < 256; ++i) CHECK(code[i - 1] < code[i]);
    // Every code value maps to itself; values between two neighbours go to the nearer one.
    for (int i = 0; i < 256; ++i) CHECK(quantize_to_code_8bit(code.data(), code[size_t(i)]) == i);
    for (int i = 1; i < 255; ++i) {
        const float lo = code[size_t(i)], hi = code[size_t(i + 1)], mid = 0.5f * (lo + hi);
        CHECK(quantize_to_code_8bit(code.data(), lo + 0.25f * (mid - lo)) == i);
        CHECK(quantize_to_code_8bit(code.data(), hi - 0.25f * (hi - mid)) == i + 1);
    }
}

TEST_CASE("quant: double quantization keeps 4.127 bits per parameter and the absmaxes close") {
    Tensor w = seeded_normal({2048, 1024}, 3, 0.02);
    QuantizedWeight q = quantize_nf4(w);
    INFO(q.describe());
    // 4 bits + 8 / 64 + 32 / (64 * 256) = 4.1270 (and 32 bits of offset per weight).
    CHECK(std::abs(q.bits_per_param() - 4.127) < 1e-3);
    CHECK(quantize_nf4(w, false).bits_per_param() == doctest::Approx(4.5).epsilon(1e-9));
    // The nested code has about 2 decimal digits for |absmax - mean|: each absmax within 1% of
    // the block's range from its exact value.
    std::vector<float> exact = quantize_nf4(w, false).absmax.to_vector<float>();
    std::vector<float> approx = nf4_block_absmax(q).to_vector<float>();
    float lo = *std::min_element(exact.begin(), exact.end()), hi = *std::max_element(exact.begin(), exact.end());
    double worst = 0;
    for (size_t i = 0; i < exact.size(); ++i) worst = std::max(worst, double(std::abs(exact[i] - approx[i])));
    CHECK(worst < 0.01 * (hi - lo));
    CHECK(worst > 0);  // it is a real approximation, not a copy
}

TEST_CASE("quant: NF4 error is bounded by half the widest gap of the table") {
    Tensor w = seeded_normal({64, 256}, 5);
    QuantizedWeight q = quantize_nf4(w, false);
    std::vector<float> a = q.absmax.to_vector<float>(), x = w.to_vector<float>(),
                       back = dequantize(q).to_vector<float>();
    const double widest_half_gap = 0.5 * (1.0 - 0.6961928009986877);  // between -1 and the next
    for (size_t i = 0; i < x.size(); ++i)
        CHECK(std::abs(x[i] - back[i]) <= widest_half_gap * a[i / 64] * (1 + 1e-6));
}

TEST_CASE("quant: INT4 groups are GPTQ's asymmetric min-max, codes in [0, 15]") {
    Tensor w = seeded_normal({8, 96}, 7);
    QuantizedWeight q = quantize_int4(w, 32);
    CHECK(q.bits_per_param() == doctest::Approx(4 + 64.0 / 32).epsilon(1e-9));  // f32 s and z
    std::vector<float> x = w.to_vector<float>(), back = dequantize(q).to_vector<float>();
    std::vector<float> s = q.scales.to_vector<float>(), z = q.zeros.to_vector<float>();
    for (size_t i = 0; i < x.size(); ++i) {
        const size_t g = i / 32;
        CHECK(z[g] == std::nearbyint(z[g]));  // integer zero points before any merge
        CHECK(std::abs(x[i] - back[i]) <= 0.5f * s[g] * (1 + 1e-5f));  // round to nearest
    }
    // A row's extremes land on codes 0 and 15 (the range includes both).
    std::vector<uint8_t> codes = bytes_of(q.codes);
    int seen0 = 0, seen15 = 0;
    for (uint8_t b : codes) seen0 += (b >> 4) == 0 || (b & 15) == 0, seen15 += (b >> 4) == 15 || (b & 15) == 15;
    CHECK(seen0 > 0);
    CHECK(seen15 > 0);
}

TEST_CASE("quant: bad arguments get clear errors") {
    CHECK(contains(error_of([] { quantize_int4(zeros({4, 30}), 32); }), "not a multiple of the group size"));
    CHECK(contains(error_of([] { quantize_nf4(zeros({4, 64}), true, 48); }), "power of two"));
    CHECK(contains(error_of([] { quantize_nf4(zeros({4}), true); }), "2-D weight"));
    CHECK(contains(error_of([] { quantize_nf4(zeros({4, 64}, DType::F64)); }), "f32"));
    QuantizedWeight q = quantize_nf4(seeded_normal({16, 64}, 1));
    CHECK(contains(error_of([&] { raw::quant_matmul(zeros({3, 32}), q); }), "last dim must be 64"));
    CHECK(contains(error_of([&] { nn::quant_linear(zeros({3, 63}), q, Tensor()); }), "must be 64"));
}

// ---- kernels against dequantize-then-matmul ----

TEST_CASE("quant: forward kernels equal the dequantized product (matvec, small batch, GEMM)") {
    struct Shape2 { int64_t out, in; };
    for (bool avx512 : {true, false})  // the AVX-512 build (where the CPU has it) and the AVX2 one
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::INT4})
        for (Shape2 s : {Shape2{37, 128}, Shape2{300, 512}, Shape2{64, 96}})
            for (int64_t M : {1, 3, 8, 9, 70}) {
                if (f == QuantFormat::NF4 && s.in % 64 != 0) continue;
                const char* format = quant_format_name(f);
                CAPTURE(format);
                CAPTURE(s.out);
                CAPTURE(s.in);
                CAPTURE(M);
                Tensor w = seeded_normal({s.out, s.in}, 11);
                QuantizedWeight q = f == QuantFormat::NF4 ? quantize_nf4(w) : quantize_int4(w, 32);
                Tensor x = seeded_normal({M, s.in}, 12);
                cpu::allow_avx512_quant(avx512);
                CHECK(max_rel(raw::quant_matmul(x, q), reference_forward(x, q)) < 1e-5);
                cpu::allow_avx512_quant(true);
            }
}

TEST_CASE("quant: the forward GEMM's packing: depths not a multiple of 8, partial panels, both builds") {
    // INT4 groups of 4 over 36 inputs: each packed slab is 36 deep, four 8 x 8 transposes and a
    // tail of 4; 40 outputs end in a partial panel of 8 in both builds (NR 32 or 16).
    for (bool avx512 : {true, false}) {
        CAPTURE(avx512);
        cpu::allow_avx512_quant(avx512);
        Tensor w = seeded_normal({40, 36}, 17);
        QuantizedWeight q = quantize_int4(w, 4);
        Tensor x = seeded_normal({20, 36}, 18);
        CHECK(max_rel(raw::quant_matmul(x, q), reference_forward(x, q)) < 1e-5);
        cpu::allow_avx512_quant(true);
    }
}

TEST_CASE("quant: the matvec's paths: whole runs of codes a step, groups without them, long rows") {
    // A run is 32 codes with AVX-512 and 16 with AVX2: groups of 96 are whole runs in both builds,
    // 16 and 48 in the AVX2 one only, and 8 and 24 in neither (the general path).
    for (bool avx512 : {true, false}) {
        CAPTURE(avx512);
        cpu::allow_avx512_quant(avx512);
        for (int64_t group : {8, 16, 24, 48, 96}) {
            CAPTURE(group);
            Tensor w = seeded_normal({37, 96}, 13);
            QuantizedWeight q = quantize_int4(w, group);
            Tensor x = seeded_normal({1, 96}, 14);
            CHECK(max_rel(raw::quant_matmul(x, q), reference_forward(x, q)) < 1e-5);
        }
        // Rows of 130 NF4 blocks: the absmaxes are decoded 64 blocks at a time, and with double
        // quantization the nested block (256 blocks) changes inside a row's second chunk.
        for (bool double_quant : {true, false}) {
            CAPTURE(double_quant);
            Tensor w = seeded_normal({5, 64 * 130}, 15);
            QuantizedWeight q = quantize_nf4(w, double_quant);
            Tensor x = seeded_normal({1, 64 * 130}, 16);
            CHECK(max_rel(raw::quant_matmul(x, q), reference_forward(x, q)) < 1e-5);
        }
        cpu::allow_avx512_quant(true);
    }
}

TEST_CASE("quant: the input-gradient kernel equals dy times the dequantized weight") {
    for (bool avx512 : {true, false})
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::INT4})
        for (int64_t M : {1, 5, 70}) {
            const char* format = quant_format_name(f);
            CAPTURE(format);
            CAPTURE(M);
            Tensor w = seeded_normal({300, 2 * 320}, 21);  // in not a multiple of NR = 16 panels' KC
            QuantizedWeight q = f == QuantFormat::NF4 ? quantize_nf4(w) : quantize_int4(w, 32);
            Tensor dy = seeded_normal({M, 300}, 22);
            cpu::allow_avx512_quant(avx512);
            CHECK(max_rel(raw::quant_matmul_t(dy, q), raw::matmul(dy, dequantize(q))) < 1e-5);
            cpu::allow_avx512_quant(true);
        }
}

TEST_CASE("quant: layouts the kernels do not take fall back to dequantize-and-multiply") {
    // NF4 with in % 64 != 0: blocks straddle rows (and rows start mid-byte when in is odd).
    Tensor w = seeded_normal({9, 37}, 31);
    QuantizedWeight q = quantize_nf4(w);
    Tensor x = seeded_normal({4, 37}, 32);
    CHECK(max_rel(raw::quant_matmul(x, q), reference_forward(x, q)) < 1e-6);
    // INT4 with a group that is not a multiple of 8 (the vector width): scalar tails.
    QuantizedWeight q6 = quantize_int4(seeded_normal({5, 36}, 33), 6);
    Tensor x6 = seeded_normal({1, 36}, 34);
    CHECK(max_rel(raw::quant_matmul(x6, q6), reference_forward(x6, q6)) < 1e-5);
    Tensor d6 = seeded_normal({12, 5}, 35);
    CHECK(max_rel(raw::quant_matmul_t(d6, q6), raw::matmul(d6, dequantize(q6))) < 1e-5);
}

TEST_CASE("quant: the threaded GEMM gives the same numbers on 1 and 2 threads") {
    Tensor w = seeded_normal({200, 256}, 41);
    QuantizedWeight q = quantize_nf4(w);
    Tensor x = seeded_normal({50, 256}, 42);
    const int before = num_threads();
    set_num_threads(1);
    std::vector<float> one = raw::quant_matmul(x, q).to_vector<float>();
    set_num_threads(2);
    std::vector<float> two = raw::quant_matmul(x, q).to_vector<float>();
    set_num_threads(before);
    CHECK(one == two);
}

// ---- the frozen quantized Linear ----

TEST_CASE("quant: QuantLinear's input gradient passes a float64 gradcheck") {
    Generator gen(51);
    nn::Linear linear(48, 20, true, gen);
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::INT4}) {
        const char* format = quant_format_name(f);
        CAPTURE(format);
        nn::QuantConfig config;
        config.format = f;
        config.blocksize = 32, config.group_size = 16;
        auto ql = nn::QuantLinear::from_linear(linear, config);
        CHECK(ql->named_parameters().size() == 1);  // the bias only, and frozen
        CHECK(ql->num_parameters(/*trainable_only=*/true) == 0);
        expect_gradcheck([&](const std::vector<Tensor>& in) { return ql->forward(in[0]); },
                         {leaf({2, 3, 48}, 52)});
    }
}

TEST_CASE("quant: QuantLinear in f32 matches a Linear holding the dequantized weight") {
    Generator gen(61);
    nn::Linear linear(128, 64, true, gen);
    auto ql = nn::QuantLinear::from_linear(linear, {});
    nn::Linear ref(128, 64, true, gen);
    ref.weight = dequantize(ql->weight);
    ref.bias = linear.bias.detach();
    Tensor x = seeded_normal({4, 10, 128}, 62);
    x.set_requires_grad();
    Tensor x_ref = x.detach();
    x_ref.set_requires_grad();
    Tensor y = ql->forward(x), y_ref = ref.forward(x_ref);
    CHECK(max_rel(y, y_ref) < 1e-5);
    Tensor g = seeded_normal({4, 10, 64}, 63);
    y.backward(g);
    y_ref.backward(g);
    CHECK(max_rel(x.grad(), x_ref.grad()) < 1e-5);
}

TEST_CASE("quant: quantize_linears replaces every Linear but the kept ones") {
    struct Net : nn::Module {
        std::shared_ptr<nn::Module> a, b, head;  // child slots that take any module, as the models'
        explicit Net(Generator& g)
            : a(std::make_shared<nn::Linear>(64, 64, true, g)),
              b(std::make_shared<nn::Linear>(64, 32, false, g)),
              head(std::make_shared<nn::Linear>(32, 10, false, g)) {
            register_module("a", a), register_module("b", b), register_module("lm_head", head);
        }
        std::string type_name() const override { return "Net"; }
    };
    Generator gen(71);
    auto holder = std::make_shared<Net>(gen);
    Net& net = *holder;
    CHECK(nn::quantize_linears(net, {}, [](const std::string& name) { return name == "lm_head"; }) == 2);
    CHECK(std::dynamic_pointer_cast<nn::QuantLinear>(net.a) != nullptr);
    CHECK(std::dynamic_pointer_cast<nn::QuantLinear>(net.b) != nullptr);
    CHECK(std::dynamic_pointer_cast<nn::Linear>(net.head) != nullptr);
    // Only the head's weight is still a parameter; the quantized biases are frozen.
    CHECK(net.num_parameters(/*trainable_only=*/true) == 32 * 10);
}

// ---- checkpoints in bitsandbytes' layout ----

namespace {
struct TwoLayer : nn::Module {
    std::shared_ptr<nn::Module> up, down;
    TwoLayer(Generator& g, int64_t dim, int64_t hidden)
        : up(std::make_shared<nn::Linear>(dim, hidden, true, g)),
          down(std::make_shared<nn::Linear>(hidden, dim, false, g)) {
        register_module("up", up), register_module("down", down);
    }
    std::string type_name() const override { return "TwoLayer"; }
    Tensor forward(const Tensor& x) override { return down->forward(relu(up->forward(x))); }
};
}  // namespace

TEST_CASE("quant: a quantized model saves with bitsandbytes' keys and loads back bit for bit") {
    for (bool int4 : {false, true}) {
        CAPTURE(int4);
        Generator gen(81);
        auto model = std::make_shared<TwoLayer>(gen, 64, 128);
        nn::QuantConfig config;
        if (int4) config.format = QuantFormat::INT4;
        REQUIRE(nn::quantize_linears(*model, config) == 2);
        const std::string path = "/tmp/ember_test_quant_" + std::to_string(int4) + ".safetensors";
        nn::save_quantized(path, *model);

        std::map<std::string, std::string> dtypes;
        for (const auto& e : nn::read_safetensors_header(path).entries) dtypes[e.name] = e.dtype;
        CHECK(dtypes["up.weight"] == "U8");
        CHECK(dtypes["up.bias"] == "F32");
        if (!int4) {
            CHECK(dtypes["up.weight.absmax"] == "U8");  // double-quantized
            CHECK(dtypes["up.weight.quant_map"] == "F32");
            CHECK(dtypes["up.weight.nested_absmax"] == "F32");
            CHECK(dtypes["up.weight.nested_quant_map"] == "F32");
            CHECK(dtypes["up.weight.quant_state.bitsandbytes__nf4"] == "U8");
            CHECK(dtypes.size() == 13);  // 6 per weight and the bias
        } else {
            CHECK(dtypes["up.weight.scales"] == "F32");
            CHECK(dtypes["up.weight.quant_state.ember__int4"] == "U8");
        }

        // Into a fresh f32 model: its Linears become QuantLinears with the saved codes.
        Generator other(82);
        auto fresh = std::make_shared<TwoLayer>(other, 64, 128);
        nn::load_quantized(path, *fresh);
        auto a = std::dynamic_pointer_cast<nn::QuantLinear>(model->up);
        auto b = std::dynamic_pointer_cast<nn::QuantLinear>(fresh->up);
        REQUIRE(b != nullptr);
        CHECK(bytes_of(a->weight.codes) == bytes_of(b->weight.codes));
        Tensor x = seeded_normal({3, 64}, 83);
        CHECK(model->forward(x).to_vector<float>() == fresh->forward(x).to_vector<float>());
        // And into a model that is already quantized (other weights): the same numbers again.
        Generator third(84);
        auto requant = std::make_shared<TwoLayer>(third, 64, 128);
        nn::quantize_linears(*requant, config);
        nn::load_quantized(path, *requant);
        CHECK(model->forward(x).to_vector<float>() == requant->forward(x).to_vector<float>());
        // A model of another shape is refused with the names.
        Generator g4(85);
        auto wrong = std::make_shared<TwoLayer>(g4, 64, 96);
        CHECK(contains(error_of([&] { nn::load_quantized(path, *wrong); }), "but the model's Linear is (64, 96)"));
        std::remove(path.c_str());
    }
}

// ---- merging ----

TEST_CASE("quant: QA-LoRA's change folds into the zero points: merged == unmerged, codes unchanged") {
    const int64_t out = 48, in = 128, L = 32, r = 4;
    QuantizedWeight w = quantize_int4(seeded_normal({out, in}, 91, 0.05), L);
    Tensor A = seeded_normal({r, in / L}, 92, 0.3), B = seeded_normal({out, r}, 93, 0.3);
    const double s = 16.0 / r;
    // Unmerged: y = x W^T + s B A pool(x), pool = the mean of each group of L inputs.
    Tensor x = seeded_normal({5, in}, 94);
    Tensor pooled = raw::mean(raw::reshape(x, {5, in / L, L}), {-1});
    Tensor unmerged = raw::add(raw::quant_matmul(x, w),
                               raw::mul_scalar(raw::matmul(raw::matmul(pooled, raw::transpose(A, 0, 1)),
                                                           raw::transpose(B, 0, 1)), s));
    // The per-input change is s (B A)[o][g] / L, the same for every input of group g.
    QuantizedWeight merged = w;
    fold_into_zero_points(merged, raw::mul_scalar(raw::matmul(B, A), s / double(L)));
    CHECK(bytes_of(merged.codes) == bytes_of(w.codes));
    CHECK(merged.scales.to_vector<float>() == w.scales.to_vector<float>());
    CHECK(max_rel(raw::quant_matmul(x, merged), unmerged) < 1e-5);
    // The original's zero points are untouched (the merge made new ones).
    for (float z : w.zeros.to_vector<float>()) CHECK(z == std::nearbyint(z));
    CHECK(contains(error_of([&] { fold_into_zero_points(merged, zeros({out, in})); }), "(out, in / L)"));
    QuantizedWeight nf4 = quantize_nf4(seeded_normal({out, in}, 95));
    CHECK(contains(error_of([&] { fold_into_zero_points(nf4, zeros({out, in / L})); }), "INT4"));
}

TEST_CASE("quant: a requantizing merge reports its rounding error") {
    QuantizedWeight w = quantize_nf4(seeded_normal({64, 256}, 96, 0.02));
    Tensor delta = seeded_normal({64, 256}, 97, 0.002);
    RequantizeError err;
    QuantizedWeight merged = requantize_merge(w, delta, &err);
    INFO("max ", err.max_abs, " rms ", err.rms, " max delta ", err.max_abs_delta);
    // The error is NF4's rounding of the new weight: at most half the widest table gap times the
    // block's absmax, and not zero (the codes changed).
    double worst_absmax = 0;
    for (float a : nf4_block_absmax(merged).to_vector<float>()) worst_absmax = std::max(worst_absmax, double(a));
    CHECK(err.max_abs <= 0.5 * (1 - 0.6961928009986877) * worst_absmax * 1.02);
    CHECK(err.rms > 0);
    CHECK(err.max_abs_delta == doctest::Approx(max_abs_diff(delta, zeros({64, 256}))));
    CHECK(bytes_of(merged.codes) != bytes_of(w.codes));
}

// ---- whole models ----

TEST_CASE("quant: a GPT of either dialect quantized but for its head stays close and trains its inputs") {
    for (auto style : {models::GPTConfig::Style::GPT2, models::GPTConfig::Style::Llama}) {
        const bool llama = style == models::GPTConfig::Style::Llama;
        CAPTURE(llama);
        models::GPTConfig c = llama ? models::GPTConfig::llama(64, 32, 64, 2, 4, 2, 128)
                                    : models::GPTConfig::gpt2(64, 32, 64, 2, 4);
        if (llama) c.tie_embeddings = false;
        auto f32 = std::make_shared<models::GPT>(c, 7);
        auto q = std::make_shared<models::GPT>(c, 7);
        const int replaced = nn::quantize_linears(*q, {}, [](const std::string& n) { return n == "lm_head"; });
        // GPT-2: c_attn, c_proj, c_fc, mlp c_proj per block; LLaMA: q, k, v, o, gate, up, down.
        CHECK(replaced == (llama ? 7 : 4) * 2);
        if (llama) CHECK(std::dynamic_pointer_cast<nn::Linear>(q->get_submodule("lm_head")) != nullptr);
        Generator gen(8);
        Tensor ids = randint(0, 64, {2, 16}, gen);
        Tensor a = f32->forward(ids), b = q->forward(ids);
        // 4-bit weights move the logits by a few percent of their range, not more.
        const double rel = max_rel(b, a);
        INFO("max relative logit change ", rel);
        CHECK(rel < 0.1);
        CHECK(rel > 0);
        // The frozen 4-bit layers pass gradients to what lies below them (here the embeddings).
        Tensor loss = sum(mul(b, b));
        loss.backward();
        bool any = false;
        for (auto& [name, p] : q->named_parameters())
            if (name.find("wte") != std::string::npos || name.find("embed_tokens") != std::string::npos)
                any = any || (p.grad().defined() && max_abs_diff(p.grad(), zeros_like(p.grad())) > 0);
        CHECK(any);
    }
}

TEST_CASE("quant: the byte-tensor writer checks its entries, and a corrupt quant state is refused") {
    const std::string path = "/tmp/ember_test_quant_bytes.safetensors";
    nn::StateDict sd = {{"a", zeros({2})}};
    CHECK(contains(error_of([&] { nn::save_safetensors_with_bytes(path, sd, {{"b", nn::ByteTensor{{3}, {1, 2}}}}); }),
                   "has 2 bytes but its shape [3] holds 3"));
    CHECK(contains(error_of([&] { nn::save_safetensors_with_bytes(path, sd, {{"a", nn::ByteTensor{{1}, {1}}}}); }),
                   "both a tensor and a byte tensor"));
    // A U8 tensor the reader cannot place, and a quant state that is not JSON.
    nn::save_safetensors_with_bytes(path, sd, {{"stray", nn::ByteTensor{{1}, {7}}}});
    CHECK(contains(error_of([&] { nn::read_quantized(path); }), "'stray' belongs to no quantized weight"));
    const std::string junk = "not json";
    nn::save_safetensors_with_bytes(path, sd, {{"l.weight.quant_state.bitsandbytes__nf4",
                                                nn::ByteTensor{{int64_t(junk.size())}, {junk.begin(), junk.end()}}}});
    CHECK(contains(error_of([&] { nn::read_quantized(path); }), "is not a quant state"));
    std::remove(path.c_str());
}
