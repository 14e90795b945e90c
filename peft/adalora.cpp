// AdaLoRA: the SVD-form layer, the orthogonal regularizer, the rank allocator and the config
// file. See adalora.h for the math and the call order.
#include "peft/adalora.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "nn/init.h"
#include "peft/lora.h"
#include "peft/methods.h"
#include "peft/peft_model.h"
#include "peft/targets.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

// ---- config: peft's AdaLoraConfig is a LoraConfig, so its file is LoRA's keys plus its own ----

std::string AdaLoraConfig::to_json() const {
    LoraConfig l;
    static_cast<PeftConfig&>(l) = static_cast<const PeftConfig&>(*this);
    l.r = r;
    l.lora_alpha = lora_alpha;
    l.lora_dropout = lora_dropout;
    json j = json::parse(l.to_json());
    j["peft_type"] = "ADALORA";
    j["target_r"] = target_r;
    j["init_r"] = init_r;
    j["tinit"] = tinit;
    j["tfinal"] = tfinal;
    j["deltaT"] = deltaT;
    j["beta1"] = beta1;
    j["beta2"] = beta2;
    j["orth_reg_weight"] = orth_reg_weight;
    j["total_step"] = total_step;
    j["rank_pattern"] = rank_pattern.empty() ? json(nullptr) : json(rank_pattern);  // peft: None until set
    return j.dump(2);
}

AdaLoraConfig AdaLoraConfig::from_json(const std::string& text) {
    json j = json::parse(text);
    EMBER_CHECK(j.is_object() && j.value("peft_type", std::string()) == "ADALORA",
                "adapter_config.json: expected peft_type \"ADALORA\"");
    json lj = j;
    lj["peft_type"] = "LORA";
    lj.erase("rank_pattern");  // bool lists here, ints in LoRA
    LoraConfig l = LoraConfig::from_json(lj.dump());
    AdaLoraConfig c;
    static_cast<PeftConfig&>(c) = static_cast<const PeftConfig&>(l);
    c.r = l.r;
    c.lora_alpha = l.lora_alpha;
    c.lora_dropout = l.lora_dropout;
    c.init_r = j.value("init_r", int64_t(12));
    c.target_r = j.value("target_r", int64_t(8));
    c.tinit = j.value("tinit", int64_t(0));
    c.tfinal = j.value("tfinal", int64_t(0));
    c.deltaT = j.value("deltaT", int64_t(1));
    c.beta1 = j.value("beta1", 0.85);
    c.beta2 = j.value("beta2", 0.85);
    c.orth_reg_weight = j.value("orth_reg_weight", 0.5);
    c.total_step = j.contains("total_step") && j["total_step"].is_number() ? j["total_step"].get<int64_t>() : 0;
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
        c.rank_pattern = j["rank_pattern"].get<std::map<std::string, std::vector<bool>>>();
    return c;
}

void AdaLoraConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) target_modules = lora_default_targets(model_type);
    // peft's AdaLoraConfig.__post_init__.
    EMBER_CHECK(total_step > 0, "AdaLoraConfig: total_step must be set to the number of training steps (> 0), got ",
                total_step, "; the budget schedule needs it");
    EMBER_CHECK(tinit < total_step - tfinal, "AdaLoraConfig: tinit (", tinit, ") + tfinal (", tfinal,
                ") leave no budgeting phase in total_step ", total_step, "; decrease tinit / tfinal or raise total_step");
    EMBER_CHECK(init_r > 0 && target_r >= 0 && deltaT > 0, "AdaLoraConfig: needs init_r > 0, target_r >= 0 and deltaT > 0 "
                "(got ", init_r, ", ", target_r, ", ", deltaT, ")");
    EMBER_CHECK(beta1 > 0 && beta1 < 1 && beta2 > 0 && beta2 < 1, "AdaLoraConfig: beta1 and beta2 must lie in (0, 1), got ",
                beta1, " and ", beta2);
}

