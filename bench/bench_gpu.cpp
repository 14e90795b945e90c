// `make bench`, GPU rows: how close Ember's CUDA ops come to the hardware. Not a test: it prints
// figures, or one "no GPU: skipped" line where there is no GPU.
//
//   matmul  4096^3 f32, TF32 off and on, in TFLOP/s (2 N^3 flops), against the same product as a
//           direct cuBLAS call (the peak Ember's dispatch can reach)
//   memory  softmax (4096 x 4096), layernorm (16384 x 1024) and elementwise add over 16M f32
//           elements, in effective GB/s (each tensor read or written once), against a
//           device-to-device cudaMemcpy of 16M floats (read + write); a whole-tensor sum and
//           column sums (a bias gradient) in GB/s of input read
//   fused   the gradient norm over GPT-2 small's parameters, attention's causal softmax (forward
//           and backward), the fused attention kernel against the composed path, and cross-entropy, each against the op sequence it replaces where
//           there is one, timed back to back in ms
//
// Timing: cudaEvents on the legacy default stream, which orders itself after Ember's (blocking)
// stream; one warm-up call, then the mean over enough calls to fill about 0.3 s.
#include <cstdio>

#include <vector>

#include "nn/optim.h"
#include "tensor/cuda/cuda.h"
#include "tensor/ops.h"

#ifdef EMBER_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

using namespace ember;

