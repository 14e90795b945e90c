// CUDA layer norm and RMS norm over the last dim of a contiguous (rows, C) tensor, forward and
// backward, fused per row (one warp or block per row, tensor/cuda/rows.cuh), statistics in double.
//
//   layernorm:  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps)  (biased var),
//               y = xhat * w + b
//               dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat))
//   rmsnorm:    xhat = x * rstd,  rstd = 1 / sqrt(mean(x^2) + eps),  y = xhat * w
//               dx = rstd * (g*w - xhat * mean(g*w * xhat))
//   both:       dw = sum over rows of g * xhat,  db = sum over rows of g
//
// dw and db are column sums over all rows, done without atomics so they are reproducible: each
// block sums a band of rows for 256 columns into a (bands, C) table of doubles, and a second
// kernel adds each column's bands in order.
#include "tensor/cuda/kernels.h"
#include "tensor/cuda/rows.cuh"

namespace ember {
namespace cuda {
namespace {

// center: layernorm (subtract the mean); otherwise rmsnorm. mean may be null (rmsnorm).
template <typename T, bool WARP>
__global__ void norm_forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                                    int64_t rows, int64_t C, double eps, bool center) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* xr = x + row * C;
        double mu = 0;
        if (center) {
            double s = 0;
            for (int64_t c = g.lane(); c < C; c += g.size()) s += double(xr[c]);
            mu = g.reduce(s, SumOp{}, 0.0, scratch) / double(C);
        }
        double q = 0;  // sum of squares about mu
        for (int64_t c = g.lane(); c < C; c += g.size()) {
            const double d = double(xr[c]) - mu;
            q += d * d;
        }
        q = g.reduce(q, SumOp{}, 0.0, scratch);
        const T m = T(mu), rs = T(1.0 / sqrt(q / double(C) + eps));
        T* yr = y + row * C;
        for (int64_t c = g.lane(); c < C; c += g.size())
            yr[c] = (xr[c] - m) * rs * (w ? w[c] : T(1)) + (b ? b[c] : T(0));
        if (g.lane() == 0) {
            if (mean) mean[row] = m;
            rstd[row] = rs;
        }
    }
}

template <typename T, bool WARP>
__global__ void norm_dx_kernel(const T* grad, const T* x, const T* w, const T* mean,
                               const T* rstd, T* dx, int64_t rows, int64_t C, bool center) {
    ROW_SCRATCH(double, scratch);
    RowGroup<WARP> g;
    FOR_EACH_ROW(g, row, rows) {
        const T* gr = grad + row * C;
        const T* xr = x + row * C;
        const T m = center ? mean[row] : T(0), rs = rstd[row];
        double sum_wg = 0, sum_wg_xhat = 0;
        for (int64_t c = g.lane(); c < C; c += g.size()) {
            const T wg = gr[c] * (w ? w[c] : T(1));
            sum_wg += double(wg);
            sum_wg_xhat += double(wg * ((xr[c] - m) * rs));
        }
        sum_wg = g.reduce(sum_wg, SumOp{}, 0.0, scratch);
        sum_wg_xhat = g.reduce(sum_wg_xhat, SumOp{}, 0.0, scratch);
        const T a = center ? T(sum_wg / double(C)) : T(0), bb = T(sum_wg_xhat / double(C));
        T* dr = dx + row * C;
        for (int64_t c = g.lane(); c < C; c += g.size()) {
            const T wg = gr[c] * (w ? w[c] : T(1));
            dr[c] = rs * (wg - a - ((xr[c] - m) * rs) * bb);
        }
    }
}

constexpr int64_t ROWS_PER_BAND = 64;
constexpr int64_t MAX_BANDS = 1024;  // grid.y, well under 65,535

// partial_w/b[band, c] = sums over the band's rows of g * xhat and g. grid (ceil(C/256), bands).
template <typename T>
__global__ void weight_grad_partial_kernel(const T* grad, const T* x, const T* mean,
                                           const T* rstd, double* partial_w, double* partial_b,
                                           int64_t rows, int64_t C, int64_t band_rows) {
    const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int64_t band = blockIdx.y;
    const int64_t r0 = band * band_rows;
    const int64_t r1 = r0 + band_rows < rows ? r0 + band_rows : rows;
    double sw = 0, sb = 0;
    for (int64_t r = r0; r < r1; ++r) {
        const T gv = grad[r * C + c];
        const T m = mean ? mean[r] : T(0);
        sw += double(gv * ((x[r * C + c] - m) * rstd[r]));
        sb += double(gv);
    }
    if (partial_w) partial_w[band * C + c] = sw;
    if (partial_b) partial_b[band * C + c] = sb;
}