std::shared_ptr<Controller> AdaLoraConfig::make_controller(PeftModel& pm, const std::string& adapter,
                                                           uint64_t /*seed*/) const {
    return std::make_shared<RankAllocator>(pm, adapter);
}

std::shared_ptr<PeftConfig> adalora_from_json(const std::string& text) {
    return std::make_shared<AdaLoraConfig>(AdaLoraConfig::from_json(text));
}

// The examples' AdaLoRA: starts at rank 1.5 r and prunes to r on average; the budget falls
// between 10% and 70% of the run, re-allocated every 10 steps.
std::shared_ptr<PeftConfig> adalora_preset(const PresetOptions& o) {
    auto c = std::make_shared<AdaLoraConfig>();
    c->init_r = o.rank + o.rank / 2, c->target_r = o.rank, c->lora_alpha = 2.0 * double(o.rank);
    c->total_step = o.steps, c->tinit = o.steps / 10, c->tfinal = o.steps * 3 / 10, c->deltaT = 10;
    if (o.model_type == "vit") c->target_modules = ModuleSelector{"query", "value"};
    return c;
}

std::shared_ptr<TunerLayer> AdaLoraConfig::make_layer(std::shared_ptr<nn::LinearBase> base) const {
    return std::make_shared<AdaLoraLayer>(std::move(base));
}

// "<module>.lora_E[.<adapter>]" -> "<module>" (peft strips the last two parts when they hold
// the adapter name, else the last one).
static std::string pattern_module(const std::string& key) {
    size_t at = key.rfind(".lora_E");
    return at == std::string::npos ? key : key.substr(0, at);
}

static int64_t count_kept(const std::vector<bool>& keep) { return int64_t(std::count(keep.begin(), keep.end(), true)); }

// ---- the layer ----

AdaLoraLayer::AdaLoraLayer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    lora_A = std::make_shared<ParameterDict>();
    lora_E = std::make_shared<ParameterDict>();
    lora_B = std::make_shared<ParameterDict>();
    register_module("lora_A", lora_A);
    register_module("lora_E", lora_E);
    register_module("lora_B", lora_B);
}

void AdaLoraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                               AdapterContext& ctx) {
    const auto* c = dynamic_cast<const AdaLoraConfig*>(&config);
    EMBER_CHECK(c, "AdaLoraLayer.add_adapter('", name, "'): needs an AdaLoraConfig, got ", config.peft_type());
    Settings s;
    s.r = c->init_r;
    // An adapter read from a file with a rank_pattern holds only the kept singular values.
    for (const auto& [pkey, keep] : c->rank_pattern)
        if (pattern_module(pkey) == key) {
            s.r = count_kept(keep);
            masks_[name] = keep;
        }
    s.ranknum = double(c->init_r);  // CHOICE (adalora.h): init_r even for a loaded, smaller layer
    s.scaling = c->lora_alpha > 0 ? c->lora_alpha : double(c->init_r);
    s.dropout = c->lora_dropout;
    rng = ctx.rng;

    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    const DType dt = base_layer->dtype();
    const Device dev = base_layer->device();
    NoGradGuard no_grad;
    Tensor A = zeros({s.r, in}, dt, dev), E = zeros({s.r, 1}, dt, dev), B = zeros({out, s.r}, dt, dev);
    if (s.r > 0) {
        nn::normal_(A, 0, 0.02, ctx.init_gen);  // peft's reset_lora_parameters: A, B ~ N(0, 0.02^2), E = 0
        nn::normal_(B, 0, 0.02, ctx.init_gen);
    }
    lora_A->set(name, A);
    lora_E->set(name, E);
    lora_B->set(name, B);
    settings_[name] = s;
    add_name(name);
}

void AdaLoraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    // ParameterDicts are replaced by the base class: refresh the handles.
    lora_A = std::dynamic_pointer_cast<ParameterDict>(get_submodule("lora_A"));
    lora_E = std::dynamic_pointer_cast<ParameterDict>(get_submodule("lora_E"));
    lora_B = std::dynamic_pointer_cast<ParameterDict>(get_submodule("lora_B"));
    settings_.erase(name);
    masks_.erase(name);
}

