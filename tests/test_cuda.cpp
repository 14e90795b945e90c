// CUDA against CPU: one table of op cases drives the parity of forward values and of the input
// gradients (autograd backward with the same upstream gradient on both devices), at awkward sizes
// (1, 7, 127, 1025, more than 65,535 rows) and on transposed, sliced and broadcast inputs. Then
// what the table cannot say: random fills and dropout masks identical to the CPU's, the fused
// AdamW step, gradcheck in f64 through the GPU, index errors raised from a kernel, TF32.
//
// Every "cuda:" case skips itself where no GPU answers (cuda_is_available() is a cheap,
// exception-free device-count query, safe at static-initialization time where doctest evaluates
// the decorator). The last case runs everywhere: without a GPU, moving a tensor there must fail
// with a clear message.
#include <cmath>
#include <functional>
#include <memory>
#include <sstream>

#include "nn/optim.h"
#include "tensor/cuda/cuda.h"
#include "tests/op_table.h"
#include "tests/raw_test_helpers.h"
#ifdef EMBER_WITH_CUDA
#include "tensor/cuda/kernels.h"
#endif

using namespace ember;
using namespace ember::testing;

// EMBER_TEST_GPU_AS_CPU (a development aid, off in every build): "the GPU" is the CPU and no
// case skips, so the table's cases and the harness can be exercised on a machine without a GPU.
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
using Inputs = OpInputs;

Tensor normal(const Shape& shape, uint64_t seed, DType dtype = DType::F32) {
    Generator gen(seed);
    return randn(shape, gen, dtype);
}

// Uniform in [lo, hi]: for ops defined on part of the line.
Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype = DType::F32) {
    Generator gen(seed);
    return raw::add_scalar(raw::mul_scalar(rand(shape, gen, dtype), hi - lo), lo);
}

// Small integers as floats, so comparisons meet ties.
Tensor ties(const Shape& shape, uint64_t seed) {
    Generator gen(seed);
    return raw::to_dtype(randint(-2, 3, shape, gen), DType::F32);
}

Tensor ids(const Shape& shape, int64_t high, uint64_t seed, DType dtype = DType::I64) {
    Generator gen(seed);
    return randint(0, high, shape, gen, dtype);
}

// For the cases outside the table: a CHECK that names the first bad element.
void check_same(const std::string& what, const Tensor& cpu, const Tensor& gpu, double tol) {
    CaseReport r;
    compare_into(r, what, cpu, gpu, GPU, tol);
    CHECK_MESSAGE(r.ok(), failure_list({r}));
}

// ---------------------------------------------------------------- the table

