// `make bench`: the 4-bit products (tensor/quant.h) against f32 on this machine, 2 threads.
//
//   matvec  batch 1 at 4096 x 4096, the decoding step of a 4096-wide model: 4-bit reads 8.4 MB
//           of codes and statistics, f32 67 MB. Peers: Ember's f32 matmul (what a Linear runs)
//           and a plain threaded f32 dot-product loop (the memory-bound floor an f32 GEMV has).
//           On an AVX-512 CPU the matvec runs again with the AVX2 kernels, as CPUs without it do.
//   GEMM    batch 64 and 256 at 4096 x 4096: the 4-bit product decodes inside B's packing;
//           the peer is Ember's f32 GEMM on the same shapes. Then the input gradient dy W.
//   GPU     with a GPU, matvec and batches 64 and 1024 against Ember's f32 (cuBLAS) matmul.
//   model   the weight bytes of a ~100M LLaMA-style GPT in f32 and with NF4 Linears.
//   AdamW   one step over a QLoRA r = 64 adapter's 22.4M parameters with f32 moments and with
//           8-bit ones (nn::AdamW8bit): the price of a quarter of the state's memory.
// Each figure is the median of several timed runs after a warm-up; the load average is printed
// with the figures, since the machine may be shared.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "nn/optim.h"
#include "nn/quant_linear.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/runtime.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "tensor/quant.h"
#include "tensor/quant_kernels.h"

#include "bench/timing.h"

using namespace ember;

// y = W x with W (rows, cols) f32 row-major: eight running sums per row, rows split over threads.
static void f32_gemv(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const float* row = w + r * cols;
            float acc[8] = {};
            for (int64_t i = 0; i + 8 <= cols; i += 8)
                for (int j = 0; j < 8; ++j) acc[j] += row[i + j] * x[i + j];
            float s = 0;
            for (float a : acc) s += a;
            y[r] = s;
        }
    });
}

