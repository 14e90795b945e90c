// QA-LoRA's pooled adapter and its zero-point merge; the math is in qalora.h.
#include "peft/qalora.h"

#include <cmath>

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"
#include "peft/qlora.h"
#include "peft/targets.h"

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

// ---- the method: config, layer ----

namespace ember {
namespace peft {

using json = nlohmann::json;

QALoraConfig::QALoraConfig() {
    r = 64, lora_alpha = 16, lora_dropout = 0;  // qa-lora qalora.py
    target_modules = "all-linear";
}

std::string QALoraConfig::to_json() const {
    json j = json::parse(LoraConfig::to_json());
    j["use_qalora"] = true;
    j["qalora_group_size"] = qalora_group_size;
    return j.dump(2);
}

QALoraConfig QALoraConfig::from_json(const std::string& text) {
    json j = parse_config(text, "LORA");
    EMBER_CHECK(j.value("use_qalora", false), "adapter_config.json: use_qalora is not true; this is a plain "
                "LoRA adapter, read it with LoraConfig::from_json");
    json plain = j;
    plain["use_qalora"] = false;
    QALoraConfig c;
    static_cast<LoraConfig&>(c) = LoraConfig::from_json(plain.dump());
    c.qalora_group_size = j.value("qalora_group_size", int64_t(16));  // peft's default
    EMBER_CHECK(c.qalora_group_size > 0 && c.qalora_group_size % 2 == 0, "adapter_config.json: qalora_group_size ",
                c.qalora_group_size, " must be positive and even (it is also the INT4 group size)");
    EMBER_CHECK(!c.use_dora, "adapter_config.json: use_qalora with use_dora is not a combination Ember implements");
    return c;
}

std::shared_ptr<PeftConfig> qalora_from_json(const std::string& text) {
    return std::make_shared<QALoraConfig>(QALoraConfig::from_json(text));
}

std::shared_ptr<PeftConfig> qalora_preset(const PresetOptions& o) {
    auto c = std::make_shared<QALoraConfig>();
    c->r = o.rank;
    return c;
}

void QALoraConfig::prepare_model(nn::Module& model) const {
    if (!quantize_base) return;
    nn::QuantConfig q;
    q.format = QuantFormat::INT4;
    q.group_size = qalora_group_size;
    quantize_for_qlora(model, q, modules_to_save);  // every Linear but the head and the methods' own
}

std::shared_ptr<TunerLayer> QALoraConfig::make_layer(std::shared_ptr<nn::LinearBase> base) const {
    return std::make_shared<QALoraLayer>(std::move(base));
}

QALoraLayer::QALoraLayer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    lora_A = std::make_shared<ModuleDict>();
    lora_B = std::make_shared<ModuleDict>();
    register_module("lora_A", lora_A);
    register_module("lora_B", lora_B);
}

void QALoraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                              AdapterContext& ctx) {
    const auto* c = dynamic_cast<const QALoraConfig*>(&config);
    EMBER_CHECK(c, "QALoraLinear.add_adapter('", name, "'): needs a QALoraConfig, got ", config.peft_type());
    Settings s;
    const LoraConfig::LayerRank rank = c->rank_at(key, "QA-LoRA");
    s.r = rank.r, s.scaling = rank.scaling;
    s.group_size = c->qalora_group_size;
    s.dropout = c->lora_dropout;
    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    EMBER_CHECK(in % s.group_size == 0, "QA-LoRA on ", key, ": in_features ", in, " is not a multiple of "
                "qalora_group_size ", s.group_size, "; pick a group size that divides it");
    if (auto q = std::dynamic_pointer_cast<nn::QuantLinear>(base_layer))
        EMBER_CHECK(q->weight.format != QuantFormat::INT4 || q->weight.blocksize == s.group_size, "QA-LoRA on ",
                    key, ": the base is ", q->weight.describe(), " but qalora_group_size is ", s.group_size,
                    "; the pooling must use the quantization groups");
    rng = ctx.rng;
    NoGradGuard no_grad;
    auto A = std::make_shared<nn::Linear>(in / s.group_size, s.r, false, ctx.init_gen);  // (r, in / L)
    auto B = std::make_shared<nn::Linear>(s.r, out, false, ctx.init_gen);                // (out, r)
    for (auto& m : {A, B}) {
        m->to(base_layer->dtype());
        m->to(base_layer->device());
    }
    nn::kaiming_uniform_(A->weight, std::sqrt(5.0), ctx.init_gen);
    if (c->init_lora_weights != "false") nn::zeros_(B->weight);
    lora_A->set(name, A);
    lora_B->set(name, B);
    settings_[name] = s;
    add_name(name);
}

void QALoraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    settings_.erase(name);
}

const QALoraLayer::Settings& QALoraLayer::settings(const std::string& name) const {
    auto it = settings_.find(name);
    EMBER_CHECK(it != settings_.end(), "QALoraLinear: no adapter named '", name, "'");
    return it->second;
}

Tensor QALoraLayer::group_delta(const std::string& name) const {
    NoGradGuard no_grad;
    const Settings& s = settings(name);
    return qalora_group_delta(lora_A->get_as<nn::Linear>(name)->weight, lora_B->get_as<nn::Linear>(name)->weight,
                              s.scaling, s.group_size);  // (out, in / L)
}

Tensor QALoraLayer::forward_adapters(const Tensor& x) {
    Tensor result = base_layer->forward(x);  // (..., out)
    for (const std::string& name : active_here()) {
        const Settings& s = settings_.at(name);
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor pooled = group_mean(xd, s.group_size);  // (..., in / L)
        Tensor lora = nn::linear(nn::linear(pooled, lora_A->get_as<nn::Linear>(name)->weight, Tensor()),
                                 lora_B->get_as<nn::Linear>(name)->weight, Tensor());  // (..., out)
        result = result + lora * s.scaling;
    }
    return result;
}

// W[o][i] += delta[o][i / L]: the group-constant change, expanded over each group's L inputs.
void QALoraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    const int64_t L = settings(name).group_size, out = W.size(0), in = W.size(1);
    Tensor delta = group_delta(name);
    if (delta.dtype() != W.dtype()) delta = raw::to_dtype(delta, W.dtype());
    Tensor grouped = raw::add(W.reshape({out, in / L, L}), delta.reshape({out, in / L, 1}));  // (out, G, L)
    W = raw::contiguous(grouped).reshape({out, in});
}

std::shared_ptr<nn::LinearBase> QALoraLayer::merged_quantized_base(const std::vector<std::string>& names,
                                                                   const Tensor& W, const Tensor& b) {
    auto q = std::dynamic_pointer_cast<nn::QuantLinear>(base_layer);
    bool folds = q && q->weight.format == QuantFormat::INT4;
    for (const std::string& n : names) folds = folds && q->weight.blocksize == settings(n).group_size;
    if (!folds) return TunerLayer::merged_quantized_base(names, W, b);  // e.g. an NF4 base
    // The codes are shared with the original (they do not change); fold_into_zero_points makes
    // new zero points, so the original's stay as they were for unmerge.
    QuantizedWeight merged = q->weight;
    for (const std::string& n : names) {
        Tensor delta = group_delta(n);
        if (delta.dtype() != DType::F32) delta = raw::to_dtype(delta, DType::F32);
        fold_into_zero_points(merged, delta);
    }
    requantize_error_ = {};
    return std::make_shared<nn::QuantLinear>(std::move(merged), b, q->input_dtype);
}

}  // namespace peft
}  // namespace ember
