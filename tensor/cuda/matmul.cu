// CUDA matrix product through cuBLAS: out (batch, M, N) = a (batch, M, K) @ b (batch, K, N), with
// one cublasGemmStridedBatchedEx call for the whole batch.
//
// Row-major through a column-major library, once: a row-major (R, C) matrix with row stride ld
// is, read by cuBLAS (column-major), the (C, R) matrix X^T with leading dimension ld. So instead
// of C = A B we ask cuBLAS for C^T = B^T A^T, an (N, M) column-major product, which is exactly
// the row-major (M, N) C in memory: pass b first, a second, and m = N, n = M. An operand stored
// column-major instead (a transposed view: unit row stride) is the same matrix read without the
// implicit transpose, so it goes in with CUBLAS_OP_T and its column stride as leading dimension.
// Operands whose last two dims are neither (e.g. a strided slice of both dims) are copied to
// contiguous first. The batch stride is the tensor's stride(0): 0 for a broadcast operand.
//
// Precision: f32 computes in f32 (CUBLAS_COMPUTE_32F) unless set_allow_tf32(true), which lets
// cuBLAS use TF32 tensor cores; f64 computes in f64.
#include <climits>

#include "tensor/cuda/common.cuh"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/kernels.h"
#include "tensor/ops.h"

namespace ember {
namespace cuda {
namespace {

// How cuBLAS should read one (rows, cols) matrix with element strides (rs, cs) so that the op
// yields its transpose (see the file comment). ok is false when neither layout fits.
struct BlasOperand {
    bool ok = false;
    cublasOperation_t op = CUBLAS_OP_N;
    int64_t ld = 1;
};

BlasOperand describe(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    BlasOperand d;
    const int64_t cols1 = cols > 1 ? cols : 1, rows1 = rows > 1 ? rows : 1;
    if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols1)) {  // row-major: read as X^T
        d.ok = true;
        d.op = CUBLAS_OP_N;
        d.ld = rows == 1 ? cols1 : rs;
    } else if ((rs == 1 || rows == 1) && (cols == 1 || cs >= rows1)) {  // column-major: X
        d.ok = true;
        d.op = CUBLAS_OP_T;
        d.ld = cols == 1 ? rows1 : cs;
    }
    return d;
}

void check_int(const char* what, int64_t v) {
    EMBER_CHECK(v <= INT_MAX, "matmul: ", what, " = ", v, " exceeds cuBLAS's 32-bit limit (",
                INT_MAX, "); split the product into smaller ones");
}

const char* cublas_error(cublasStatus_t st) { return cublasGetStatusString(st); }

}  // namespace

void matmul(const Tensor& a_in, const Tensor& b_in, const Tensor& out) {
    if (out.numel() == 0) return;
    const int64_t batch = out.size(0), M = out.size(1), N = out.size(2), K = a_in.size(2);
    const size_t item = dtype_size(out.dtype());
    if (K == 0) {  // an empty sum: zeros
        CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, size_t(out.numel()) * item, stream()));
        return;
    }
    Tensor a = a_in, b = b_in;
    BlasOperand da = describe(M, K, a.stride(1), a.stride(2));
    if (!da.ok) {
        a = raw::contiguous(a);
        da = describe(M, K, a.stride(1), a.stride(2));
    }
    BlasOperand db = describe(K, N, b.stride(1), b.stride(2));
    if (!db.ok) {
        b = raw::contiguous(b);
        db = describe(K, N, b.stride(1), b.stride(2));
    }
    check_int("M", M), check_int("N", N), check_int("K", K), check_int("batch", batch);
    check_int("a's leading dimension", da.ld), check_int("b's leading dimension", db.ld);
    const long long stride_a = batch > 1 ? a.stride(0) : 0, stride_b = batch > 1 ? b.stride(0) : 0;
    const long long stride_c = M * N;

    const bool f64 = out.dtype() == DType::F64;
    const cudaDataType_t type = f64 ? CUDA_R_64F : CUDA_R_32F;
    const cublasComputeType_t compute =
        f64 ? CUBLAS_COMPUTE_64F : (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
    const double one_d = 1, zero_d = 0;
    const float one_f = 1, zero_f = 0;
    const void* alpha = f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
    const void* beta = f64 ? static_cast<const void*>(&zero_d) : static_cast<const void*>(&zero_f);

    // C^T (N, M) = op(B) (N, K) @ op(A) (K, M), column-major.
    cublasStatus_t st = cublasGemmStridedBatchedEx(
        cublas_handle(), db.op, da.op, int(N), int(M), int(K), alpha, b.raw_data(), type,
        int(db.ld), stride_b, a.raw_data(), type, int(da.ld), stride_a, beta, out.raw_data(), type,
        int(N), stride_c, int(batch), compute, CUBLAS_GEMM_DEFAULT);
    EMBER_CHECK(st == CUBLAS_STATUS_SUCCESS, "matmul: cublasGemmStridedBatchedEx failed (",
                cublas_error(st), ") for a ", a.shape(), " @ ", b.shape(), " product (strides ",
                a.strides(), " and ", b.strides(), ")");
}

}  // namespace cuda
}  // namespace ember
