// The machine's f32 FMA peak: 12 independent chains of 512-bit fused multiply-adds held in
// registers (more than the 2 pipes x 4 cycles of latency need), on 1 thread and then on 2 at once.
// Nothing is loaded or stored in the loop, so this is the roof every CPU product here sits under:
// bench/NOTES.md compares the GEMM and the training steps' arithmetic against it.
//
//     make build/fma_peak && build/fma_peak
#include <chrono>
#include <cstdio>
#include <thread>

#if defined(__AVX512F__)
#include <immintrin.h>

static double fma_gflops() {
    __m512 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1.0f + float(i) * 1e-7f);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    const long rounds = 20000000;
    auto t0 = std::chrono::steady_clock::now();
    for (long n = 0; n < rounds; ++n) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float sink = 0;
    for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(acc[i]);
    if (sink == 12345.0f) std::printf(" ");  // keeps the chains alive
    return double(rounds) * 12 * 16 * 2 / s / 1e9;
}

int main() {
    std::printf("f32 FMA peak, AVX-512, 12 chains in registers\n");
    std::printf("1 thread:  %.1f GFLOP/s\n", fma_gflops());
    double second = 0;
    std::thread other([&] { second = fma_gflops(); });
    const double first = fma_gflops();
    other.join();
    std::printf("2 threads: %.1f + %.1f = %.1f GFLOP/s\n", first, second, first + second);
}
#else
int main() { std::printf("fma_peak: built without AVX-512 (x86-64 with -mavx512f needed)\n"); }
#endif
