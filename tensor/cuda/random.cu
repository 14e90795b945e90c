// CUDA random fills and dropout.
//
// The default path is Ember's own counter-based Philox (tensor/random.h), the very formulas the
// CPU kernels use: element i of a fill depends only on (seed, offset, i). So a seed gives the same
// initial weights and the same dropout masks on the CPU and the GPU, and a run can move between
// devices, or be checked on one against the other, without its randomness changing. (Uniforms
// and masks match bit for bit; normals go through logf / cosf, whose last bit may differ between
// CUDA's and the C library's implementations.)
//
// cuRAND is the fast path for bulk fills where that identity is not needed, e.g. initializing a
// very large weight once: curand_normal_fill / curand_uniform_fill (tensor/cuda/cuda.h) use the
// cuRAND host API with its Philox4x32-10 generator on Ember's stream.
#include <curand.h>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/runtime.h"

namespace ember {
namespace cuda {
namespace {

template <typename T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
    GRID_STRIDE_LOOP(i, n) out[i] = T(philox_uniform(seed, offset, uint64_t(i)));
}

template <typename T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
    GRID_STRIDE_LOOP(i, n) out[i] = T(philox_normal(seed, offset, uint64_t(i)));
}

// Element e of x (row-major) is kept iff philox_uniform(seed, offset, e) > p; kept ones are
// scaled by 1 / (1 - p). out and mask contiguous; x any strides (layout operand 0).
template <typename T>
__global__ void dropout_kernel(const T* x, T* out, T* mask, Layout<1> layout, int64_t n, double p,
                               T scale, uint64_t seed, uint64_t offset) {
    GRID_STRIDE_LOOP(e, n) {
        int64_t off[1];
        layout.offsets(e, off);
        const T m = double(philox_uniform(seed, offset, uint64_t(e))) > p ? T(1) : T(0);
        mask[e] = m;
        out[e] = x[off[0]] * m * scale;
    }
}

void curand_check(curandStatus_t st, const char* call) {
    EMBER_CHECK(st == CURAND_STATUS_SUCCESS, "cuRAND: ", call, " failed with status ", int(st));
}

// Fills out (contiguous f32/f64 CUDA) with cuRAND: normal(mean, stddev) or uniform (0, 1].
// cuRAND's normal fills need an even count, so the numbers go through a scratch buffer of
// even length, then into out.
void curand_fill(const Tensor& out, uint64_t seed, bool normal, double mean, double stddev) {
    EMBER_CHECK(out.device().is_cuda() && out.is_contiguous() && is_floating(out.dtype()),
                "curand fill: needs a contiguous f32 or f64 CUDA tensor, got ", out.dtype(), " on ",
                out.device(), out.is_contiguous() ? "" : " (not contiguous)");
    const int64_t n = out.numel();
    if (n == 0) return;
    const int64_t even = (n + 1) / 2 * 2;
    Tensor scratch = make_tensor({even}, out.dtype(), out.device());
    curandGenerator_t gen;
    curand_check(curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10),
                 "curandCreateGenerator");
    try {
        curand_check(curandSetStream(gen, stream()), "curandSetStream");
        curand_check(curandSetPseudoRandomGeneratorSeed(gen, seed), "curandSetSeed");
        const size_t count = size_t(even);
        if (out.dtype() == DType::F32) {
            float* p = scratch.data<float>();
            curand_check(normal ? curandGenerateNormal(gen, p, count, float(mean), float(stddev))
                                : curandGenerateUniform(gen, p, count),
                         "curandGenerate (f32)");
        } else {
            double* p = scratch.data<double>();
            curand_check(normal ? curandGenerateNormalDouble(gen, p, count, mean, stddev)
                                : curandGenerateUniformDouble(gen, p, count),
                         "curandGenerate (f64)");
        }
    } catch (...) {
        curandDestroyGenerator(gen);
        throw;
    }
    curandDestroyGenerator(gen);
    copy_on_device(out.raw_data(), scratch.raw_data(), size_t(n) * dtype_size(out.dtype()));
}

}  // namespace

void uniform_fill(const Tensor& out, uint64_t seed, uint64_t offset) {
    const int64_t n = out.numel();
    if (n == 0) return;
    dispatch_float(out.dtype(), "rand", [&](auto tag) {
        using T = typename decltype(tag)::type;
        uniform_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(out.data<T>(), n, seed, offset);
        CUDA_LAUNCHED();
    });
}

void normal_fill(const Tensor& out, uint64_t seed, uint64_t offset) {
    const int64_t n = out.numel();
    if (n == 0) return;
    dispatch_float(out.dtype(), "randn", [&](auto tag) {
        using T = typename decltype(tag)::type;
        normal_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(out.data<T>(), n, seed, offset);
        CUDA_LAUNCHED();
    });
}

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out,
             const Tensor& mask) {
    const int64_t n = x.numel();
    if (n == 0) return;
    Layout<1> layout = make_layout<1>(x.shape(), {x.strides()});
    dispatch_float(x.dtype(), "dropout", [&](auto tag) {
        using T = typename decltype(tag)::type;
        dropout_kernel<T><<<grid_for(n), THREADS, 0, stream()>>>(
            x.data<T>(), out.data<T>(), mask.data<T>(), layout, n, p, T(1.0 / (1.0 - p)), seed,
            offset);
        CUDA_LAUNCHED();
    });
}

void curand_normal_fill(const Tensor& out, uint64_t seed, double mean, double stddev) {
    curand_fill(out, seed, true, mean, stddev);
}

void curand_uniform_fill(const Tensor& out, uint64_t seed) { curand_fill(out, seed, false, 0, 1); }

}  // namespace cuda
}  // namespace ember