std::vector<OpCase> op_cases() {
    std::vector<OpCase> cases;
    auto add = [&](std::string name, std::vector<Tensor> inputs, OpFn fn, double tol = 0) {
        cases.push_back({std::move(name), std::move(inputs), std::move(fn), tol});
    };
    const DType F64 = DType::F64;

    // ---- copies ----
    add("contiguous of a transpose (127, 7)", {normal({7, 127}, 1)},
        [](Inputs v) { return v[0].t().contiguous(); });
    add("clone of a strided slice", {normal({7, 1025}, 2)},
        [](Inputs v) { return v[0].slice(1, 3, 1000, 3).clone(); });
    add("to_dtype f32 -> f64 -> f32", {normal({127}, 3)},
        [](Inputs v) { return v[0].to(DType::F64).to(DType::F32) * 2.0; });
    add("broadcast copy (1, 7) -> (1025, 7)", {normal({1, 7}, 4)},
        [](Inputs v) { return v[0].expand({1025, 7}).contiguous(); });
    add("i64 -> f32 copy", {ids({127}, 50, 5)},
        [](Inputs v) { return v[0].to(DType::F32); });
    add("cat along dims 0 and 1", {normal({7, 5}, 6), normal({5, 3}, 7)},
        [](Inputs v) { return cat({v[0], v[1].t()}, 0).t(); });
    add("stack", {normal({127}, 8), normal({127}, 9)},
        [](Inputs v) { return stack({v[0], v[1]}, 1); });
    add("split", {normal({7, 9}, 10)},
        [](Inputs v) { return split(v[0], {2, 7}, 1)[1] * 3.0; });

    // ---- unary ops, forward and derivative ----
    struct U { const char* name; std::function<Tensor(const Tensor&)> f; double lo, hi; };
    const std::vector<U> unaries = {
        {"neg", [](const Tensor& x) { return neg(x); }, -3, 3},
        {"exp", [](const Tensor& x) { return exp(x); }, -3, 3},
        {"log", [](const Tensor& x) { return log(x); }, 0.1, 4},
        {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.1, 4},
        {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.1, 4},
        {"abs", [](const Tensor& x) { return abs(x); }, -3, 3},
        {"sign", [](const Tensor& x) { return sign(x); }, -3, 3},
        {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -3, 3},
        {"relu", [](const Tensor& x) { return relu(x); }, -3, 3},
        {"gelu tanh", [](const Tensor& x) { return gelu(x, GeluApprox::Tanh); }, -3, 3},
        {"gelu erf", [](const Tensor& x) { return gelu(x, GeluApprox::None); }, -3, 3},
        {"silu", [](const Tensor& x) { return silu(x); }, -3, 3},
    };
    uint64_t seed = 100;
    for (const U& u : unaries) {
        auto f = u.f;
        add(std::string(u.name) + " (1025)", {uniform({1025}, u.lo, u.hi, ++seed)},
            [f](Inputs v) { return f(v[0]); });
        add(std::string(u.name) + " transposed (127, 7)", {uniform({7, 127}, u.lo, u.hi, ++seed)},
            [f](Inputs v) { return f(v[0].t()); });
    }
    add("exp (1), f64", {normal({1}, 120, F64)}, [](Inputs v) { return exp(v[0]); });

    // ---- binary ops, with broadcasting ----
    add("add broadcast (127, 7) + (7)", {normal({127, 7}, 130), normal({7}, 131)},
        [](Inputs v) { return v[0] + v[1]; });
    add("sub broadcast (1) - transposed", {normal({1}, 132), normal({7, 127}, 133)},
        [](Inputs v) { return v[0] - v[1].t(); });
    add("mul (1025) * (1025)", {normal({1025}, 134), normal({1025}, 135)},
        [](Inputs v) { return v[0] * v[1]; });
    add("div by a column", {normal({127, 7}, 136), uniform({127, 1}, 0.5, 2, 137)},
        [](Inputs v) { return v[0] / v[1]; });
    add("pow", {uniform({7, 127}, 0.5, 2, 138), normal({127}, 139)},
        [](Inputs v) { return pow(v[0], v[1]); });
    add("maximum / minimum", {normal({127, 7}, 140), normal({1, 7}, 141)},
        [](Inputs v) { return maximum(v[0], v[1]) + minimum(v[0], v[1]) * 2.0; });
    add("scalar ops and clamp", {normal({1025}, 142)},
        [](Inputs v) { return clamp(pow(v[0] * 1.5 + 0.25, 3.0), -2, 2) / 4.0; });
    add("f64 binary, 3-D broadcast", {normal({3, 1, 7}, 143, F64), normal({5, 1}, 144, F64)},
        [](Inputs v) { return v[0] * v[1] - v[1]; });
    add("comparisons with ties", {ties({127, 7}, 145), ties({7}, 146)}, [](Inputs v) {
        return eq(v[0], v[1]) + ne(v[0], v[1]) * 2.0 + lt(v[0], v[1]) * 4.0 +
               le(v[0], v[1]) * 8.0 + gt(v[0], v[1]) * 16.0 + ge(v[0], v[1]) * 32.0;
    });
    add("integer binary (i64)", {ids({127}, 9, 147), ids({127}, 9, 148)}, [](Inputs v) {
        return raw::add(raw::mul(v[0], v[1]), raw::binary(BinaryOp::Maximum, v[0], v[1]));
    });
    add("where / masked_fill", {normal({127, 7}, 149), normal({7}, 150), normal({127, 1}, 151)},
        [](Inputs v) {
            Tensor cond = gt(v[0].detach(), v[1].detach());
            return where(cond, v[0], v[1]) + masked_fill(v[2], cond, -1.5);
        });
    add("where with an i64 condition", {ids({7, 127}, 2, 152), normal({127}, 153), normal({1}, 154)},
        [](Inputs v) { return where(v[0], v[1], v[2]); });
    add("in-place add_ and mul_", {normal({127, 7}, 155), normal({7}, 156)}, [](Inputs v) {
        Tensor t = raw::clone(v[0]);
        raw::add_(t, v[1], 0.5);
        raw::mul_(t, -3);
        Tensor s = raw::transpose(raw::clone(v[0]), 0, 1);  // in place through a strided view
        raw::add_(s, raw::transpose(v[0], 0, 1), 2);
        return raw::add(t, raw::transpose(s, 0, 1));
    });

    // ---- reductions ----
    add("sum of all (1025)", {normal({1025}, 160)}, [](Inputs v) { return sum(v[0]); });
    add("sum of one element", {normal({1}, 161)}, [](Inputs v) { return sum(v[0]); });
    add("sum over 70000 rows (block rows)", {normal({70000, 3}, 162)},
        [](Inputs v) { return sum(v[0], {0}); });
    add("sum of 70000 rows (warp rows, > 65535)", {normal({70000, 3}, 163)},
        [](Inputs v) { return sum(v[0], {1}); });
    add("mean keepdim over dims (0, 2)", {normal({7, 5, 127}, 164)},
        [](Inputs v) { return mean(v[0], {0, 2}, true); });
    add("max and min over a transposed dim", {normal({127, 7}, 165)},
        [](Inputs v) { return max(v[0].t(), {1}) + min(v[0], {0}); });
    add("max over long rows (3, 5000)", {normal({3, 5000}, 166)},
        [](Inputs v) { return max(v[0], {1}); });
    add("argmax with ties", {ties({7, 1025}, 167)},
        [](Inputs v) { return argmax(v[0], 1); });
    add("argmax over dim 0", {normal({127, 7}, 168)},
        [](Inputs v) { return argmax(v[0], 0, true); });
    add("var and std", {normal({7, 127}, 169)},
        [](Inputs v) { return var(v[0], {1}) + sum(std_dev(v[0], {0}, false)); });
    add("logsumexp", {normal({127, 1025}, 170)}, [](Inputs v) { return logsumexp(v[0], {1}); });
    add("logsumexp with -inf", {normal({7, 5}, 171)}, [](Inputs v) {
        return raw::logsumexp(raw::add(v[0], raw::triu(full({7, 5}, -INFINITY, DType::F32, v[0].device()), 1)), {1});
    });
    add("integer sum / max (i64)", {ids({127, 9}, 100, 172)},
        [](Inputs v) { return raw::add(raw::sum(v[0], {1}), raw::max(v[0], {1})); });
    add("sum f64 (1025, 7)", {normal({1025, 7}, 173, F64)},
        [](Inputs v) { return sum(v[0], {0}); });
    // split rows: few long rows are cut into chunks across blocks, then the chunks combined
    add("sum of all (300000): split row", {normal({300000}, 174)}, [](Inputs v) { return sum(v[0]); });
    add("mean of all f64 (3, 50001): split row", {normal({3, 50001}, 175, F64)},
        [](Inputs v) { return mean(v[0]); });
    add("max and min of long rows (2, 100003): split rows", {normal({2, 100003}, 176)},
        [](Inputs v) { return max(v[0], {1}) + min(v[0], {1}) * 3.0; });
    add("argmax of long rows with ties (3, 70000): split rows", {ties({3, 70000}, 177)},
        [](Inputs v) { return argmax(v[0], 1); });
    add("integer sum of a long row (i64): split row", {ids({2, 40000}, 1000, 178)},
        [](Inputs v) { return raw::sum(v[0], {1}); });
    // column sums: the reduced dims lead (a bias gradient), no transposing copy
    add("sum over leading dims (4, 127, 33) -> (33)", {normal({4, 127, 33}, 179)},
        [](Inputs v) { return sum(v[0], {0, 1}); });
    add("mean over dim 0 keepdim (70000, 5)", {normal({70000, 5}, 1790)},
        [](Inputs v) { return mean(v[0], {0}, true); });
    add("column sums f64 and i64 (1025, 7, 3)", {normal({1025, 7, 3}, 1791, F64),
                                                ids({1025, 7}, 50, 1792)},
        [](Inputs v) { return sum(v[0], {0}) + raw::to_dtype(raw::sum(v[1], {0}), DType::F64).reshape({7, 1}); });
    add("bias gradient of a linear layer (3, 127, 9) + (9)", {normal({3, 127, 9}, 1793), normal({9}, 1794)},
        [](Inputs v) { return v[0] + v[1]; });
    // the fused sum of squares behind clip_grad_norm: mixed dtypes, a transpose, many chunks
    add("sum of squares over many tensors (clip_grad_norm)",
        {normal({1025}, 1795), normal({7, 127}, 1796, F64), normal({127, 9}, 1797),
         normal({40000}, 1798)},
        [](Inputs v) {
            NoGradGuard no_grad;
            const double s = nn::sum_of_squares({v[0], v[1], v[2].t(), v[3]});
            return full({}, s, F64, v[0].device());
        }, 1e-12);

    // ---- softmax ----
    add("softmax of 70000 rows", {normal({70000, 3}, 180)},
        [](Inputs v) { return softmax(v[0], -1); });
    add("softmax (7, 1025)", {normal({7, 1025}, 181)}, [](Inputs v) { return softmax(v[0], 1); });
    add("softmax over dim 0 (1025, 7)", {normal({1025, 7}, 182)},
        [](Inputs v) { return softmax(v[0], 0); });
    add("softmax (1, 1)", {normal({1, 1}, 183)}, [](Inputs v) { return softmax(v[0], 1); });
    add("log_softmax (127, 3000)", {normal({127, 3000}, 184)},
        [](Inputs v) { return log_softmax(v[0], -1); });
    add("log_softmax f64 of a transpose", {normal({7, 127}, 185, F64)},
        [](Inputs v) { return log_softmax(v[0].t(), 1); });
    // attention's softmax, scale and causal mask folded in
    add("scaled causal softmax (2, 3, 7, 7)", {normal({2, 3, 7, 7}, 186)},
        [](Inputs v) { return scaled_softmax(v[0], 0.3, true); });
    add("scaled causal softmax, fewer queries than keys (1, 2, 5, 1025)", {normal({1, 2, 5, 1025}, 187)},
        [](Inputs v) { return scaled_softmax(v[0], 0.125, true); });
    add("scaled causal softmax, fully masked rows (1, 1, 9, 4)", {normal({1, 1, 9, 4}, 188)},
        [](Inputs v) { return scaled_softmax(v[0], 2.0, true); });
    add("scaled softmax without mask, transposed (127, 70)", {normal({70, 127}, 189)},
        [](Inputs v) { return scaled_softmax(v[0].t(), 0.5, false); });
    add("scaled causal softmax f64 (3, 127, 127)", {normal({3, 127, 127}, 1890, F64)},
        [](Inputs v) { return scaled_softmax(v[0], 0.0883883, true); });

    // ---- matmul ----
    add("matmul 2-D (7, 127) @ (127, 1025)", {normal({7, 127}, 190), normal({127, 1025}, 191)},
        [](Inputs v) { return matmul(v[0], v[1]); }, 1e-4);
    add("matmul (1, 1) @ (1, 1)", {normal({1, 1}, 192), normal({1, 1}, 193)},
        [](Inputs v) { return matmul(v[0], v[1]); });
    add("matmul batched", {normal({3, 7, 5}, 194), normal({3, 5, 4}, 195)},
        [](Inputs v) { return matmul(v[0], v[1]); }, 1e-4);
    add("matmul broadcast batch", {normal({2, 1, 7, 5}, 196), normal({3, 5, 4}, 197)},
        [](Inputs v) { return matmul(v[0], v[1]); }, 1e-4);
    add("matmul both transposed", {normal({127, 7}, 198), normal({9, 127}, 199)},
        [](Inputs v) { return matmul(v[0].t(), v[1].t()); }, 1e-4);
    add("matmul of strided slices (copied first)", {normal({14, 20}, 200), normal({20, 9}, 201)},
        [](Inputs v) { return matmul(v[0].slice(1, 0, 20, 2), v[1].slice(0, 0, 20, 2)); }, 1e-4);
    add("matmul f64, K = 1025", {normal({7, 1025}, 202, F64), normal({1025, 3}, 203, F64)},
        [](Inputs v) { return matmul(v[0], v[1]); });
    add("matmul batched, transposed batch layout", {normal({5, 3, 7}, 204), normal({3, 7, 4}, 205)},
        [](Inputs v) { return matmul(v[0].transpose(0, 1), v[1]); }, 1e-4);

    // ---- joining and indexing ----
    add("gather dim 1", {normal({7, 127}, 210), ids({7, 300}, 127, 211)},
        [](Inputs v) { return gather(v[0], 1, v[1]); });
    add("gather dim 0, i32 index, transposed input", {normal({127, 7}, 212),
                                                      ids({5, 127}, 7, 213, DType::I32)},
        [](Inputs v) { return gather(v[0].t(), 0, v[1]); });
    add("scatter_add with repeated indices", {normal({7, 11}, 214), ids({7, 127}, 11, 215),
                                             normal({7, 127}, 216)},
        [](Inputs v) { return scatter_add(v[0], 1, v[1], v[2]); });
    add("scatter_add dim 0", {normal({5, 7}, 217), ids({127, 7}, 5, 218), normal({127, 7}, 219)},
        [](Inputs v) { return scatter_add(v[0], 0, v[1], v[2]); });
    add("index_select dim 0 with repeats", {normal({11, 127}, 220), ids({1025}, 11, 221)},
        [](Inputs v) { return index_select(v[0], 0, v[1]); });
    add("index_select dim 1 of a transpose, i32", {normal({127, 7}, 222),
                                                   ids({9}, 127, 223, DType::I32)},
        [](Inputs v) { return index_select(v[0].t(), 1, v[1]); });
    add("embedding forward and backward", {normal({11, 127}, 224), ids({2, 1025}, 11, 225)},
        [](Inputs v) { return embedding(v[0], v[1]); });
    add("embedding f64, i32 ids", {normal({1025, 7}, 226, F64), ids({127}, 1025, 227, DType::I32)},
        [](Inputs v) { return embedding(v[0], v[1]); });
    add("one_hot", {ids({127}, 9, 228)}, [](Inputs v) { return one_hot(v[0], 9); });
    add("one_hot i32 -> f64", {ids({3, 7}, 5, 229, DType::I32)},
        [](Inputs v) { return one_hot(v[0], 5, DType::F64); });
    add("triu / tril", {normal({3, 7, 127}, 230)},
        [](Inputs v) { return triu(v[0], 2) + tril(v[0], -1) * 3.0; });
    add("tril of a transpose", {normal({127, 7}, 231)},
        [](Inputs v) { return tril(v[0].t(), 0); });
    add("causal mask", {normal({1}, 232)},
        [](Inputs v) { return raw::causal_mask(7, DType::F32, v[0].device()); });

    // ---- normalization ----
    add("layer_norm with weight and bias (7, 1025)",
        {normal({7, 1025}, 240), normal({1025}, 241), normal({1025}, 242)},
        [](Inputs v) { return layer_norm(v[0], v[1], v[2]); }, 1e-4);
    add("layer_norm of 70000 rows", {normal({70000, 4}, 243), normal({4}, 244), normal({4}, 245)},
        [](Inputs v) { return layer_norm(v[0], v[1], v[2]); }, 1e-4);
    add("layer_norm without affine, transposed", {normal({7, 127}, 246)},
        [](Inputs v) { return layer_norm(v[0].t(), Tensor(), Tensor()); }, 1e-4);
    add("rms_norm (127, 7)", {normal({127, 7}, 247), normal({7}, 248)},
        [](Inputs v) { return rms_norm(v[0], v[1]); }, 1e-4);
    add("rms_norm f64 (3, 1025)", {normal({3, 1025}, 249, F64), normal({1025}, 250, F64)},
        [](Inputs v) { return rms_norm(v[0], v[1]); });

    // ---- cross-entropy ----
    add("cross_entropy (127, 11)", {normal({127, 11}, 260), ids({127}, 11, 261)},
        [](Inputs v) { return cross_entropy(v[0], v[1]); }, 1e-4);
    add("cross_entropy with ignore_index and smoothing", {normal({127, 11}, 262), ids({127}, 11, 263)},
        [](Inputs v) {
            Tensor t = raw::where(raw::binary(BinaryOp::Eq, v[1], scalar_tensor(3, DType::I64, v[1].device())),
                                  scalar_tensor(-100, DType::I64, v[1].device()), v[1]);
            return cross_entropy(v[0], t, -100, 0.1);
        }, 1e-4);
    add("cross_entropy of 70000 rows", {normal({70000, 5}, 264), ids({70000}, 5, 265)},
        [](Inputs v) { return cross_entropy(v[0], v[1]); }, 1e-4);
    add("cross_entropy of long rows, i32 targets", {normal({3, 3000}, 266),
                                                    ids({3}, 3000, 267, DType::I32)},
        [](Inputs v) { return cross_entropy(v[0], v[1], -100, 0.2); }, 1e-4);
    add("cross_entropy f64, every row ignored", {normal({7, 5}, 268, F64)}, [](Inputs v) {
        return cross_entropy(v[0], full({7}, 2, DType::I64, v[0].device()), 2);
    });

    // ---- dropout through autograd (the mask must be the CPU's) ----
    add("dropout p = 0.3", {normal({127, 1025}, 270)}, [](Inputs v) {
        Generator gen(5);
        return dropout(v[0], 0.3, gen);
    });
    add("dropout of a transpose", {normal({7, 127}, 271)}, [](Inputs v) {
        Generator gen(6);
        return dropout(v[0].t(), 0.5, gen);
    });
    return cases;
}

}  // namespace

