// QA-LoRA's pooled adapter and its zero-point merge; the math is in qalora.h.
#include "peft/qalora.h"

namespace ember {
namespace peft {

Tensor group_mean(const Tensor& x, int64_t L) {
    EMBER_CHECK(x.defined() && x.dim() >= 1 && L > 0 && x.size(-1) % L == 0, "QA-LoRA group_mean: "
                "the last dim of ", x.defined() ? make_message(x.shape()) : std::string("(undefined)"),
                " must be a multiple of the group size ", L);
    Shape grouped = x.shape();
    grouped[grouped.rank - 1] = x.size(-1) / L;
    grouped.push_back(L);
    return mean(x.reshape(grouped), {-1});
}

Tensor qalora_group_delta(const Tensor& A, const Tensor& B, double scaling, int64_t L) {
    return raw::mul_scalar(raw::matmul(B, A), scaling / double(L));
}

Tensor qalora_forward(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& A,
                      const Tensor& B, double scaling) {
    EMBER_CHECK(w.format == QuantFormat::INT4, "QA-LoRA: the base must be INT4 (group-wise), got ",
                w.describe());
    EMBER_CHECK(A.dim() == 2 && A.size(1) == w.groups_per_row() && B.dim() == 2 &&
                    B.size(0) == w.rows && B.size(1) == A.size(0),
                "QA-LoRA: A ", A.shape(), " and B ", B.shape(), " do not fit ", w.describe(),
                "; A must be (r, ", w.groups_per_row(), ") and B (", w.rows, ", r)");
    Tensor pooled = group_mean(x, w.blocksize);  // (..., in / L)
    Tensor adapter = matmul(matmul(pooled, A.t()), B.t());
    return nn::quant_linear(x, w, bias) + adapter * scaling;
}

void merge_qalora(QuantizedWeight& w, const Tensor& A, const Tensor& B, double scaling) {
    NoGradGuard no_grad;
    fold_into_zero_points(w, qalora_group_delta(A.detach(), B.detach(), scaling, w.blocksize));
}

}  // namespace peft
}  // namespace ember