void AdaLoraLayer::set_mask(const std::string& name, std::vector<bool> keep) {
    EMBER_CHECK(has_adapter(name), "AdaLoraLinear.set_mask: no adapter named '", name, "'");
    masks_[name] = std::move(keep);
}

const std::vector<bool>& AdaLoraLayer::mask(const std::string& name) const {
    static const std::vector<bool> none;
    auto it = masks_.find(name);
    return it == masks_.end() ? none : it->second;
}

void AdaLoraLayer::add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const {
    const std::string prefix = "base_model.model." + key + ".";
    const std::vector<bool>& keep = mask(adapter);
    const int64_t r = settings(adapter).r;
    std::vector<int64_t> idx;
    for (size_t i = 0; i < keep.size(); ++i)
        if (keep[i]) idx.push_back(int64_t(i));
    // Slice only a layer that still holds every singular value (a loaded one is already small).
    const bool slice = !keep.empty() && int64_t(keep.size()) == r && int64_t(idx.size()) != r;
    NoGradGuard no_grad;
    const std::pair<const char*, const ParameterDict*> parts[3] = {
        {"lora_A", lora_A.get()}, {"lora_E", lora_E.get()}, {"lora_B", lora_B.get()}};
    for (const auto& [part, dict] : parts) {
        Tensor t = dict->get(adapter).detach();
        if (slice) {
            const int dim = std::string(part) == "lora_B" ? 1 : 0;
            t = raw::index_select(t, dim, from_vector(idx, {int64_t(idx.size())}, t.device()));
        }
        sd[prefix + part] = t;
    }
}

void AdaLoraLayer::describe(const std::string& adapter, const std::string& key, PeftConfig& saved) const {
    if (mask(adapter).empty()) return;
    dynamic_cast<AdaLoraConfig&>(saved).rank_pattern[key + ".lora_E." + adapter] = mask(adapter);
}

const AdaLoraLayer::Settings& AdaLoraLayer::settings(const std::string& name) const {
    auto it = settings_.find(name);
    EMBER_CHECK(it != settings_.end(), "AdaLoraLinear: no adapter named '", name, "'");
    return it->second;
}

Tensor AdaLoraLayer::delta_weight(const std::string& name) const {
    NoGradGuard no_grad;
    const Settings& s = settings(name);
    if (s.r == 0) return zeros({base_layer->out_features, base_layer->in_features}, base_layer->dtype(),
                               base_layer->device());  // every singular value pruned
    Tensor AE = raw::mul(lora_A->get(name), lora_E->get(name));  // (r, in) * (r, 1)
    return raw::mul_scalar(raw::matmul(lora_B->get(name), AE), s.scaling / (s.ranknum + 1e-5));  // (out, in)
}

Tensor AdaLoraLayer::forward_adapters(const Tensor& x) {
    Tensor result = base_layer->forward(x);  // (..., out)
    for (const std::string& name : active_here()) {
        const Settings& s = settings_.at(name);
        if (s.r == 0) continue;  // every singular value pruned
        Tensor AE = lora_A->get(name) * lora_E->get(name);  // (r, in)
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor lora = nn::linear(nn::linear(xd, AE, Tensor()), lora_B->get(name), Tensor());  // (..., out)
        result = result + lora * (s.scaling / (s.ranknum + 1e-5));
    }
    return result;
}

void AdaLoraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    W = raw::add(W, delta_weight(name));
}

// ---- orthogonal regularizer ----