TEST_CASE("cuda: every op matches the CPU, forward and backward" *
          doctest::skip(NO_GPU)) {
    const std::vector<CaseReport> reports = run_op_table(op_cases(), GPU);
    CHECK_MESSAGE(failure_list(reports).empty(), failure_list(reports));
}

// The harness itself, on any machine: the "device" is the CPU again, and two cases are broken on
// their second run (the device's): one gives a wrong element, one throws. Both must be reported by
// name with what went wrong, and the case after them must still run.
TEST_CASE("op table harness: every failing case is reported by name and the table runs on") {
    auto second_run = [](std::function<Tensor(Inputs, bool)> f) {
        auto calls = std::make_shared<int>(0);
        return [f, calls](Inputs v) { return f(v, ++*calls % 2 == 0); };
    };
    std::vector<OpCase> cases;
    cases.push_back({"healthy exp", {normal({7}, 1)}, [](Inputs v) { return exp(v[0]); }});
    cases.push_back({"broken softmax", {normal({3, 5}, 2)}, second_run([](Inputs v, bool dev) {
                         Tensor y = softmax(v[0], 1);
                         return dev ? y + raw::mul_scalar(one_hot(full({1}, 7, DType::I64),
                                                                  15).reshape({3, 5}), 0.5)
                                    : y;
                     })});
    cases.push_back({"throwing matmul", {normal({2, 3}, 3), normal({3, 4}, 4)},
                     second_run([](Inputs v, bool dev) {
                         if (dev) throw Error("matmul: a planted failure");
                         return matmul(v[0], v[1]);
                     })});
    cases.push_back({"slightly wrong tanh", {normal({4}, 5)}, second_run([](Inputs v, bool dev) {
                         return dev ? tanh(v[0] * 1.0001) : tanh(v[0]);
                     })});
    cases.push_back({"healthy last case", {normal({5}, 6)}, [](Inputs v) { return v[0] * 2.0; }});

    std::ostringstream log;
    const std::vector<CaseReport> reports = run_op_table(cases, Device::cpu(), log);
    INFO(log.str());
    REQUIRE(reports.size() == 5);
    CHECK(reports[0].ok());
    CHECK(reports[4].ok());
    REQUIRE(reports[1].problems.size() == 1);
    CHECK(contains(reports[1].problems[0], "forward: first bad element (row-major) 7"));
    REQUIRE(reports[2].problems.size() == 1);
    CHECK(contains(reports[2].problems[0], "forward on the device: matmul: a planted failure"));
    CHECK_FALSE(reports[3].ok());
    CHECK(contains(log.str(), "FAIL broken softmax"));
    CHECK(contains(log.str(), "FAIL throwing matmul"));
    CHECK(contains(log.str(), "PASS healthy last case"));
    CHECK(contains(log.str(), "op table: 2 of 5 cases passed, 3 failed"));
    CHECK(contains(failure_list(reports), "throwing matmul: threw"));
}

