// DyLoRA on a Linear: the truncated forward, the merge at a rank, the rank sampler and the
// config file. See dylora.h for the math.
#include "peft/dylora.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "nn/atomic_file.h"
#include "nn/init.h"
#include "nn/safetensors.h"
#include "peft/lora.h"
#include "peft/methods.h"
#include "peft/peft_model.h"
#include "peft/targets.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

// ---- config: LoRA's keys with peft_type "DYLORA" and "frozen" ----

static LoraConfig as_lora(const DyLoraConfig& c) {
    LoraConfig l;
    static_cast<PeftConfig&>(l) = static_cast<const PeftConfig&>(c);  // the shared keys
    l.r = c.r;
    l.lora_alpha = c.lora_alpha;
    l.lora_dropout = c.lora_dropout;
    l.bias = c.bias;
    return l;
}

std::string DyLoraConfig::to_json() const {
    json j = json::parse(as_lora(*this).to_json());
    j["peft_type"] = "DYLORA";
    j["frozen"] = frozen;
    return j.dump(2);
}

DyLoraConfig DyLoraConfig::from_json(const std::string& text) {
    json j = json::parse(text);
    EMBER_CHECK(j.is_object() && j.value("peft_type", std::string()) == "DYLORA",
                "adapter_config.json: expected peft_type \"DYLORA\"");
    j["peft_type"] = "LORA";
    LoraConfig l = LoraConfig::from_json(j.dump());
    DyLoraConfig c;
    static_cast<PeftConfig&>(c) = static_cast<const PeftConfig&>(l);
    c.r = l.r;
    c.lora_alpha = l.lora_alpha;
    c.lora_dropout = l.lora_dropout;
    c.bias = l.bias;
    c.frozen = j.value("frozen", true);
    return c;
}

void DyLoraConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) target_modules = lora_default_targets(model_type);
}

std::shared_ptr<Controller> DyLoraConfig::make_controller(PeftModel& pm, const std::string& adapter,
                                                          uint64_t seed) const {
    return std::make_shared<DyLoraRankSampler>(pm, seed, adapter);
}

std::shared_ptr<PeftConfig> dylora_from_json(const std::string& text) {
    return std::make_shared<DyLoraConfig>(DyLoraConfig::from_json(text));
}

// The examples' DyLoRA: r = --rank, alpha = 2 r; ViT: query and value.
std::shared_ptr<PeftConfig> dylora_preset(const PresetOptions& o) {
    auto c = std::make_shared<DyLoraConfig>();
    c->r = o.rank, c->lora_alpha = 2.0 * double(o.rank);
    if (o.model_type == "vit") c->target_modules = ModuleSelector{"query", "value"};
    return c;
}

std::shared_ptr<TunerLayer> DyLoraConfig::make_layer(std::shared_ptr<nn::LinearBase> base) const {
    return std::make_shared<DyLoraLayer>(std::move(base));
}

// ---- the layer ----

DyLoraLayer::DyLoraLayer(std::shared_ptr<nn::LinearBase> base) : TunerLayer(std::move(base)) {
    lora_A = std::make_shared<ModuleDict>();
    lora_B = std::make_shared<ModuleDict>();
    register_module("lora_A", lora_A);
    register_module("lora_B", lora_B);
}

void DyLoraLayer::add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                              AdapterContext& ctx) {
    const auto* c = dynamic_cast<const DyLoraConfig*>(&config);
    EMBER_CHECK(c, "DyLoraLayer.add_adapter('", name, "'): needs a DyLoraConfig, got ", config.peft_type());
    EMBER_CHECK(c->r > 0, "DyLoRA on ", key, ": r (the largest rank) must be positive, got ", c->r);
    EMBER_CHECK(c->bias == "none", "DyLoRA on ", key, ": bias '", c->bias, "' is not supported; use \"none\"");
    Settings s;
    s.r = s.rank = c->r;
    s.alpha = c->lora_alpha;
    s.dropout = c->lora_dropout;
    s.frozen = c->frozen;
    rng = ctx.rng;

    const int64_t in = base_layer->in_features, out = base_layer->out_features;
    NoGradGuard no_grad;
    auto A = std::make_shared<nn::Linear>(in, s.r, false, ctx.init_gen);
    auto B = std::make_shared<nn::Linear>(s.r, out, false, ctx.init_gen);
    for (auto* m : {A.get(), B.get()}) {
        m->to(base_layer->dtype());
        m->to(base_layer->device());
    }
    nn::kaiming_uniform_(A->weight, std::sqrt(5.0), ctx.init_gen);  // as LoRA (the reference's reset_parameters)
    nn::zeros_(B->weight);
    lora_A->set(name, A);
    lora_B->set(name, B);
    settings_[name] = s;
    add_name(name);
}