Tensor adalora_orth_regularization(const PeftModel& pm, const std::string& adapter) {
    const auto* cfg = dynamic_cast<const AdaLoraConfig*>(&pm.config(adapter));
    EMBER_CHECK(cfg, "adalora_orth_regularization: adapter '", adapter, "' is ", pm.config(adapter).peft_type(),
                ", not ADALORA");
    Tensor total;
    int64_t n = 0;
    DType dt = DType::F32;
    for (auto& [key, tl] : pm.tuner_layers()) {
        auto l = std::dynamic_pointer_cast<AdaLoraLayer>(tl);
        if (!l || !l->has_adapter(adapter) || l->settings(adapter).r == 0) continue;
        const Tensor& A = l->lora_A->get(adapter);  // (r, in)
        const Tensor& B = l->lora_B->get(adapter);  // (out, r)
        dt = A.dtype();
        for (const Tensor& cov : {matmul(A, A.t()), matmul(B.t(), B)}) {  // (r, r)
            Tensor I = eye(cov.shape()[0], cov.dtype());
            if (cov.device() != I.device()) I = I.to(cov.device());
            Tensor d = cov - I;
            Tensor norm = sqrt(sum(d * d));  // ||.||_F, not squared
            total = total.defined() ? total + norm : norm;
            ++n;
        }
    }
    if (n == 0 || cfg->orth_reg_weight == 0) return scalar_tensor(0.0, dt);
    return total * (cfg->orth_reg_weight / double(n));
}

// ---- the rank allocator ----

RankAllocator::RankAllocator(PeftModel& pm, const std::string& adapter) : pm_(pm), adapter_(adapter) {
    cfg_ = dynamic_cast<const AdaLoraConfig*>(&pm.config(adapter));
    EMBER_CHECK(cfg_, "RankAllocator: adapter '", adapter, "' is ", pm.config(adapter).peft_type(), ", not ADALORA");
    for (auto& [key, tl] : pm.tuner_layers()) {
        auto l = std::dynamic_pointer_cast<AdaLoraLayer>(tl);
        if (!l || !l->has_adapter(adapter)) continue;
        Entry e;
        e.module = key;
        e.layer = l;
        entries_.push_back(e);
        init_bgt_ += l->settings(adapter).r;
    }
    EMBER_CHECK(!entries_.empty(), "RankAllocator: no AdaLoRA layer holds adapter '", adapter, "'");
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.module < b.module; });
    target_bgt_ = cfg_->target_r * int64_t(entries_.size());
}

std::pair<int64_t, bool> RankAllocator::budget(int64_t step) const {
    const int64_t tinit = cfg_->tinit, tfinal = cfg_->tfinal, T = cfg_->total_step;
    if (step <= tinit) return {init_bgt_, false};           // warm-up: everything kept
    if (step > T - tfinal) return {target_bgt_, true};      // final fine-tuning at the target
    double mul = 1.0 - double(step - tinit) / double(T - tfinal - tinit);
    int64_t b = int64_t(double(init_bgt_ - target_bgt_) * mul * mul * mul + double(target_bgt_));  // int() truncates
    return {b, step % cfg_->deltaT == 0};
}

void RankAllocator::reset_ipt() {
    for (Entry& e : entries_)
        for (int k = 0; k < 3; ++k) e.avg_ipt[k] = e.avg_unc[k] = Tensor();
}

void RankAllocator::update_ipt() {
    NoGradGuard no_grad;
    const double b1 = cfg_->beta1, b2 = cfg_->beta2;
    for (Entry& e : entries_) {
        const Tensor ps[3] = {e.layer->lora_A->get(adapter_), e.layer->lora_E->get(adapter_),
                              e.layer->lora_B->get(adapter_)};
        for (int k = 0; k < 3; ++k) {
            if (!e.avg_ipt[k].defined()) {
                e.avg_ipt[k] = zeros_like(ps[k]);
                e.avg_unc[k] = zeros_like(ps[k]);
            }
            Tensor g = ps[k].grad();
            // No gradient this step (e.g. a frozen adapter): sensitivity 0, as peft's p * 0.
            Tensor ipt = g.defined() ? raw::unary(UnaryOp::Abs, raw::mul(ps[k], g)) : zeros_like(ps[k]);
            e.avg_ipt[k] = raw::add(raw::mul_scalar(e.avg_ipt[k], b1), raw::mul_scalar(ipt, 1 - b1));
            Tensor dev = raw::unary(UnaryOp::Abs, raw::sub(ipt, e.avg_ipt[k]));
            e.avg_unc[k] = raw::add(raw::mul_scalar(e.avg_unc[k], b2), raw::mul_scalar(dev, 1 - b2));
        }
    }
}