TEST_CASE("cuda: rand and randn give the CPU's numbers; dropout masks are identical" *
          doctest::skip(NO_GPU)) {
    for (DType dtype : {DType::F32, DType::F64}) {
        CAPTURE(dtype);
        Generator cpu_gen(42), gpu_gen(42);
        Tensor u_cpu = rand({1025, 7}, cpu_gen, dtype), u_gpu = rand({1025, 7}, gpu_gen, dtype, GPU);
        CHECK(max_abs_diff(u_cpu, u_gpu) == 0);  // bit for bit
        Tensor n_cpu = randn({127, 9}, cpu_gen, dtype), n_gpu = randn({127, 9}, gpu_gen, dtype, GPU);
        // logf / cosf may differ in the last bit between CUDA and the C library.
        check_same("randn", n_cpu, n_gpu, 1e-6);
        CHECK(cpu_gen.offset() == gpu_gen.offset());

        Tensor x = normal({3, 1025}, 7, dtype);
        auto [out_cpu, mask_cpu] = raw::dropout(x, 0.4, cpu_gen);
        auto [out_gpu, mask_gpu] = raw::dropout(raw::to_device(x, GPU), 0.4, gpu_gen);
        CHECK(max_abs_diff(mask_cpu, mask_gpu) == 0);
        CHECK(max_abs_diff(out_cpu, out_gpu) == 0);
        double kept = raw::mean(mask_gpu).item<double>();
        CHECK(kept > 0.5);
        CHECK(kept < 0.7);
    }
}