void DyLoraLayer::delete_adapter(const std::string& name) {
    TunerLayer::delete_adapter(name);
    settings_.erase(name);
}

const DyLoraLayer::Settings& DyLoraLayer::settings(const std::string& name) const {
    auto it = settings_.find(name);
    EMBER_CHECK(it != settings_.end(), "DyLoraLinear: no adapter named '", name, "'");
    return it->second;
}

void DyLoraLayer::set_rank(const std::string& name, int64_t b) {
    auto it = settings_.find(name);
    EMBER_CHECK(it != settings_.end(), "DyLoraLinear.set_rank: no adapter named '", name, "'");
    EMBER_CHECK(b >= 1 && b <= it->second.r, "DyLoraLinear.set_rank: rank ", b, " is outside [1, ",
                it->second.r, "] (the adapter was made with r = ", it->second.r, ")");
    EMBER_CHECK(!merged(), "DyLoraLinear.set_rank: the adapter is merged at rank ", it->second.rank,
                "; unmerge before changing the rank");
    it->second.rank = b;
}

int64_t DyLoraLayer::rank(const std::string& name) const { return settings(name).rank; }
int64_t DyLoraLayer::max_rank(const std::string& name) const { return settings(name).r; }

Tensor DyLoraLayer::delta_weight(const std::string& name) const {
    NoGradGuard no_grad;
    const Settings& s = settings(name);
    Tensor A = raw::slice(lora_A->get_as<nn::Linear>(name)->weight, 0, 0, s.rank);  // (b, in)
    Tensor B = raw::slice(lora_B->get_as<nn::Linear>(name)->weight, 1, 0, s.rank);  // (out, b)
    return raw::mul_scalar(raw::matmul(B, A), s.alpha / double(s.rank));             // (out, in)
}

// The first b components of a factor (along `dim`); with `frozen`, the first b - 1 detached so
// that only component b gets a gradient (the reference's dynamic.forward with frozen=True).
static Tensor truncate(const Tensor& w, int dim, int64_t b, bool frozen) {
    if (!frozen || b == 1) return w.slice(dim, 0, b);
    return cat({w.slice(dim, 0, b - 1).detach(), w.slice(dim, b - 1, b)}, dim);
}

Tensor DyLoraLayer::forward_adapters(const Tensor& x) {
    Tensor result = base_layer->forward(x);  // (..., out)
    for (const std::string& name : active_here()) {
        const Settings& s = settings_.at(name);
        // frozen only changes gradients, so it matters only while training.
        const bool frozen = s.frozen && is_training();
        Tensor A = truncate(lora_A->get_as<nn::Linear>(name)->weight, 0, s.rank, frozen);  // (b, in)
        Tensor B = truncate(lora_B->get_as<nn::Linear>(name)->weight, 1, s.rank, frozen);  // (out, b)
        Tensor xd = s.dropout > 0 ? dropout(x, s.dropout, *rng, is_training()) : x;
        Tensor lora = nn::linear(nn::linear(xd, A, Tensor()), B, Tensor());  // (..., out)
        result = result + lora * (s.alpha / double(s.rank));
    }
    return result;
}

void DyLoraLayer::merge_into(const std::string& name, Tensor& W, Tensor& /*b*/) const {
    W = raw::add(W, delta_weight(name));  // W + (alpha / b) B[:, :b] A[:b]
}

