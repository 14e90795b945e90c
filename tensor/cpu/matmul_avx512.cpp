// The blocked GEMM of gemm_blocked.h compiled with AVX-512 (see the Makefile's flags for this
// file), for f32. 8 x 32 accumulators are 16 of the 32 zmm registers; the micro-kernel's plain
// loops become 512-bit FMAs. matmul.cpp calls it only when cpu_has_avx512() says so.
#include "tensor/cpu/kernels.h"

namespace ember {
namespace cpu {
namespace {
template <typename T> struct Tiles;  // f32 only here: f64 products use matmul.cpp's build
template <> struct Tiles<float> { static constexpr int MR = 8, NR = 32; };
}  // namespace
}  // namespace cpu
}  // namespace ember

#include "tensor/cpu/gemm_blocked.h"

namespace ember {
namespace cpu {

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(EMBER_HAVE_AVX512_GEMM)
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    return has;
#else
    return false;
#endif
}

int64_t avx512_tile_columns() { return Tiles<float>::NR; }

void matmul_f32_avx512(const Tensor& a, const Tensor& b, const Tensor& out) { matmul_typed<float>(a, b, out); }

}  // namespace cpu
}  // namespace ember