TEST_CASE("cuda: curand fills are a separate, non-identical fast path" *
          doctest::skip(NO_GPU)) {
    Tensor t = empty({1001}, DType::F32, GPU);  // odd: cuRAND normals need an even count
    cuda::curand_normal_fill(t, 3, 1.0, 2.0);
    double m = raw::mean(t).item<double>();
    CHECK(m > 0.7);
    CHECK(m < 1.3);
    Tensor u = empty({64, 64}, DType::F64, GPU);
    cuda::curand_uniform_fill(u, 3);
    CHECK(raw::min(u).item<double>() > 0);
    CHECK(raw::max(u).item<double>() <= 1);
    check_error([&] { cuda::curand_uniform_fill(raw::transpose(u, 0, 1), 1); }, {"contiguous"});
}

#if defined(EMBER_WITH_CUDA) && !defined(EMBER_TEST_GPU_AS_CPU)
TEST_CASE("cuda: the fused AdamW step matches torch.optim.AdamW's formulas" *
          doctest::skip(NO_GPU)) {
    for (DType dtype : {DType::F32, DType::F64}) {
        CAPTURE(dtype);
        const int64_t n = 1025;
        Tensor p = normal({n}, 1, dtype), g = normal({n}, 2, dtype);
        Tensor m = raw::mul_scalar(normal({n}, 3, dtype), 0.1);
        Tensor v = raw::unary(UnaryOp::Abs, raw::mul_scalar(normal({n}, 4, dtype), 0.01));
        raw::AdamWParams hp{1e-2, 0.9, 0.999, 1e-8, 0.1, 3};
        Tensor pg = raw::to_device(p, GPU), gg = raw::to_device(g, GPU);
        Tensor mg = raw::to_device(m, GPU), vg = raw::to_device(v, GPU);
        cuda::adamw_(pg, gg, mg, vg, hp);

        std::vector<double> P = p.to_vector<double>(), G = g.to_vector<double>();
        std::vector<double> M = m.to_vector<double>(), Vv = v.to_vector<double>();
        const double b1 = 1 - std::pow(hp.beta1, 3.0), b2 = 1 - std::pow(hp.beta2, 3.0);
        for (int64_t i = 0; i < n; ++i) {
            P[i] -= hp.lr * hp.weight_decay * P[i];
            M[i] = hp.beta1 * M[i] + (1 - hp.beta1) * G[i];
            Vv[i] = hp.beta2 * Vv[i] + (1 - hp.beta2) * G[i] * G[i];
            P[i] -= hp.lr * (M[i] / b1) / (std::sqrt(Vv[i] / b2) + hp.eps);
        }
        const double tol = dtype == DType::F64 ? 1e-12 : 1e-5;
        check_same("adamw param", from_vector(P, {n}).to(dtype), pg, tol);
        check_same("adamw exp_avg", from_vector(M, {n}).to(dtype), mg, tol);
        check_same("adamw exp_avg_sq", from_vector(Vv, {n}).to(dtype), vg, tol);
    }
}
#endif