int main() {
    set_num_threads(2);
    const int64_t N = 4096, K = 4096;
    Generator gen(1);
    Tensor w = raw::mul_scalar(randn({N, K}, gen), 0.02);
    QuantizedWeight nf4 = quantize_nf4(w), int4 = quantize_int4(w, 32);
    std::printf("Ember 4-bit products, CPU, 2 threads, W %lld x %lld (load average %s)\n",
                (long long)N, (long long)K, load_average().c_str());
    std::printf("  %s\n  %s\n\n", nf4.describe().c_str(), int4.describe().c_str());

    // ---- batch 1 ----
    Tensor x = randn({1, K}, gen), wt = raw::transpose(w, 0, 1), y = empty({N});
    const double f32_matmul = median_seconds([&] { raw::matmul(x, wt); });
    const double f32_loop = median_seconds([&] { f32_gemv(w.data<float>(), x.data<float>(), y.data<float>(), N, K); });
    const double nf4_mv = median_seconds([&] { raw::quant_matmul(x, nf4); });
    const double int4_mv = median_seconds([&] { raw::quant_matmul(x, int4); });
    auto gbs = [&](double bytes, double s) { return bytes / s / 1e9; };
    std::printf("matvec (batch 1)              ms    weight GB/s   4-bit speed-up\n");
    std::printf("  f32 matmul (Linear)     %7.3f   %8.1f\n", f32_matmul * 1e3, gbs(4.0 * N * K, f32_matmul));
    std::printf("  f32 dot-product loop    %7.3f   %8.1f\n", f32_loop * 1e3, gbs(4.0 * N * K, f32_loop));
    std::printf("  nf4 quant_matmul        %7.3f   %8.1f      %.2fx vs matmul, %.2fx vs loop\n",
                nf4_mv * 1e3, gbs(double(nf4.storage_bytes()), nf4_mv), f32_matmul / nf4_mv, f32_loop / nf4_mv);
    std::printf("  int4 quant_matmul       %7.3f   %8.1f      %.2fx vs matmul, %.2fx vs loop\n\n",
                int4_mv * 1e3, gbs(double(int4.storage_bytes()), int4_mv), f32_matmul / int4_mv, f32_loop / int4_mv);

    // The AVX2 kernels, as a CPU without AVX-512 runs them (here: the same cores with AVX-512 off).
    if (cpu::cpu_has_avx512()) {
        cpu::allow_avx512_matmul(false), cpu::allow_avx512_quant(false);
        const double f32_avx2 = median_seconds([&] { raw::matmul(x, wt); });
        const double nf4_avx2 = median_seconds([&] { raw::quant_matmul(x, nf4); });
        const double int4_avx2 = median_seconds([&] { raw::quant_matmul(x, int4); });
        cpu::allow_avx512_matmul(true), cpu::allow_avx512_quant(true);
        std::printf("matvec, AVX2 kernels          ms                  4-bit speed-up\n");
        std::printf("  f32 matmul (Linear)     %7.3f\n", f32_avx2 * 1e3);
        std::printf("  nf4 quant_matmul        %7.3f                  %.2fx vs matmul\n", nf4_avx2 * 1e3, f32_avx2 / nf4_avx2);
        std::printf("  int4 quant_matmul       %7.3f                  %.2fx vs matmul\n\n", int4_avx2 * 1e3,
                    f32_avx2 / int4_avx2);
    }

    // ---- batches ----
    std::printf("GEMM (GFLOP/s)          batch   f32 matmul    nf4      int4    nf4/f32\n");
    for (int64_t M : {64, 256}) {
        Tensor xb = randn({M, K}, gen);
        const double flops = 2.0 * double(M) * double(N) * double(K);
        const double f = median_seconds([&] { raw::matmul(xb, wt); });
        const double q = median_seconds([&] { raw::quant_matmul(xb, nf4); });
        const double q4 = median_seconds([&] { raw::quant_matmul(xb, int4); });
        std::printf("  forward  x W^T       %6lld   %9.1f  %7.1f  %7.1f    %.2fx\n", (long long)M,
                    flops / f / 1e9, flops / q / 1e9, flops / q4 / 1e9, f / q);
        Tensor dy = randn({M, N}, gen);
        const double fb = median_seconds([&] { raw::matmul(dy, w); });
        const double qb = median_seconds([&] { raw::quant_matmul_t(dy, nf4); });
        const double qb4 = median_seconds([&] { raw::quant_matmul_t(dy, int4); });
        std::printf("  backward dy W        %6lld   %9.1f  %7.1f  %7.1f    %.2fx\n", (long long)M,
                    flops / fb / 1e9, flops / qb / 1e9, flops / qb4 / 1e9, fb / qb);
    }

    // ---- quantize / dequantize ----
    const double qt = median_seconds([&] { quantize_nf4(w); }, 0.5);
    const double dq = median_seconds([&] { dequantize(nf4); }, 0.5);
    std::printf("\nquantize_nf4 %.1f ms, dequantize (to f32) %.1f ms = %.2f G elements/s\n", qt * 1e3,
                dq * 1e3, double(N * K) / dq / 1e9);

    // ---- GPU rows: the same products on the GPU, each timed to a synchronize ----
    if (!cuda_is_available()) {
        std::printf("\nGPU rows: no GPU: skipped\n");
    } else {
        const Device gpu = Device::cuda();
        QuantizedWeight nf4_gpu = nf4.to(gpu);
        Tensor w_gpu = w.to(gpu), wt_gpu = raw::transpose(w_gpu, 0, 1), x_gpu = x.to(gpu);
        auto timed = [&](auto&& fn) { return median_seconds([&] { fn(); cuda::synchronize(); }); };
        const double f = timed([&] { raw::matmul(x_gpu, wt_gpu); });
        const double q = timed([&] { raw::quant_matmul(x_gpu, nf4_gpu); });
        std::printf("\nGPU matvec: f32 matmul %.3f ms (%.0f GB/s), nf4 %.3f ms (%.0f GB/s): %.2fx\n",
                    f * 1e3, gbs(4.0 * N * K, f), q * 1e3, gbs(double(nf4.storage_bytes()), q), f / q);
        for (int64_t M : {64, 1024}) {
            Tensor xb = randn({M, K}, gen).to(gpu), dy = randn({M, N}, gen).to(gpu);
            const double flops = 2.0 * double(M) * double(N) * double(K);
            const double fg = timed([&] { raw::matmul(xb, wt_gpu); });
            const double qg = timed([&] { raw::quant_matmul(xb, nf4_gpu); });
            const double qb = timed([&] { raw::quant_matmul_t(dy, nf4_gpu); });
            std::printf("GPU batch %5lld: f32 matmul %.0f GFLOP/s, nf4 forward %.0f, nf4 dy W %.0f GFLOP/s\n",
                        (long long)M, flops / fg / 1e9, flops / qg / 1e9, flops / qb / 1e9);
        }
    }

    // ---- a whole model's weights ----
    // A LLaMA-style GPT of ~100M parameters (dim 768, 12 layers, SwiGLU 2048, vocab 8192, untied
    // head): tensor bytes on the CPU before and after quantizing every Linear but the head.
    {
        const int64_t before = cpu_memory_stats().bytes_in_use;
        auto gpt = std::make_shared<models::GPT>(models::GPTConfig::llama(8192, 512, 768, 12, 12, 12, 2048), 1);
        const int64_t f32_bytes = cpu_memory_stats().bytes_in_use - before;
        const int64_t params = gpt->num_parameters();
        nn::quantize_linears(*gpt, {}, [](const std::string& name) { return name == "lm_head"; });
        const int64_t q_bytes = cpu_memory_stats().bytes_in_use - before;
        std::printf("\nLLaMA-style GPT, %.1fM parameters: weights %.1f MB in f32, %.1f MB with NF4 "
                    "Linears (head and embeddings f32): %.2fx smaller\n",
                    double(params) / 1e6, double(f32_bytes) / 1e6, double(q_bytes) / 1e6,
                    double(f32_bytes) / double(q_bytes));
    }

    // ---- AdamW with f32 and with 8-bit moments ----
    // 84 adapters of 64 x 4176: the 22.4M parameters of LoRA r = 64 on the model above.
    {
        double ms[2], state_mb[2];
        for (int k = 0; k < 2; ++k) {
            std::vector<Tensor> ps;
            for (int i = 0; i < 84; ++i) {
                Tensor p = randn({64, 4176}, gen);
                p.set_requires_grad(true);
                p.set_grad(randn({64, 4176}, gen));
                ps.push_back(p);
            }
            nn::MomentStorage moments;
            moments.bits = k == 0 ? 32 : 8;
            nn::AdamW opt(ps, {}, moments);
            ms[k] = median_seconds([&] { opt.step(); }) * 1e3;
            state_mb[k] = double(opt.resident_bytes()) / 1e6;
        }
        std::printf("\nAdamW step over 22.4M parameters: f32 moments %.1f ms (%.1f MB of state), 8-bit "
                    "moments %.1f ms (%.1f MB): %.1fx the time\n", ms[0], state_mb[0], ms[1], state_mb[1], ms[1] / ms[0]);
    }
    std::printf("load average after: %s\n", load_average().c_str());
    return 0;
}