namespace {

// Mean milliseconds per call of fn.
template <typename Fn>
double time_ms(Fn&& fn) {
    fn();  // warm-up
    cudaDeviceSynchronize();
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    int reps = 1;
    float ms = 0;
    for (;;) {
        cudaEventRecord(start, 0);
        for (int i = 0; i < reps; ++i) fn();
        cudaEventRecord(stop, 0);
        cudaEventSynchronize(stop);
        cudaEventElapsedTime(&ms, start, stop);
        if (ms > 300 || reps >= 1024) break;
        reps *= 2;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return double(ms) / reps;
}

void matmul_rows() {
    const int n = 4096;
    const double flops = 2.0 * n * double(n) * n;
    Tensor a = empty({n, n}, DType::F32, Device::cuda()), b = empty({n, n}, DType::F32, Device::cuda());
    Tensor c = empty({n, n}, DType::F32, Device::cuda());
    cuda::curand_normal_fill(a, 1);
    cuda::curand_normal_fill(b, 2);
    cublasHandle_t handle;
    cublasCreate(&handle);
    std::printf("GPU matmul, f32, %d^3 (TFLOP/s)\n", n);
    std::printf("%-10s %12s %14s %10s\n", "precision", "Ember", "cuBLAS direct", "ratio");
    for (bool tf32 : {false, true}) {
        cuda::set_allow_tf32(tf32);
        double ember_ms = time_ms([&] { raw::matmul(a, b); });
        const float one = 1, zero = 0;
        // Row-major C = A B is column-major C^T = B^T A^T: the operands swap (as in matmul.cu).
        double blas_ms = time_ms([&] {
            cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b.raw_data(), CUDA_R_32F,
                         n, a.raw_data(), CUDA_R_32F, n, &zero, c.raw_data(), CUDA_R_32F, n,
                         tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
        });
        std::printf("%-10s %12.1f %14.1f %9.0f%%\n", tf32 ? "tf32" : "fp32",
                    flops / ember_ms / 1e9, flops / blas_ms / 1e9, 100 * blas_ms / ember_ms);
    }
    cuda::set_allow_tf32(false);
    cublasDestroy(handle);
}

void memory_rows() {
    const int64_t N = int64_t(1) << 24;  // 16M elements
    const double bytes = double(N) * 4;
    Tensor x = empty({N}, DType::F32, Device::cuda()), y = empty({N}, DType::F32, Device::cuda());
    cuda::curand_normal_fill(x, 3);
    cuda::curand_normal_fill(y, 4);
    Tensor dst = empty({N}, DType::F32, Device::cuda());
    double copy_ms = time_ms([&] {
        cudaMemcpyAsync(dst.raw_data(), x.raw_data(), size_t(bytes), cudaMemcpyDeviceToDevice, 0);
    });
    const double copy_gbs = 2 * bytes / copy_ms / 1e6;
    Tensor rows = raw::reshape(x, {4096, 4096});
    Tensor ln_rows = raw::reshape(x, {16384, 1024});
    Tensor w = ones({1024}, DType::F32, Device::cuda()), b = zeros({1024}, DType::F32, Device::cuda());
    struct Row { const char* name; double ms, traffic; };
    Row results[] = {
        {"softmax 4096x4096", time_ms([&] { raw::softmax(rows, -1); }), 2 * bytes},
        {"layernorm 16384x1024", time_ms([&] { raw::layernorm_forward(ln_rows, w, b, 1e-5); }),
         2 * bytes},
        {"add 16M", time_ms([&] { raw::add(x, y); }), 3 * bytes},
        // whole-tensor sum: one row split across blocks (reduce.cu); only the input counts
        {"sum of all 16M", time_ms([&] { raw::sum(x); }), bytes},
        // column sums (a bias gradient): (16384, 1024) -> (1024)
        {"sum dim 0 16384x1024", time_ms([&] { raw::sum(ln_rows, {0}); }), bytes},
    };
    std::printf("\nGPU memory-bound ops, f32, 16M elements (effective GB/s)\n");
    std::printf("%-22s %10s %12s\n", "op", "GB/s", "of memcpy");
    std::printf("%-22s %10.0f %11.0f%%\n", "memcpy D2D (peak)", copy_gbs, 100.0);
    for (const Row& r : results) {
        const double gbs = r.traffic / r.ms / 1e6;
        std::printf("%-22s %10.0f %11.0f%%\n", r.name, gbs, 100 * gbs / copy_gbs);
    }
}

// The fused kernels against the op sequences they replace, each pair timed back to back.
void fused_rows() {
    std::printf("\nGPU fused paths against what they replace (ms per call; ratio = old / new)\n");
    std::printf("%-46s %10s %10s %8s\n", "case", "fused", "unfused", "ratio");
    auto row = [](const char* name, double fused, double unfused) {
        std::printf("%-46s %10.3f %10.3f %7.2fx\n", name, fused, unfused, unfused / fused);
    };

    // clip_grad_norm's norm over GPT-2 small's 148 parameter tensors (124M f32 values): one fused
    // reduction and one sync, against a cast, a square, a sum and a sync per tensor.
    std::vector<Tensor> grads;
    const int64_t C = 768, L = 12;
    auto param = [&](Shape shape) {
        Tensor t = empty(shape, DType::F32, Device::cuda());
        cuda::curand_normal_fill(t, grads.size() + 1);
        grads.push_back(t);
    };
    param({50257, C});
    param({1024, C});
    for (int64_t l = 0; l < L; ++l) {
        param({C}), param({C}), param({C, 3 * C}), param({3 * C}), param({C, C}), param({C});
        param({C}), param({C}), param({C, 4 * C}), param({4 * C}), param({4 * C, C}), param({C});
    }
    param({C}), param({C});
    row("grad norm, GPT-2 small's 148 tensors", time_ms([&] { nn::sum_of_squares(grads); }),
        time_ms([&] {
            double total = 0;
            for (const Tensor& g : grads) {
                Tensor g64 = raw::to_dtype(g, DType::F64);
                total += raw::sum(raw::mul(g64, g64)).item<double>();
            }
        }));

    // attention's softmax for (8, 12, 1024, 1024) scores: scale and causal mask in the kernel,
    // against scaling, masking and a plain softmax.
    const int64_t T = 1024;
    Tensor scores = empty({8, 12, T, T}, DType::F32, Device::cuda());
    cuda::curand_normal_fill(scores, 7);
    Tensor blocked = raw::triu(ones({T, T}, DType::F32, Device::cuda()), 1);
    Tensor masked = full({}, -1e30, DType::F32, Device::cuda());
    row("causal softmax (8, 12, 1024, 1024)", time_ms([&] { raw::scaled_softmax(scores, 0.125, true); }),
        time_ms([&] { raw::softmax(raw::where(blocked, masked, raw::mul_scalar(scores, 0.125)), -1); }));
    Tensor probs = raw::scaled_softmax(scores, 0.125, true);
    row("  its backward", time_ms([&] { raw::scaled_softmax_backward(probs, scores, 0.125, true); }),
        time_ms([&] { raw::mul_scalar(raw::softmax_backward(probs, scores, -1), 0.125); }));

    // fused attention (tensor/cuda/attention.cu), GPT-2 small's shape (8, 12, 1024, 64), causal,
    // against the composed path (matmul, scaled causal softmax, matmul): forward, then backward.
    {
        const int64_t B = 8, H = 12, D = 64;
        Tensor q = empty({B, H, T, D}, DType::F32, Device::cuda());
        Tensor k = empty({B, H, T, D}, DType::F32, Device::cuda());
        Tensor v = empty({B, H, T, D}, DType::F32, Device::cuda());
        cuda::curand_normal_fill(q, 11), cuda::curand_normal_fill(k, 12), cuda::curand_normal_fill(v, 13);
        raw::AttentionPattern causal;
        causal.causal = true;
        const Tensor qkT = raw::matmul(q, raw::transpose(k, 2, 3));
        row("attention forward (8, 12, 1024, 64) causal",
            time_ms([&] { raw::attention_forward(q, k, v, causal, 0.125); }),
            time_ms([&] { raw::matmul(raw::scaled_softmax(raw::matmul(q, raw::transpose(k, 2, 3)), 0.125, true), v); }));
        const raw::AttentionOutput saved = raw::attention_forward(q, k, v, causal, 0.125);
        const Tensor p = raw::scaled_softmax(qkT, 0.125, true);
        row("  its backward",
            time_ms([&] { raw::attention_backward(v, q, k, v, saved, causal, 0.125); }),
            time_ms([&] {  // dV = P^T dO, dP = dO V^T, dS, dQ = dS K, dK = dS^T Q
                raw::matmul(raw::transpose(p, 2, 3), v);
                Tensor ds = raw::scaled_softmax_backward(p, raw::matmul(v, raw::transpose(v, 2, 3)), 0.125, true);
                raw::matmul(ds, k);
                raw::matmul(raw::transpose(ds, 2, 3), q);
            }));
    }

    // cross-entropy over (8192, 50257) logits, forward and backward
    Tensor logits = empty({8192, 50257}, DType::F32, Device::cuda());
    cuda::curand_normal_fill(logits, 8);
    Generator gen(9);
    Tensor targets = randint(0, 50257, {8192}, gen, DType::I64, Device::cuda());
    Tensor one = ones({}, DType::F32, Device::cuda());
    raw::CrossEntropyOutput out = raw::cross_entropy_forward(logits, targets, -100, 0);
    std::printf("%-46s %10.3f\n", "cross-entropy forward (8192, 50257)",
                time_ms([&] { raw::cross_entropy_forward(logits, targets, -100, 0); }));
    std::printf("%-46s %10.3f\n", "cross-entropy backward (8192, 50257)",
                time_ms([&] { raw::cross_entropy_backward(one, out, targets, -100, 0); }));
}

}  // namespace

int main() {
    if (!cuda_is_available()) {
        std::printf("GPU benchmarks: no GPU: skipped\n");
        return 0;
    }
    matmul_rows();
    memory_rows();
    fused_rows();
    return 0;
}
#else
int main() {
    std::printf("GPU benchmarks: no GPU: skipped (built without CUDA)\n");
    return 0;
}
#endif
