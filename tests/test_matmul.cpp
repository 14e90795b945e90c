// matmul against a naive triple loop at awkward sizes, layouts and thread counts.
#include <array>

#include "tests/helpers.h"
#include "tensor/cpu/kernels.h"
#include "tensor/parallel.h"

using namespace ember;
using namespace ember::testing;

// out[b] = a[b] @ b[b], one multiply-add at a time, in f64.
static Tensor naive_matmul(const Tensor& a, const Tensor& b) {
    Tensor a64 = raw::contiguous(raw::to_dtype(a, DType::F64));
    Tensor b64 = raw::contiguous(raw::to_dtype(b, DType::F64));
    int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    int64_t batch = a.numel() / (M * K);
    Tensor out = zeros({batch, M, N}, DType::F64);
    const double *pa = a64.data<double>(), *pb = b64.data<double>();
    double* po = out.data<double>();
    for (int64_t m = 0; m < batch; ++m)
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                double acc = 0;
                for (int64_t k = 0; k < K; ++k) acc += pa[(m * M + i) * K + k] * pb[(m * K + k) * N + j];
                po[(m * M + i) * N + j] = acc;
            }
    return out;
}

TEST_CASE("matmul: matches the naive product at awkward sizes, f32 and f64, 1 and 2 threads") {
    Generator gen(5);
    int saved_threads = num_threads();
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{
                 {1, 1, 1}, {1, 7, 1}, {7, 1, 5}, {5, 17, 3}, {13, 300, 21}, {127, 65, 33},
                 {1, 513, 1025}, {130, 257, 2100}}) {
            for (DType dt : {DType::F32, DType::F64}) {
                CAPTURE(threads);
                CAPTURE(M);
                CAPTURE(K);
                CAPTURE(N);
                CAPTURE(dt);
                Tensor a = randn({M, K}, gen, dt), b = randn({K, N}, gen, dt);
                Tensor got = raw::matmul(a, b);
                double tol = (dt == DType::F32 ? 2e-5 : 1e-12) * std::sqrt(double(K)) * 4;
                CHECK(max_abs_diff(got.reshape({1, M, N}), naive_matmul(a, b)) < tol);
                // B = W^T, a Linear's weight (N, K): packed by 8 x 8 transposes for f32
                Tensor wt = raw::transpose(randn({N, K}, gen, dt), 0, 1);
                CHECK(max_abs_diff(raw::matmul(a, wt).reshape({1, M, N}), naive_matmul(a, wt)) < tol);
            }
        }
    }
    set_num_threads(saved_threads);
}

// Fewer columns than the kernel's tile (NR: 32 with AVX-512, 16 with AVX2, 8 in f64) and at least
// twice as many rows: computed as C^T = B^T A^T and copied
// back (tensor/cpu/matmul.cpp). Strided and batched operands, both f32 builds, f64, 1 and 2 threads.
TEST_CASE("matmul: narrow products (N < NR, M >= 2N) match the naive product") {
    Generator gen(23);
    const int saved_threads = num_threads();
    for (DType dt : {DType::F32, DType::F64})
        for (bool avx512 : {true, false})
            for (int threads : {1, 2})
                for (const auto& mkn : std::vector<std::array<int64_t, 3>>{
                         {64, 768, 8}, {130, 33, 1}, {300, 257, 17}, {65, 5, 31}, {10, 1, 5}}) {
                    const int64_t M = mkn[0], K = mkn[1], N = mkn[2];
                    CAPTURE(M);
                    CAPTURE(K);
                    CAPTURE(N);
                    cpu::allow_avx512_matmul(avx512);
                    set_num_threads(threads);
                    const double tol = (dt == DType::F32 ? 2e-5 : 1e-12) * std::sqrt(double(K)) * 4;
                    Tensor a = randn({M, K}, gen, dt), b = randn({K, N}, gen, dt);
                    CHECK(max_abs_diff(raw::matmul(a, b).reshape({1, M, N}), naive_matmul(a, b)) < tol);
                    Tensor at = randn({K, M}, gen, dt), w = randn({N, K}, gen, dt);  // A^T and W views
                    Tensor a_view = raw::transpose(at, 0, 1), b_view = raw::transpose(w, 0, 1);
                    CHECK(max_abs_diff(raw::matmul(a_view, b_view).reshape({1, M, N}),
                                       naive_matmul(raw::contiguous(a_view), raw::contiguous(b_view))) < tol);
                    Tensor a3 = randn({3, M, K}, gen, dt), b3 = randn({3, K, N}, gen, dt);
                    Tensor got = raw::matmul(a3, b3);
                    for (int64_t i = 0; i < 3; ++i)
                        CHECK(max_abs_diff(raw::select(got, 0, i).reshape({1, M, N}),
                                           naive_matmul(raw::contiguous(raw::select(a3, 0, i)),
                                                        raw::contiguous(raw::select(b3, 0, i)))) < tol);
                }
    cpu::allow_avx512_matmul(true);
    set_num_threads(saved_threads);
}