TEST_CASE("cuda: gradcheck in f64 through the GPU" * doctest::skip(NO_GPU)) {
    // The inputs stay f64 CPU leaves; f moves them to the GPU (a differentiable copy), runs the op
    // there and brings the result back, so the analytic gradient is the GPU backward's.
    auto on_gpu = [](std::function<Tensor(const std::vector<Tensor>&)> op) {
        return [op](const std::vector<Tensor>& xs) {
            std::vector<Tensor> g;
            for (const Tensor& x : xs) g.push_back(x.to(GPU));
            return op(g).to(Device::cpu());
        };
    };
    expect_gradcheck(on_gpu([](Inputs v) { return matmul(v[0], v[1].t()); }),
                     {leaf({3, 4}, 1), leaf({5, 4}, 2)});
    expect_gradcheck(on_gpu([](Inputs v) { return softmax(v[0], 1) * log_softmax(v[0], 0); }),
                     {leaf({4, 6}, 3)});
    expect_gradcheck(on_gpu([](Inputs v) { return layer_norm(v[0], v[1], v[2]); }),
                     {leaf({3, 5}, 4), leaf({5}, 5), leaf({5}, 6)});
    expect_gradcheck(on_gpu([](Inputs v) { return rms_norm(v[0], v[1]); }),
                     {leaf({3, 5}, 7), leaf({5}, 8)});
    Tensor targets = from_vector(std::vector<int64_t>{1, 0, 3, -100}, {4});
    expect_gradcheck(on_gpu([targets](Inputs v) {
                         return cross_entropy(v[0], targets.to(GPU), -100, 0.1);
                     }),
                     {leaf({4, 5}, 9)});
    Tensor index = from_vector(std::vector<int64_t>{2, 0, 2, 1}, {4});
    expect_gradcheck(on_gpu([index](Inputs v) {
                         return embedding(v[0], index.to(GPU)) +
                                sum(gather(v[1], 1, raw::reshape(index, {4, 1}).to(GPU))) +
                                sum(index_select(v[1], 1, index.to(GPU)));
                     }),
                     {leaf({3, 2}, 10), leaf({4, 3}, 11)});
    expect_gradcheck(on_gpu([](Inputs v) {
                         return gelu(v[0]) * sigmoid(v[0]) + max(v[0], {1}, true) +
                                logsumexp(v[0], {0}) + var(v[0], {1}, true, true);
                     }),
                     {leaf({3, 4}, 12)});
}