template <typename T>
__global__ void weight_grad_final_kernel(const double* partial_w, const double* partial_b, T* dw,
                                         T* db, int64_t bands, int64_t C) {
    GRID_STRIDE_LOOP(c, C) {
        double sw = 0, sb = 0;
        for (int64_t k = 0; k < bands; ++k) {
            if (dw) sw += partial_w[k * C + c];
            if (db) sb += partial_b[k * C + c];
        }
        if (dw) dw[c] = T(sw);
        if (db) db[c] = T(sb);
    }
}

template <typename T>
const T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <typename T>
T* out_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

template <typename T>
void weight_grads(const T* g, const T* x, const T* mean, const T* rstd, int64_t rows, int64_t C,
                  T* dw, T* db) {
    if ((!dw && !db) || C == 0) return;
    if (rows == 0) {
        if (dw) CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * sizeof(T), stream()));
        if (db) CUDA_CHECK(cudaMemsetAsync(db, 0, size_t(C) * sizeof(T), stream()));
        return;
    }
    int64_t band_rows = ROWS_PER_BAND;
    int64_t bands = (rows + band_rows - 1) / band_rows;
    if (bands > MAX_BANDS) {
        band_rows = (rows + MAX_BANDS - 1) / MAX_BANDS;
        bands = (rows + band_rows - 1) / band_rows;
    }
    Tensor partial = make_tensor({2, bands, C}, DType::F64, Device::cuda());
    double* pw = dw ? partial.data<double>() : nullptr;
    double* pb = db ? partial.data<double>() + bands * C : nullptr;
    dim3 grid(unsigned((C + THREADS - 1) / THREADS), unsigned(bands));
    weight_grad_partial_kernel<T><<<grid, THREADS, 0, stream()>>>(g, x, mean, rstd, pw, pb, rows,
                                                                  C, band_rows);
    CUDA_LAUNCHED();
    weight_grad_final_kernel<T><<<grid_for(C), THREADS, 0, stream()>>>(pw, pb, dw, db, bands, C);
    CUDA_LAUNCHED();
}

template <typename T>
void forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
             const Tensor& y, const Tensor& mean, const Tensor& rstd, bool center) {
    const int64_t rows = x.size(0), C = x.size(1);
    if (C == 0) return;
    launch_rows(rows, C, [&](auto warp, unsigned grid, int threads) {
        norm_forward_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
            x.data<T>(), data_or_null<T>(weight), data_or_null<T>(bias), y.data<T>(),
            out_or_null<T>(mean), rstd.data<T>(), rows, C, eps, center);
    });
}

template <typename T>
void backward(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
              const Tensor& rstd, const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
              bool center) {
    const int64_t rows = x.size(0), C = x.size(1);
    const T* mp = center ? mean.data<T>() : nullptr;
    if (dx.defined() && C > 0) {
        launch_rows(rows, C, [&](auto warp, unsigned grid, int threads) {
            norm_dx_kernel<T, decltype(warp)::value><<<grid, threads, 0, stream()>>>(
                grad.data<T>(), x.data<T>(), data_or_null<T>(weight), mp, rstd.data<T>(),
                dx.data<T>(), rows, C, center);
        });
    }
    weight_grads<T>(grad.data<T>(), x.data<T>(), mp, rstd.data<T>(), rows, C,
                    out_or_null<T>(dweight), out_or_null<T>(dbias));
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       const Tensor& y, const Tensor& mean, const Tensor& rstd) {
    dispatch_float(x.dtype(), "layernorm", [&](auto tag) {
        forward<typename decltype(tag)::type>(x, weight, bias, eps, y, mean, rstd, true);
    });
}

void layernorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                        const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                        const Tensor& dweight, const Tensor& dbias) {
    dispatch_float(x.dtype(), "layernorm_backward", [&](auto tag) {
        backward<typename decltype(tag)::type>(grad, x, weight, mean, rstd, dx, dweight, dbias,
                                               true);
    });
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y,
                     const Tensor& rstd) {
    dispatch_float(x.dtype(), "rmsnorm", [&](auto tag) {
        forward<typename decltype(tag)::type>(x, weight, Tensor(), eps, y, Tensor(), rstd, false);
    });
}

void rmsnorm_backward(const Tensor& grad, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, const Tensor& dx, const Tensor& dweight) {
    dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
        backward<typename decltype(tag)::type>(grad, x, weight, Tensor(), rstd, dx, dweight,
                                               Tensor(), false);
    });
}

}  // namespace cuda
}  // namespace ember