std::map<std::string, std::vector<double>> RankAllocator::triplet_scores() const {
    NoGradGuard no_grad;
    std::map<std::string, std::vector<double>> out;
    for (const Entry& e : entries_) {
        const int64_t r = e.layer->settings(adapter_).r;
        if (!e.avg_ipt[0].defined()) {
            out[e.module] = std::vector<double>(size_t(r), 0.0);
            continue;
        }
        Tensor sA = raw::mul(e.avg_ipt[0], e.avg_unc[0]);  // (r, in)
        Tensor sE = raw::mul(e.avg_ipt[1], e.avg_unc[1]);  // (r, 1)
        Tensor sB = raw::mul(e.avg_ipt[2], e.avg_unc[2]);  // (out, r)
        Tensor S = raw::add(raw::add(raw::reshape(sE, {r}), raw::mean(sA, {1})), raw::mean(sB, {0}));  // (r)
        out[e.module] = S.to_vector<double>();
    }
    return out;
}

// Zeroes E where the triplet score is <= the (init - budget)-th smallest of all scores.
std::map<std::string, std::vector<bool>> RankAllocator::mask_to_budget(int64_t budget) {
    auto scores = triplet_scores();
    std::vector<double> all;
    for (auto& [m, s] : scores) all.insert(all.end(), s.begin(), s.end());
    const int64_t k = init_bgt_ - budget;
    // CHOICE: k <= 0 (nothing to prune; torch.kthvalue would raise "k out of range", peft#2337)
    // masks nothing.
    double thr = -1;
    if (k > 0) {
        std::vector<double> sorted = all;
        std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end());
        thr = sorted[size_t(k - 1)];
    }
    std::map<std::string, std::vector<bool>> pattern;
    NoGradGuard no_grad;
    for (const Entry& e : entries_) {
        const std::vector<double>& s = scores.at(e.module);
        std::vector<bool> keep(s.size());
        std::vector<double> m(s.size());
        for (size_t i = 0; i < s.size(); ++i) {
            keep[i] = k <= 0 || !(s[i] <= thr);
            m[i] = keep[i] ? 1.0 : 0.0;
        }
        Tensor E = e.layer->lora_E->get(adapter_);
        Tensor mask = from_vector(m, {int64_t(m.size()), 1}, E.device());
        raw::copy_(E, raw::mul(E, raw::to_dtype(mask, E.dtype())));
        e.layer->set_mask(adapter_, keep);  // peft keeps the latest mask in the config's rank_pattern
        pattern[pattern_name(e.module)] = keep;
    }
    return pattern;
}

void RankAllocator::mask_using_pattern() {
    NoGradGuard no_grad;
    for (const Entry& e : entries_) {
        const std::vector<bool>& keep = rank_pattern_.at(pattern_name(e.module));
        std::vector<double> m(keep.begin(), keep.end());
        Tensor E = e.layer->lora_E->get(adapter_);
        Tensor mask = from_vector(m, {int64_t(m.size()), 1}, E.device());
        raw::copy_(E, raw::mul(E, raw::to_dtype(mask, E.dtype())));
    }
}

void RankAllocator::update_and_allocate(int64_t step) {
    const int64_t final_step = cfg_->total_step - cfg_->tfinal;
    if (step < final_step) {
        update_ipt();
        auto [b, mask] = budget(step);
        if (mask) mask_to_budget(b);
    } else if (step == final_step) {
        update_ipt();
        rank_pattern_ = mask_to_budget(budget(step).first);  // = the target budget
        reset_ipt();
    } else {
        EMBER_CHECK(!rank_pattern_.empty(), "RankAllocator.update_and_allocate: step ", step,
                    " is past the final mask step ", final_step, ", which this allocator never saw; "
                    "call it at every step");
        mask_using_pattern();
    }
}