TEST_CASE("cuda: a bad index in a kernel throws on the host, and the GPU stays usable" *
          doctest::skip(NO_GPU)) {
    Tensor x = raw::to_device(normal({4, 5}, 1), GPU);
    Tensor bad = raw::to_device(from_vector(std::vector<int64_t>{0, 7}, {2}), GPU);
    check_error([&] { raw::index_select(x, 1, bad); }, {"index_select", "7", "out of range"});
    check_error([&] { raw::embedding_backward(raw::to_device(normal({2, 5}, 2), GPU), bad, 4); },
                {"7", "out of range"});
    check_error([&] { raw::one_hot(bad, 3); }, {"one_hot", "7"});
    check_error([&] { raw::cross_entropy_forward(x, raw::to_device(
                          from_vector(std::vector<int64_t>{0, 1, 9, 2}, {4}), GPU)); },
                {"cross_entropy", "target 9", "row 2"});
    Tensor ok = raw::to_device(from_vector(std::vector<int64_t>{4, 0}, {2}), GPU);
    check_same("index_select after an error", raw::index_select(normal({4, 5}, 1), 1,
                                                                raw::to_device(ok, Device::cpu())),
               raw::index_select(x, 1, ok), 0);
}

TEST_CASE("cuda: TF32 is off by default and can be switched on for f32 matmuls" *
          doctest::skip(NO_GPU)) {
    CHECK_FALSE(cuda::allow_tf32());
    Tensor a = normal({256, 256}, 1), b = normal({256, 256}, 2);
    Tensor want = raw::matmul(raw::to_dtype(a, DType::F64), raw::to_dtype(b, DType::F64));
    Tensor ag = raw::to_device(a, GPU), bg = raw::to_device(b, GPU);
    const double exact_err = max_abs_diff(want, raw::to_dtype(raw::matmul(ag, bg), DType::F64));
    cuda::set_allow_tf32(true);
    const double tf32_err = max_abs_diff(want, raw::to_dtype(raw::matmul(ag, bg), DType::F64));
    cuda::set_allow_tf32(false);
    CHECK(exact_err < 1e-3);
    CHECK(tf32_err < 0.5);  // 10-bit mantissas over K = 256 products of N(0, 1) values
}

TEST_CASE("cuda availability: moving a tensor to CUDA where there is none fails clearly") {
    Tensor x = tensor({1, 2, 3});
    if (cuda_is_available()) {  // the round trip must then work
        CHECK(x.to(GPU).to(Device::cpu()).to_vector<float>() == x.to_vector<float>());
        return;
    }
    std::string message = error_of([&] { x.to(GPU); });
    INFO("message: ", message);
#ifdef EMBER_WITH_CUDA
    CHECK(built_with_cuda());
    CHECK(contains(message, "no CUDA device"));
#else
    CHECK_FALSE(built_with_cuda());
    CHECK((contains(message, "built without") || contains(message, "no CUDA")));
#endif
    // Statistics stay readable everywhere.
    CHECK(cuda::allocator_stats().bytes_in_use == 0);
}
