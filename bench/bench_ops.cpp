// `make bench`: speeds of Ember's raw ops on this machine. Not a test: it prints figures.
//
// CPU matmul: f32 square products at 256, 512 and 1024, with 1 and 2 threads, in GFLOP/s
// (2*N^3 flops per product). Each figure is the median of several timed runs after a warm-up.
//
// GPT-2-small training step: 12 layers x 768, vocabulary 50,257, random weights, batch 4 x 64
// tokens, AdamW, 2 threads; the full model and LoRA r=8 on c_attn. bench/torch_gpt2_step.py is
// the same step in PyTorch. Each also runs with bf16 products: the full step under bf16 autocast
// (nn/bf16_autocast.h: f32 weights, every Linear's three products in bf16), the LoRA step over a
// bf16 base (GPT::cast_to_bf16: every frozen weight's products in bf16, the tied head's too).
// `bench_ops [gemm | gemm-bf16 | gpt2 | gpt2-full[-f32|-bf16] | gpt2-lora[-f32|-bf16] | attention |
// s2attn | pool] [steps]` runs one part.
//
// bf16 products (`bench_ops gemm-bf16`): GPT-2 small's Linear shapes at 256 rows, the forward
// x W^T, the input gradient dy W and the weight gradient dy^T x, f32 against bf16 (tensor/bf16.h).
//
// S2-Attn: see bench_s2attn.
//
// Thread pool (`bench_ops pool`): the cost of one parallel_for whose two chunks must run on two
// threads (waking the worker, handing out the chunks, waiting for both), and f32 adds of 32k to 3M
// elements on 1 and 2 threads, in microseconds: where splitting a cheap op starts to pay.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "autograd/functions.h"
#include "models/gpt.h"
#include "nn/attention.h"
#include "nn/bf16_autocast.h"
#include "nn/bf16_linear.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "tensor/storage.h"

#include "bench/timing.h"

using namespace ember;

static void bench_gemm() {
    std::printf("CPU matmul, f32, square (GFLOP/s, median)\n");
    std::printf("%8s %12s %12s\n", "size", "1 thread", "2 threads");
    Generator gen(1);
    for (int64_t n : {256, 512, 1024}) {
        Tensor a = randn({n, n}, gen), b = randn({n, n}, gen);
        double flops = 2.0 * double(n) * double(n) * double(n);
        std::printf("%8lld", (long long)n);
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            double s = median_seconds([&] { raw::matmul(a, b); });
            std::printf(" %12.1f", flops / s / 1e9);
        }
        std::printf("\n");
    }
    // GPT-2 small's Linear products at batch 4 x 64: x (256, in) @ W^T, W (out, in) row-major.
    std::printf("\nCPU linear x @ W^T, f32, GPT-2 small shapes (GFLOP/s, median)\n");
    std::printf("%18s %12s %12s\n", "M x K x N", "1 thread", "2 threads");
    const int64_t shapes[][3] = {{256, 768, 2304}, {256, 768, 3072}, {256, 3072, 768}, {256, 768, 50257}};
    for (const auto& s : shapes) {
        Tensor x = randn({s[0], s[1]}, gen), w = randn({s[2], s[1]}, gen);
        double flops = 2.0 * double(s[0]) * double(s[1]) * double(s[2]);
        std::printf("%6lld x %4lld x %5lld", (long long)s[0], (long long)s[1], (long long)s[2]);
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            double sec = median_seconds([&] { raw::matmul(x, raw::transpose(w, 0, 1)); });
            std::printf(" %12.1f", flops / sec / 1e9);
        }
        std::printf("\n");
    }
}

