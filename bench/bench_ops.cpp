// `make bench`: speeds of Ember's raw ops on this machine. Not a test: it prints figures.
//
// CPU matmul: f32 square products at 256, 512 and 1024, with 1 and 2 threads, in GFLOP/s
// (2*N^3 flops per product). Each figure is the median of several timed runs after a warm-up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "tensor/ops.h"
#include "tensor/parallel.h"

using namespace ember;

// Median seconds per call of fn over enough repetitions to fill about `budget` seconds.
template <typename Fn>
static double median_seconds(Fn&& fn, double budget = 0.5) {
    using clock = std::chrono::steady_clock;
    fn();  // warm-up
    std::vector<double> times;
    double spent = 0;
    while ((spent < budget && times.size() < 50) || times.size() < 3) {
        auto t0 = clock::now();
        fn();
        double s = std::chrono::duration<double>(clock::now() - t0).count();
        times.push_back(s);
        spent += s;
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

int main() {
    std::printf("Ember op benchmarks\n\n");
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
    return 0;
}