// ---- the whole model ----

static std::vector<std::shared_ptr<DyLoraLayer>> dylora_layers(PeftModel& pm, const std::string& adapter) {
    std::vector<std::shared_ptr<DyLoraLayer>> out;
    for (auto& [key, tl] : pm.tuner_layers())
        if (auto d = std::dynamic_pointer_cast<DyLoraLayer>(tl))
            if (d->has_adapter(adapter)) out.push_back(d);
    EMBER_CHECK(!out.empty(), "DyLoRA: the model has no DyLoRA layer with an adapter named '", adapter, "'");
    return out;
}

void set_dylora_rank(PeftModel& pm, int64_t b, const std::string& adapter) {
    auto layers = dylora_layers(pm, adapter);
    for (auto& l : layers) {  // check all first, so a refused rank changes nothing
        EMBER_CHECK(b >= 1 && b <= l->max_rank(adapter), "set_dylora_rank: rank ", b, " is outside [1, ",
                    l->max_rank(adapter), "] for adapter '", adapter, "'");
        EMBER_CHECK(!l->merged(), "set_dylora_rank: adapter '", adapter,
                    "' is merged; unmerge_adapter() before changing the rank");
    }
    for (auto& l : layers) l->set_rank(adapter, b);
}

void save_dylora_as_lora(const PeftModel& pm, const std::string& dir, int64_t b, const std::string& adapter) {
    const auto* c = dynamic_cast<const DyLoraConfig*>(&pm.config(adapter));
    EMBER_CHECK(c, "save_dylora_as_lora: adapter '", adapter, "' is ", pm.config(adapter).peft_type(), ", not DYLORA");
    EMBER_CHECK(b >= 1 && b <= c->r, "save_dylora_as_lora: rank ", b, " is outside [1, ", c->r, "]");
    LoraConfig l = as_lora(*c);
    l.r = b;  // peft's scale lora_alpha / r = alpha / b
    nn::StateDict sd;
    for (auto& [key, tl] : pm.tuner_layers()) {
        auto d = std::dynamic_pointer_cast<DyLoraLayer>(tl);
        if (!d || !d->has_adapter(adapter)) continue;
        NoGradGuard no_grad;
        const std::string k = "base_model.model." + key + ".";
        sd[k + "lora_A.weight"] = raw::contiguous(raw::slice(d->lora_A->get_as<nn::Linear>(adapter)->weight, 0, 0, b));
        sd[k + "lora_B.weight"] = raw::contiguous(raw::slice(d->lora_B->get_as<nn::Linear>(adapter)->weight, 1, 0, b));
    }
    nn::make_folders(dir, "save_dylora_as_lora");
    const std::filesystem::path p(dir);
    nn::save_safetensors((p / "adapter_model.safetensors").string(), sd, {{"format", "pt"}});
    nn::write_file_atomically((p / "adapter_config.json").string(), l.to_json() + "\n");
}

DyLoraRankSampler::DyLoraRankSampler(PeftModel& pm, uint64_t seed, const std::string& adapter)
    : pm_(pm), adapter_(adapter), gen_(std::make_shared<Generator>(seed)) {
    for (auto& l : dylora_layers(pm, adapter)) r_ = std::max(r_, l->max_rank(adapter));
}

void DyLoraRankSampler::report(std::ostream& out, const std::function<double()>& evaluate) {
    for (int64_t b = 1; b < r_; b *= 2) {
        set_dylora_rank(pm_, b, adapter_);
        out << "DyLoRA evaluated at rank " << b << ": " << evaluate() << "\n";
    }
    set_dylora_rank(pm_, r_, adapter_);
}

int64_t DyLoraRankSampler::sample() {
    // torch.randint(0, r) in the reference, used as index b - 1: b uniform on {1, ..., r}.
    int64_t b = randint(0, r_, {1}, *gen_).item<int64_t>() + 1;
    set_dylora_rank(pm_, b, adapter_);
    return b;
}

}  // namespace peft
}  // namespace ember