// From the latest mask: before any mask, every rank.
std::map<std::string, int64_t> RankAllocator::rank_allocation() const {
    std::map<std::string, int64_t> out;
    for (const Entry& e : entries_) {
        const std::vector<bool>& keep = e.layer->mask(adapter_);
        out[e.module] = keep.empty() ? e.layer->settings(adapter_).r : count_kept(keep);
    }
    return out;
}

Tensor RankAllocator::loss_term() { return adalora_orth_regularization(pm_, adapter_); }

// Per module: "<module>.ipt.<k>" / "<module>.unc.<k>" (k = 0, 1, 2 for A, E, B) once scored,
// "<module>.mask" (the latest mask) and "<module>.final" (the final pattern) as 0/1 values.
static Tensor flags_tensor(const std::vector<bool>& keep) {
    std::vector<double> v(keep.begin(), keep.end());
    return from_vector(v, {int64_t(v.size())});
}

static std::vector<bool> tensor_flags(const Tensor& t) {
    std::vector<bool> out;
    for (double v : t.to_vector<double>()) out.push_back(v != 0);
    return out;
}

nn::StateDict RankAllocator::state_dict() const {
    nn::StateDict sd;
    for (const Entry& e : entries_) {
        for (int k = 0; k < 3; ++k)
            if (e.avg_ipt[k].defined()) {
                sd[e.module + ".ipt." + std::to_string(k)] = e.avg_ipt[k];
                sd[e.module + ".unc." + std::to_string(k)] = e.avg_unc[k];
            }
        if (!e.layer->mask(adapter_).empty()) sd[e.module + ".mask"] = flags_tensor(e.layer->mask(adapter_));
        auto it = rank_pattern_.find(pattern_name(e.module));
        if (it != rank_pattern_.end()) sd[e.module + ".final"] = flags_tensor(it->second);
    }
    return sd;
}

void RankAllocator::load_state_dict(const nn::StateDict& sd) {
    rank_pattern_.clear();
    for (Entry& e : entries_) {
        const Tensor ps[3] = {e.layer->lora_A->get(adapter_), e.layer->lora_E->get(adapter_),
                              e.layer->lora_B->get(adapter_)};
        for (int k = 0; k < 3; ++k) {
            auto ipt = sd.find(e.module + ".ipt." + std::to_string(k));
            auto unc = sd.find(e.module + ".unc." + std::to_string(k));
            e.avg_ipt[k] = ipt == sd.end() ? Tensor() : raw::to_device(raw::to_dtype(ipt->second, ps[k].dtype()), ps[k].device());
            e.avg_unc[k] = unc == sd.end() ? Tensor() : raw::to_device(raw::to_dtype(unc->second, ps[k].dtype()), ps[k].device());
        }
        auto mask = sd.find(e.module + ".mask");
        e.layer->set_mask(adapter_, mask == sd.end() ? std::vector<bool>() : tensor_flags(mask->second));
        auto fin = sd.find(e.module + ".final");
        if (fin != sd.end()) rank_pattern_[pattern_name(e.module)] = tensor_flags(fin->second);
    }
}

void RankAllocator::report(std::ostream& out, const std::function<double()>& /*evaluate*/) {
    out << "AdaLoRA kept " << total_rank() << " of " << initial_budget() << " singular values (target "
        << target_budget() << "):";
    for (const auto& [module, rank] : rank_allocation()) out << " " << module << "=" << rank;
    out << "\n";
}

int64_t RankAllocator::total_rank() const {
    int64_t t = 0;
    for (auto& [m, k] : rank_allocation()) t += k;
    return t;
}

}  // namespace peft
}  // namespace ember
