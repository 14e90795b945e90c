// How the blocked GEMMs (gemm_blocked.h, quant_blocked.h, bf16_gemm.cpp) split C (M, N) between
// threads: into bands of whole tiles, MR-row tiles when split by rows and NR-column tiles when
// split by columns, as even as whole tiles allow and at most one per thread. Each GEMM picks the
// direction. Internal linkage, as the GEMMs that include it are built for different instruction
// sets.
#pragma once

#include <algorithm>
#include <cstdint>

#include "tensor/parallel.h"

namespace ember {
namespace cpu {
namespace {

struct GemmBands {
    GemmBands(int64_t M, int64_t N, int64_t MR, int64_t NR, bool split_rows)
        : M(M), N(N), split_rows(split_rows), unit(split_rows ? MR : NR), extent(split_rows ? M : N),
          units((extent + unit - 1) / unit), count(std::max<int64_t>(1, std::min<int64_t>(units, num_threads()))) {}

    // The rows [i0, i1) and columns [j0, j1) of C that band b in [0, count) covers.
    void range(int64_t b, int64_t& i0, int64_t& i1, int64_t& j0, int64_t& j1) const {
        const int64_t lo = units * b / count * unit, hi = std::min(extent, units * (b + 1) / count * unit);
        if (split_rows) {
            i0 = lo, i1 = hi, j0 = 0, j1 = N;
        } else {
            i0 = 0, i1 = M, j0 = lo, j1 = hi;
        }
    }

    // Whether a band of depth K is work enough (a million multiply-adds) to hand to another
    // thread; below that, waking one costs more than the band.
    bool worth_a_thread(int64_t K) const { return 2 * M * N * K / count > (1 << 20); }

    int64_t M, N;
    bool split_rows;
    int64_t unit, extent, units;  // tile width along the split, its extent, and tiles in it
    int64_t count;                // bands
};

}  // namespace
}  // namespace cpu
}  // namespace ember