// A Linear's three products at GPT-2 small's shapes: the forward x W^T, the input gradient dy W and
// (for bf16 autocast, nn/bf16_autocast.h) the weight gradient dy^T x, f32 against bf16 operands.
static void bench_gemm_bf16() {
    set_num_threads(2);
    std::printf("CPU linear products, GPT-2 small shapes, f32 vs bf16, 2 threads (GFLOP/s, median; %s)\n",
                cpu::cpu_has_avx512_bf16() ? "vdpbf16ps" : "no AVX-512 BF16: the portable path");
    std::printf("%18s %10s %10s %10s %10s %10s %10s\n", "M x K x N", "fwd f32", "fwd bf16", "dX f32", "dX bf16",
                "dW f32", "dW bf16");
    Generator gen(2);
    const int64_t shapes[][3] = {{256, 768, 2304}, {256, 768, 3072}, {256, 3072, 768}, {256, 768, 50257}};
    for (const auto& s : shapes) {
        const int64_t M = s[0], K = s[1], N = s[2];
        Tensor x = randn({M, K}, gen), dy = randn({M, N}, gen), w = randn({N, K}, gen);
        Bf16Weight wb = to_bf16(w), xb = to_bf16(x);
        const double flops = 2.0 * double(M) * double(K) * double(N);
        auto rate = [&](auto&& f) { return flops / median_seconds(f) / 1e9; };
        std::printf("%6lld x %4lld x %5lld %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f\n", (long long)M, (long long)K,
                    (long long)N, rate([&] { raw::matmul(x, raw::transpose(w, 0, 1)); }),
                    rate([&] { raw::bf16_matmul(x, wb); }), rate([&] { raw::matmul(dy, w); }),
                    rate([&] { raw::bf16_matmul_t(dy, wb); }), rate([&] { raw::matmul(raw::transpose(dy, 0, 1), x); }),
                    rate([&] { raw::bf16_weight_grad(dy, xb); }));
    }
}

// The GPT-2 steps timed: the full model in f32 and in bf16 autocast (nn/bf16_autocast.h), and LoRA
// r=8 on c_attn over an f32 base and over a bf16 one (GPT::cast_to_bf16).
enum class Gpt2Step { Full, FullBf16Autocast, Lora, LoraBf16Base };
constexpr const char* GPT2_STEP_NAMES[] = {"full", "full, bf16 autocast", "LoRA r=8", "LoRA r=8, bf16 base"};

