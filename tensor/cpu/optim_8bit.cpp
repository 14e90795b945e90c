// CPU AdamW with 8-bit block-wise state (raw::adamw_8bit_multi_, tensor/ops.h). Per block of 256:
//
//   m, v  <- code1[byte] * absmax1, code2[byte] * absmax2       dequantize the block
//   m, v  <- adamw_'s moment updates, in f32                      (tensor/cpu/optim.cpp)
//   p     <- p * (1 - lr * wd) - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//   absmax1, absmax2 <- max |m|, max v over the block
//   bytes <- the nearest codes to m / absmax1, v / absmax2
//
// The parameter moves by the f32 moments of this step; only what is kept for the next step is
// rounded. Weight decay comes first, as in adamw_ and torch.optim.AdamW, so this update differs
// from the 32-bit one only in the stored state (bitsandbytes decays after the step instead,
// csrc/kernels.cu kOptimizerStatic8bit2StateBlockwise; the two orders differ by lr^2 * wd terms).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "tensor/cpu/adamw_scalars.h"
#include "tensor/cpu/kernels.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "tensor/quant.h"

namespace ember {
namespace cpu {

namespace {

uint32_t bits_of(float x) {
    uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
}

// The index of the code value nearest to x in a sorted 256-value code: the number of mid-points
// between neighbours that lie below x (a tie goes to the lower code). A binary search costs seven
// dependent, unpredictable branches per element; instead the top 16 bits of x (sign, exponent and
// 7 mantissa bits) pick a bucket whose lowest value already lies above `start` mid-points, and the
// loop that follows takes a step or two at most (a bucket spans 1/128 of its own magnitude; the
// unsigned code's values lie at least 0.7% apart). The same lookup in eight-lane AVX2 gathers
// ran slower on Zen 5 than this scalar loop, and so did two fixed steps without the branch
// (bench/NOTES.md, "8-bit AdamW moments, and QLoRA's memory under a third").
class NearestCode {
public:
    explicit NearestCode(const std::array<float, 256>& code) : code_(code), start_(size_t(1) << 16) {
        for (int k = 0; k < 255; ++k) mid_[size_t(k)] = (code[size_t(k)] + code[size_t(k + 1)]) * 0.5f;
        for (uint32_t b = 0; b < (uint32_t(1) << 16); ++b) {
            // the lowest value of the bucket: its smallest magnitude if positive, largest if negative
            const uint32_t bits = (b << 16) | ((b & 0x8000) ? 0xFFFFu : 0u);
            float lowest;
            std::memcpy(&lowest, &bits, sizeof lowest);
            int below = 0;
            while (below < 255 && mid_[size_t(below)] < lowest) ++below;  // NaN: 0
            start_[b] = uint8_t(below);
        }
    }
    uint8_t operator()(float x) const {
        int k = start_[bits_of(x) >> 16];
        while (k < 255 && x > mid_[size_t(k)]) ++k;
        return uint8_t(k);
    }
    float value(uint8_t byte) const { return code_[byte]; }

private:
    std::array<float, 256> code_;
    std::array<float, 255> mid_{};
    std::vector<uint8_t> start_;  // 65536 buckets
};

const NearestCode& signed_code() {
    static const NearestCode c(dynamic_code_8bit());
    return c;
}
const NearestCode& unsigned_code() {
    static const NearestCode c(dynamic_code_8bit_unsigned());
    return c;
}

// One parameter's update, block by block.
struct AdamW8bitRange {
    float* w;         // (n)
    const float* g;   // (n)
    uint8_t* m_code;  // (n) bytes into the signed code
    float* m_absmax;  // (ceil(n / 256))
    uint8_t* v_code;  // (n) bytes into the unsigned code
    float* v_absmax;  // (ceil(n / 256))
    int64_t n;
    AdamWScalars<float> c;

    explicit AdamW8bitRange(const raw::AdamW8bitSlot& s)
        : w(s.param.data<float>()),
          g(s.grad.data<float>()),
          m_code(static_cast<uint8_t*>(s.exp_avg_codes.raw_data())),
          m_absmax(s.exp_avg_absmax.data<float>()),
          v_code(static_cast<uint8_t*>(s.exp_avg_sq_codes.raw_data())),
          v_absmax(s.exp_avg_sq_absmax.data<float>()),
          n(s.param.numel()),
          c(s.hp) {}

    int64_t blocks() const { return (n + raw::ADAMW_8BIT_BLOCK - 1) / raw::ADAMW_8BIT_BLOCK; }

    void run_block(int64_t block) const {
        const NearestCode& mq = signed_code();
        const NearestCode& vq = unsigned_code();
        const int64_t lo = block * raw::ADAMW_8BIT_BLOCK, len = std::min(raw::ADAMW_8BIT_BLOCK, n - lo);
        float m[raw::ADAMW_8BIT_BLOCK], v[raw::ADAMW_8BIT_BLOCK];
        // The table reads first, so that the arithmetic after them vectorizes (it holds the square
        // root and the division, the slow part of a scalar loop).
        for (int64_t j = 0; j < len; ++j) m[j] = mq.value(m_code[lo + j]), v[j] = vq.value(v_code[lo + j]);
        const float m_scale = m_absmax[block], v_scale = v_absmax[block];
        float* wb = w + lo;
        const float* gb = g + lo;
        for (int64_t j = 0; j < len; ++j) {
            float mj = m[j] * m_scale, vj = v[j] * v_scale;
            c.update(wb[j], gb[j], mj, vj);
            m[j] = mj, v[j] = vj;
        }
        // The block's maxima as integers, in a loop that vectorizes too: for non-negative floats
        // the bit patterns order like the values.
        uint32_t m_max_bits = 0, v_max_bits = 0;
        for (int64_t j = 0; j < len; ++j) {
            m_max_bits = std::max(m_max_bits, bits_of(m[j]) & 0x7FFFFFFFu);
            v_max_bits = std::max(v_max_bits, bits_of(v[j]));
        }
        float m_max, v_max;
        std::memcpy(&m_max, &m_max_bits, sizeof m_max);
        std::memcpy(&v_max, &v_max_bits, sizeof v_max);
        m_absmax[block] = m_max, v_absmax[block] = v_max;
        const float m_inv = m_max > 0 ? 1.0f / m_max : 0.0f, v_inv = v_max > 0 ? 1.0f / v_max : 0.0f;
        for (int64_t j = 0; j < len; ++j) {
            uint8_t c = mq(m[j] * m_inv);
            if (std::signbit(mq.value(c)) != std::signbit(m[j])) c = m[j] > 0 ? c + 1 : c - 1;
            m_code[lo + j] = c;
            v_code[lo + j] = vq(v[j] * v_inv);
        }
    }
};

}  // namespace

// All blocks of all slots in one parallel_for, laid end to end (as adamw_multi_ does elements).
void adamw_8bit_multi_(const std::vector<raw::AdamW8bitSlot>& slots) {
    if (slots.empty()) return;
    std::vector<AdamW8bitRange> ranges;
    std::vector<int64_t> starts{0};  // slot k covers blocks [starts[k], starts[k + 1])
    for (const raw::AdamW8bitSlot& s : slots) {
        ranges.emplace_back(s);
        starts.push_back(starts.back() + ranges.back().blocks());
    }
    parallel_for(starts.back(), 64, [&](int64_t begin, int64_t end) {
        size_t k = size_t(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin()) - 1;
        for (int64_t b = begin; b < end; ++b) {
            while (b >= starts[k + 1]) ++k;
            ranges[k].run_block(b - starts[k]);
        }
    });
}

}  // namespace cpu
}  // namespace ember
