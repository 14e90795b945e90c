// Rotary position embeddings (RoPE, Su et al. 2021) in LLaMA's rotate-half convention, and the
// ways their angles are stretched to read a window longer than the one a model was trained on.
//
// Dims j and j + D/2 of a head (D even) form a pair rotated by angle pos * theta^(-2j/D) * m_j,
// j < D/2, for the token at position pos = position_offset + t; cos and sin are multiplied by c:
//
//   None     m_j = 1, c = 1.
//   Linear   m_j = 1 / factor, c = 1: position interpolation (Chen et al. 2023), LongLoRA's
//            choice; HF's rope_scaling {"type": "linear", "factor": f}.
//   Yarn     "NTK-by-parts" (Peng et al. 2023, YaRN): a pair that turns more than beta_fast
//            times within the trained context keeps its angle (m_j = 1), one that turns fewer
//            than beta_slow times is interpolated (m_j = 1 / factor), and the pairs between
//            follow a linear ramp over the pair index j; c = attention_factor, by default
//            0.1 ln(factor) + 1, so every q.k is scaled by c^2. The fast pairs carry the
//            distances between neighbouring tokens, which linear interpolation squeezes by the
//            factor. As HF's _compute_yarn_parameters: {"rope_type": "yarn", "factor": f,
//            "original_max_position_embeddings": L, "beta_fast", "beta_slow", "attention_factor"},
//            including its ramp bounds (floor and ceil of the pair index where a pair turns
//            beta_fast and beta_slow times in L, clamped to [0, D - 1]) and its use of the
//            explicit factor (some transformers releases took max_position_embeddings / L
//            instead; the two agree when the context is f * L, as interpolate_positions leaves
//            it for a multiple of L). DeepSeek's mscale keys are refused.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace ember {
namespace nn {

struct RopeScaling {
    enum class Type { None, Linear, Yarn };
    Type type = Type::None;
    double factor = 1;
    int64_t original_context = 0;           // yarn: the context trained on
    double beta_fast = 32, beta_slow = 1;   // yarn: the ramp's ends, in turns within it
    double attention_factor = 0;            // yarn: 0 = 0.1 ln(factor) + 1

    static RopeScaling linear(double factor);
    static RopeScaling yarn(double factor, int64_t original_context);

    // m_j for the D / 2 pairs of a head of D dims, and c (see above).
    std::vector<double> frequency_multipliers(int64_t D, double theta) const;
    double cos_sin_factor() const;
    // Throws an ember::Error naming `op`, the field and the fix.
    void validate(const char* op) const;
    bool operator==(const RopeScaling& o) const;
};

// The (T, D) cos and sin tables for T tokens from position_offset, shared by q and k.
struct RopeTables {
    Tensor cos, sin;  // (T, D)
};
RopeTables rope_tables(int64_t T, int64_t D, int64_t position_offset, double theta, const RopeScaling& scaling,
                       DType dtype, Device device);
// x (B, H, T, D) rotated: x * cos + rotate_half(x) * sin. Differentiable.
Tensor apply_rope(const Tensor& x, const RopeTables& tables);
// Both steps at once.
Tensor apply_rope(const Tensor& x, int64_t position_offset, double theta = 10000, const RopeScaling& scaling = {});

}  // namespace nn
}  // namespace ember
