// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). The value at element i of a
// fill depends only on (seed, the fill's offset, i), never on the order or the device that
// computes it, so a CPU loop and a CUDA grid produce the same numbers and the same dropout masks.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif

namespace ember {

struct Philox4 {
    uint32_t v[4];
};

// One Philox block: 4 random 32-bit words from a 128-bit counter and a 64-bit key.
HOST_DEVICE Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                               uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
        uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
        uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
        k0 += W0, k1 += W1;
    }
    return {{c0, c1, c2, c3}};
}

// The 4 words for block `block` of the fill numbered `offset` under `seed`. Element i of a fill
// uses word i % 4 of block i / 4.
HOST_DEVICE Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
    return philox4x32(uint32_t(block), uint32_t(block >> 32), uint32_t(offset),
                      uint32_t(offset >> 32), uint32_t(seed), uint32_t(seed >> 32));
}

// A uniform number in (0, 1]: 24 random bits, never exactly 0 so log() is safe.
HOST_DEVICE float uniform_from_bits(uint32_t bits) {
    return (float((bits >> 8) + 1u)) * (1.0f / 16777216.0f);
}

// Uniform in (0, 1] for element i of a fill.
HOST_DEVICE float philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
    return uniform_from_bits(philox_block(seed, offset, i / 4).v[i % 4]);
}

// Standard normal for element i of a fill: Box-Muller on words (0,1) or (2,3) of block i / 2.
HOST_DEVICE float philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
    Philox4 r = philox_block(seed, offset, i / 2);
    int pair = int(i % 2) * 2;
    float u1 = uniform_from_bits(r.v[pair]), u2 = uniform_from_bits(r.v[pair + 1]);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

// A seeded source of fills. Each fill takes the next offset, so two fills never share numbers and
// a generator's whole state is (seed, offset): save those two to resume a run bit for bit.
class Generator {
public:
    explicit Generator(uint64_t seed = 0) : seed_(seed) {}
    uint64_t seed() const { return seed_; }
    uint64_t offset() const { return offset_; }
    void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
    // Reserve the next fill's offset.
    uint64_t next_offset() { return offset_++; }

private:
    uint64_t seed_ = 0;
    uint64_t offset_ = 0;
};

}  // namespace ember