// One to four rows take the small-M path (cpu/matmul_small_m.h): dot products over the columns
// of B = W^T, or rows of B scaled and summed; five rows and the layouts it refuses use the GEMM.
TEST_CASE("matmul: one to five rows against the naive product, both layouts of B, batched") {
    Generator gen(8);
    int saved_threads = num_threads();
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (int64_t M : {1, 2, 3, 4, 5})
            for (auto [K, N] : std::vector<std::array<int64_t, 2>>{{1, 1}, {3, 17}, {33, 1}, {31, 600}, {1000, 45}}) {
                for (DType dt : {DType::F32, DType::F64}) {
                    CAPTURE(threads);
                    CAPTURE(M);
                    CAPTURE(K);
                    CAPTURE(N);
                    CAPTURE(dt);
                    const double tol = (dt == DType::F32 ? 2e-5 : 1e-12) * std::sqrt(double(K)) * 4;
                    Tensor a = randn({2, M, K}, gen, dt);
                    Tensor w = randn({2, N, K}, gen, dt);         // B = W^T: columns contiguous
                    Tensor b = randn({2, K, N}, gen, dt);         // rows contiguous
                    Tensor wide = randn({2, K, 2 * N}, gen, dt);  // every other column: neither
                    Tensor at = randn({2, K, M}, gen, dt);        // A as a transpose view
                    CHECK(max_abs_diff(raw::matmul(a, raw::transpose(w, 1, 2)),
                                       naive_matmul(a, raw::transpose(w, 1, 2))) < tol);
                    CHECK(max_abs_diff(raw::matmul(a, b), naive_matmul(a, b)) < tol);
                    Tensor strided = raw::slice(wide, 2, 0, 2 * N, 2);
                    CHECK(max_abs_diff(raw::matmul(a, strided), naive_matmul(a, strided)) < tol);
                    Tensor a_view = raw::transpose(at, 1, 2);
                    CHECK(max_abs_diff(raw::matmul(a_view, b), naive_matmul(a_view, b)) < tol);
                    // one matrix of the batch: a Linear's (1, K) @ W^T
                    Tensor a0 = raw::contiguous(raw::slice(a, 0, 0, 1)).reshape({M, K});
                    Tensor w0 = raw::contiguous(raw::slice(w, 0, 0, 1)).reshape({N, K});
                    CHECK(max_abs_diff(raw::matmul(a0, raw::transpose(w0, 0, 1)).reshape({1, M, N}),
                                       naive_matmul(a0, raw::transpose(w0, 0, 1))) < tol);
                }
            }
    }
    set_num_threads(saved_threads);
}

TEST_CASE("matmul: transposed operands and broadcast batches") {
    Generator gen(6);
    Tensor a = randn({4, 6, 9}, gen, DType::F64);  // used as (4, 9, 6) through a transpose
    Tensor b = randn({6, 11}, gen, DType::F64);
    Tensor at = a.transpose(1, 2).contiguous();
    Tensor got = raw::matmul(raw::transpose(a, 1, 2), b);
    CHECK(got.shape() == Shape{4, 9, 11});
    CHECK(max_abs_diff(got, naive_matmul(at, raw::contiguous(raw::expand(b, {4, 6, 11})))) < 1e-12);

    Tensor x = randn({2, 1, 3, 5}, gen, DType::F64), y = randn({4, 5, 2}, gen, DType::F64);
    Tensor z = raw::matmul(x, y);
    CHECK(z.shape() == Shape{2, 4, 3, 2});
    Tensor want = naive_matmul(raw::contiguous(raw::expand(x, {2, 4, 3, 5})),
                               raw::contiguous(raw::expand(y, {2, 4, 5, 2})));
    CHECK(max_abs_diff(z.reshape({8, 3, 2}), want) < 1e-12);
}

TEST_CASE("matmul: an empty inner dim gives zeros") {
    Tensor a = zeros({3, 0}), b = zeros({0, 4});
    Tensor c = raw::matmul(a, b);
    CHECK(c.shape() == Shape{3, 4});
    CHECK(c.to_vector<float>() == std::vector<float>(12, 0.f));
}

TEST_CASE("matmul: the AVX2 and AVX-512 builds of the f32 kernel agree (where the CPU has AVX-512)") {
    Generator gen(12);
    for (const auto& mkn : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {7, 300, 33}, {130, 65, 129}, {257, 513, 40}}) {
        const int64_t M = mkn[0], K = mkn[1], N = mkn[2];
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Tensor a = randn({M, K}, gen), b = randn({N, K}, gen).t();  // b transposed: strided packing
        cpu::allow_avx512_matmul(false);
        Tensor avx2 = raw::matmul(a, b);
        cpu::allow_avx512_matmul(true);
        Tensor best = raw::matmul(a, b);
        CHECK(max_abs_diff(avx2, best) < 2e-5 * std::sqrt(double(K)) * 4);
        CHECK(max_abs_diff(best.reshape({1, M, N}), naive_matmul(a.to(DType::F64), b.to(DType::F64)).to(DType::F32)) <
              2e-5 * std::sqrt(double(K)) * 4);
    }
}