// Median seconds of one training step (forward, cross-entropy, backward, AdamW) of GPT-2 small.
static double gpt2_step_seconds(Gpt2Step kind, int steps) {
    auto gpt = std::make_shared<models::GPT>(models::GPTConfig::gpt2(50257, 1024, 768, 12, 12), 0);
    if (kind == Gpt2Step::LoraBf16Base) gpt->cast_to_bf16();
    std::unique_ptr<peft::PeftModel> pm;
    if (kind == Gpt2Step::Lora || kind == Gpt2Step::LoraBf16Base) {
        peft::LoraConfig c;
        c.r = 8, c.lora_alpha = 16, c.target_modules = {"c_attn"};
        pm = std::make_unique<peft::PeftModel>(gpt, c, "default", 0, "gpt2");
    }
    std::vector<Tensor> params;
    for (Tensor& p : gpt->parameters())
        if (p.requires_grad()) params.push_back(p);
    nn::AdamW opt(params, nn::AdamWOptions{});
    const int64_t B = 4, T = 64, V = 50257;
    Generator gen(7);
    Tensor ids = randint(0, V, {B, T + 1}, gen);
    Tensor x = raw::contiguous(raw::slice(ids, 1, 0, T)), y = raw::contiguous(raw::slice(ids, 1, 1, T + 1));
    std::vector<double> times;
    for (int s = 0; s < steps + 2; ++s) {  // two warm-up steps: AdamW state, caches
        auto t0 = std::chrono::steady_clock::now();
        opt.zero_grad();
        Tensor loss;
        {
            nn::Bf16Autocast autocast(kind == Gpt2Step::FullBf16Autocast);
            Tensor logits = gpt->forward_ids(x);
            loss = nn::cross_entropy(logits.reshape({B * T, V}), y.reshape({B * T}));
        }
        loss.backward();
        opt.step();
        double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (s >= 2) times.push_back(sec);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

static void bench_gpt2(int steps, const std::vector<Gpt2Step>& kinds) {
    set_num_threads(2);
    std::printf("GPT-2 small training step (12 x 768, vocab 50257, batch 4 x 64, AdamW, 2 threads, median)\n");
    std::printf("%20s %12s %12s\n", "model", "ms/step", "tokens/s");
    for (Gpt2Step kind : kinds) {
        double s = gpt2_step_seconds(kind, steps);
        std::printf("%20s %12.1f %12.0f\n", GPT2_STEP_NAMES[int(kind)], s * 1e3, 256 / s);
        std::fflush(stdout);
    }
}

// ---- S2-Attn (LongLoRA's shifted sparse attention) against full causal attention ----
// Forward + backward of one (1, 4, T, 64) attention, 2 threads: the fused kernel with full causal
// attention, the fused kernel with S2-Attn (groups of T / 4, half the heads shifted; ~1/4 of the
// attention FLOPs), and the composed path's peak memory (its (T, T) scores materialised).
// Timings are the best of 2 runs (a single T = 8192 full run takes tens of seconds here).
static void bench_s2attn() {
    const int64_t B = 1, H = 4, D = 64;
    std::printf("S2-Attn forward + backward, B %lld, H %lld, D %lld, 2 threads (load %s)\n", (long long)B,
                (long long)H, (long long)D, load_average().c_str());
    std::printf("%6s %14s %14s %8s %14s %14s %16s\n", "T", "full ms", "S2 ms", "speedup", "full peak MiB",
                "S2 peak MiB", "composed MiB");
    set_num_threads(2);
    for (int64_t T : {4096, 8192}) {
        Generator gen(1);
        Tensor q = randn({B, H, T, D}, gen), k = randn({B, H, T, D}, gen), v = randn({B, H, T, D}, gen);
        Tensor w = randn({B, H, T, D}, gen);
        raw::AttentionPattern full;
        full.causal = true;
        raw::AttentionPattern s2 = full;
        s2.group = nn::shifted_group_size(T, 0.25);
        // seconds (best of 2) and peak bytes above the inputs of forward + backward
        auto measure = [&](auto&& attn, int runs) {
            double best = 1e30;
            int64_t peak = 0;
            for (int r = 0; r < runs; ++r) {
                Tensor a = q.detach(), b = k.detach(), c = v.detach();
                for (Tensor* t : {&a, &b, &c}) t->set_requires_grad();
                reset_cpu_peak();
                const int64_t base = cpu_memory_stats().bytes_in_use;
                auto t0 = std::chrono::steady_clock::now();
                sum(mul(attn(a, b, c), w)).backward();
                best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                peak = cpu_memory_stats().peak_bytes_in_use - base;
            }
            return std::pair<double, int64_t>(best, peak);
        };
        const double scale = 1.0 / std::sqrt(double(D));
        auto f = measure([&](const Tensor& a, const Tensor& b, const Tensor& c) { return fused_attention(a, b, c, full, scale); }, 2);
        auto g = measure([&](const Tensor& a, const Tensor& b, const Tensor& c) { return fused_attention(a, b, c, s2, scale); }, 2);
        // The composed path at T = 8192 would hold several (1, 4, 8192, 8192) f32 tensors (1 GiB
        // each): measured at 4096 only.
        std::string composed = "(not run)";
        if (T <= 4096) {
            nn::AttentionMask mask;
            mask.causal = true;
            auto c = measure([&](const Tensor& a, const Tensor& b, const Tensor& cc) {
                return nn::composed_attention(a, b, cc, mask, 0, nullptr, true);
            }, 1);
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.1f", double(c.second) / (1 << 20));
            composed = buf;
        }
        std::printf("%6lld %14.1f %14.1f %7.2fx %14.1f %14.1f %16s\n", (long long)T, f.first * 1e3, g.first * 1e3,
                    f.first / g.first, double(f.second) / (1 << 20), double(g.second) / (1 << 20), composed.c_str());
        std::fflush(stdout);
    }
    std::printf("load after: %s\n", load_average().c_str());
}

// Fused CPU attention on the shapes Ember trains (raw kernels, no autograd), 2 threads, median ms:
// the demo GPT (B 24, H 4, T 64, D 32, causal), GPT-2 small at batch 4 x 64 (H 12, D 64, causal),
// the demo ViT (B 128, H 4, 17 tokens, D 16, no mask) and one long causal sequence (T 1024).
static void bench_attention() {
    std::printf("Fused CPU attention, f32, 2 threads (ms, median; load %s)\n", load_average().c_str());
    std::printf("%-28s %10s %10s %12s\n", "B x H x T x D", "forward", "backward", "GFLOP/s f+b");
    set_num_threads(2);
    struct Shape4 { int64_t B, H, T, D; bool causal; };
    for (Shape4 s : {Shape4{24, 4, 64, 32, true}, Shape4{4, 12, 64, 64, true}, Shape4{128, 4, 17, 16, false},
                     Shape4{1, 4, 1024, 64, true}}) {
        Generator gen(2);
        Tensor q = randn({s.B, s.H, s.T, s.D}, gen), k = randn({s.B, s.H, s.T, s.D}, gen);
        Tensor v = randn({s.B, s.H, s.T, s.D}, gen), dout = randn({s.B, s.H, s.T, s.D}, gen);
        raw::AttentionPattern pattern;
        pattern.causal = s.causal;
        const double scale = 1.0 / std::sqrt(double(s.D));
        raw::AttentionOutput fwd = raw::attention_forward(q, k, v, pattern, scale);
        const double f = median_seconds([&] { raw::attention_forward(q, k, v, pattern, scale); });
        const double b = median_seconds([&] { raw::attention_backward(dout, q, k, v, fwd, pattern, scale); });
        // q k^T and p v forward, four products of the same size backward; half of them when causal
        const double pairs = double(s.B * s.H) * double(s.T) * double(s.T) * (s.causal ? 0.5 : 1.0);
        const double flops = 2.0 * pairs * double(s.D) * (2 + 4);
        char name[64];
        std::snprintf(name, sizeof name, "%lld x %lld x %lld x %lld%s", (long long)s.B, (long long)s.H,
                      (long long)s.T, (long long)s.D, s.causal ? " causal" : "");
        std::printf("%-28s %10.3f %10.3f %12.1f\n", name, f * 1e3, b * 1e3, flops / (f + b) / 1e9);
        std::fflush(stdout);
    }
}

static void bench_pool() {
    std::printf("Thread pool dispatch (microseconds, median)\n");
    set_num_threads(2);
    // Each chunk waits for the other, so the figure includes waking the worker.
    std::atomic<int> arrived{0};
    double handoff = median_seconds([&] {
        arrived = 0;
        parallel_for(2, 1, [&](int64_t, int64_t) {
            arrived.fetch_add(1);
            while (arrived.load() < 2) {}
        });
    });
    std::printf("%-40s %10.2f\n", "parallel_for, 2 chunks that meet", handoff * 1e6);
    Generator gen(3);
    std::printf("%10s %12s %12s\n", "add f32 n", "1 thread", "2 threads");
    for (int64_t n : {int64_t(32768), int64_t(65536), int64_t(196608), int64_t(786432), int64_t(3145728)}) {
        Tensor a = randn({n}, gen), b = randn({n}, gen);
        std::printf("%10lld", (long long)n);
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            double s = median_seconds([&] { raw::add(a, b); }, 0.2);
            std::printf(" %12.2f", s * 1e6);
        }
        std::printf("\n");
    }
    std::printf("load after: %s\n", load_average().c_str());
}

int main(int argc, char** argv) {
    const char* part = argc > 1 ? argv[1] : "all";
    const int steps = argc > 2 ? std::atoi(argv[2]) : 7;
    std::printf("Ember op benchmarks\n\n");
    if (!std::strcmp(part, "all") || !std::strcmp(part, "gemm")) bench_gemm();
    if (!std::strcmp(part, "all")) std::printf("\n");
    if (!std::strcmp(part, "all") || !std::strcmp(part, "gemm-bf16")) bench_gemm_bf16();
    // gpt2: all four steps; gpt2-full: both full ones; gpt2-lora: both LoRA ones; or one by name.
    const bool every_step = !std::strcmp(part, "all") || !std::strcmp(part, "gpt2");
    const std::pair<const char*, std::vector<Gpt2Step>> step_parts[] = {
        {"gpt2-full", {Gpt2Step::Full, Gpt2Step::FullBf16Autocast}},
        {"gpt2-full-f32", {Gpt2Step::Full}},
        {"gpt2-full-bf16", {Gpt2Step::FullBf16Autocast}},
        {"gpt2-lora", {Gpt2Step::Lora, Gpt2Step::LoraBf16Base}},
        {"gpt2-lora-f32", {Gpt2Step::Lora}},
        {"gpt2-lora-bf16", {Gpt2Step::LoraBf16Base}}};
    std::vector<Gpt2Step> steps_timed;
    if (every_step) steps_timed = {Gpt2Step::Full, Gpt2Step::FullBf16Autocast, Gpt2Step::Lora, Gpt2Step::LoraBf16Base};
    for (const auto& [name, kinds] : step_parts)
        if (!std::strcmp(part, name)) steps_timed = kinds;
    if (!steps_timed.empty()) bench_gpt2(steps, steps_timed);
    if (!std::strcmp(part, "all") || !std::strcmp(part, "attention")) bench_attention();
    if (!std::strcmp(part, "all") || !std::strcmp(part, "s2attn")) bench_s2attn();
    if (!std::strcmp(part, "all") || !std::strcmp(part, "pool")) bench_pool();
    return 0;
}
