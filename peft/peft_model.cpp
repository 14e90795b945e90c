// PeftModel: injection, the adapter switches, merging, counting, and adapter files.
#include "peft/peft_model.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "nn/atomic_file.h"
#include "nn/safetensors.h"

namespace ember {
namespace peft {

namespace fs = std::filesystem;

static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

static std::string last_segment(const std::string& name) {
    size_t dot = name.rfind('.');
    return dot == std::string::npos ? name : name.substr(dot + 1);
}

// The model type peft would read from config.model_type, guessed from the module names.
static std::string infer_model_type(nn::Module& model) {
    for (auto& [name, m] : model.named_modules()) {
        if (ends_with(name, "attn.c_attn") || ends_with(name, "mlp.c_fc")) return "gpt2";
        if (ends_with(name, "self_attn.q_proj")) return "llama";
        if (ends_with(name, "attention.attention.query")) return "vit";
    }
    return "";
}

PeftModel::PeftModel(std::shared_ptr<nn::Module> model, const PeftConfig& config,
                     const std::string& adapter_name, uint64_t seed, const std::string& model_type)
    : model_(std::move(model)), model_type_(model_type), init_gen_(seed),
      rng_(std::make_shared<Generator>(seed + 0x9E3779B97F4A7C15ull)) {
    EMBER_CHECK(model_, "PeftModel: the model is null");
    if (model_type_.empty()) model_type_ = infer_model_type(*model_);
    model_->requires_grad_(false);  // peft's _mark_only_adapters_as_trainable: the base is frozen
    inject(adapter_name, config);
    set_adapters({adapter_name});
}

void PeftModel::check_usable() const {
    EMBER_CHECK(!spent_, "PeftModel: the adapters were already unloaded (merge_and_unload / unload); "
                "make a new PeftModel over the returned model");
}

std::vector<std::pair<std::string, std::shared_ptr<TunerLayer>>> PeftModel::tuner_layers() const {
    std::vector<std::pair<std::string, std::shared_ptr<TunerLayer>>> out;
    for (auto& [name, m] : model_->named_modules())
        if (auto tl = std::dynamic_pointer_cast<TunerLayer>(m)) out.emplace_back(name, tl);
    return out;
}

void PeftModel::inject(const std::string& name, const PeftConfig& config_in) {
    check_usable();
    EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, "PeftModel: adapter name '", name,
                "' must be non-empty and contain no '.'");
    EMBER_CHECK(!configs_.count(name), "PeftModel: an adapter named '", name, "' already exists; "
                "delete_adapter it first or pick another name");
    std::shared_ptr<PeftConfig> cfg = config_in.clone();
    const std::string type = cfg->peft_type();
    cfg->fill_defaults(model_type_);
    // GPT-2's projections are Conv1D (in, out) in its files. In memory they are Linear (out, in),
    // so no arithmetic here depends on fan_in_fan_out; it is recorded as peft records it.
    if (model_type_ == "gpt2") cfg->fan_in_fan_out = true;

    cfg->prepare_model(*model_);  // QLoRA quantizes the base here
    const std::string layer_type = cfg->layer_type();
    if (!layer_type.empty()) {  // a weight tuner
        EMBER_CHECK(cfg->target_modules.is_set, "PeftModel: no default target_modules for ", type,
                    " on model type '", model_type_, "' (peft has none either); pass them, e.g. "
                    "target_modules = {\"query\", \"value\"} for ViT");
        // Find the targets: Linear-like modules (nn::LinearBase: a Linear or a quantized one), or
        // layers of this method already wrapping one.
        std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> targets;
        std::vector<std::string> tuner_paths, linear_names;
        for (auto& [key, m] : model_->named_modules()) {
            bool inside = false;
            for (const std::string& p : tuner_paths) inside = inside || key.rfind(p + ".", 0) == 0;
            if (inside || key.empty()) continue;
            auto tl = std::dynamic_pointer_cast<TunerLayer>(m);
            if (tl) tuner_paths.push_back(key);
            if (!tl && !std::dynamic_pointer_cast<nn::LinearBase>(m)) continue;
            linear_names.push_back(key);
            std::string leaf = last_segment(key);
            bool head = leaf == "lm_head" || leaf == "classifier" || leaf == "score";
            if (is_target(*cfg, key, true, head)) targets.emplace_back(key, m);
        }
        if (targets.empty()) {
            std::string some;
            for (size_t i = 0; i < linear_names.size() && i < 6; ++i) some += (i ? ", " : "") + linear_names[i];
            throw Error(make_message("PeftModel: no module matched target_modules ", cfg->target_modules.describe(),
                                     (cfg->layers_to_transform.empty() ? "" : " in layers_to_transform"),
                                     "; Linear modules of this model include: ", some,
                                     linear_names.size() > 6 ? ", ..." : "",
                                     " (a list entry matches a full name or its last parts, a string is a regex)"));
        }
        // Check every target before changing anything, so a refused config leaves the model as it was.
        AdapterContext ctx{init_gen_, rng_, {}, {}};
        for (auto& [key, m] : targets) {
            auto tl = std::dynamic_pointer_cast<TunerLayer>(m);
            EMBER_CHECK(!tl || tl->type_name() == layer_type, "PeftModel: ", key, " already holds a ", tl->type_name(),
                        " adapter; a ", type, " adapter cannot be stacked on it (target other modules)");
            ctx.targets.push_back(tl ? tl->base_layer : std::dynamic_pointer_cast<nn::LinearBase>(m));
        }
        for (auto& [key, m] : targets) {
            auto tl = std::dynamic_pointer_cast<TunerLayer>(m);
            if (!tl) {
                tl = cfg->make_layer(std::dynamic_pointer_cast<nn::LinearBase>(m));
                model_->replace_submodule(key, tl);
            }
            tl->set_disabled(disabled_);
            tl->add_adapter(name, *cfg, key, ctx);
        }
    }
    attach_sites(name, *cfg);
    attach_prompt(name, *cfg);
    configs_[name] = cfg;
    order_.push_back(name);
    setup_modules_to_save(name, *cfg);
    if (auto c = cfg->make_controller(*this, name, init_gen_.seed() + order_.size())) controllers_[name] = c;
}

// Per-forward inputs: the method's module in the model's prompt_encoder slot.
void PeftModel::attach_prompt(const std::string& name, PeftConfig& cfg) {
    auto* takes = dynamic_cast<nn::TakesForwardInputs*>(model_.get());
    if (!takes) {
        nn::ForwardShape none;
        EMBER_CHECK(!cfg.make_forward_inputs(none, init_gen_), "PeftModel: ", cfg.peft_type(), " supplies inputs to "
                    "every forward pass, and this model (", model_->type_name(), ") takes none; use a models::GPT "
                    "or models::ViT");
        return;
    }
    nn::ForwardShape shape = takes->forward_shape();
    cfg.fill_from_model(shape);
    std::shared_ptr<PromptModule> m = cfg.make_forward_inputs(shape, init_gen_);
    if (!m) return;
    auto sample = model_->named_parameters();
    if (!sample.empty()) {  // the model's dtype and device
        m->to(sample.front().second.dtype());
        m->to(sample.front().second.device());
    }
    auto pa = prompt_adapters();
    if (!pa) {
        pa = std::make_shared<PromptAdapters>();
        pa->set_disabled(disabled_);
        model_->replace_submodule("prompt_encoder", pa);
    }
    pa->set(name, m);
}

std::shared_ptr<PromptAdapters> PeftModel::prompt_adapters() const {
    for (auto& [name, m] : model_->named_children())
        if (name == "prompt_encoder") return std::dynamic_pointer_cast<PromptAdapters>(m);
    return nullptr;
}

// Site modules: every block (a module with the five site slots) gets the config's module at each
// site it asks for, inside that site's SiteAdapters.
void PeftModel::attach_sites(const std::string& name, const PeftConfig& cfg) {
    std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> blocks;
    for (auto& [key, m] : model_->named_modules())
        if (dynamic_cast<nn::HasAdapterSites*>(m.get())) blocks.emplace_back(key, m);
    std::map<std::string, std::shared_ptr<SiteAdapters>> existing;
    for (auto& [key, sa] : site_adapters()) existing[key] = sa;
    for (auto& [block, module] : blocks) {
        const int64_t dim = dynamic_cast<nn::HasAdapterSites*>(module.get())->site_dim();
        auto sample = module->named_parameters();
        for (const std::string& site : nn::site_names()) {
            std::shared_ptr<nn::SiteModule> m = cfg.make_site_module(site, dim, init_gen_);
            if (!m) continue;
            if (!sample.empty()) {  // the block's dtype and device
                m->to(sample.front().second.dtype());
                m->to(sample.front().second.device());
            }
            const std::string key = block.empty() ? site : block + "." + site;
            auto& sa = existing[key];
            if (!sa) {
                sa = std::make_shared<SiteAdapters>(site);
                sa->set_disabled(disabled_);
                model_->replace_submodule(key, sa);
            }
            sa->set(name, m);
        }
    }
}

void PeftModel::add_adapter(const std::string& name, const PeftConfig& config) {
    inject(name, config);
    set_adapters(active_);  // the new adapter stays inactive (and frozen) until set_adapter
}

void PeftModel::set_adapters(const std::vector<std::string>& names) {
    check_usable();
    for (const std::string& n : names)
        EMBER_CHECK(configs_.count(n), "PeftModel.set_adapter: no adapter named '", n, "'");
    active_ = names;
    for (auto& [key, tl] : tuner_layers()) tl->set_active(names);
    for (auto& [key, sa] : site_adapters()) sa->set_active(names);
    if (auto pa = prompt_adapters()) pa->set_active(names);
    apply_modules_to_save();
    update_trainable();
}

std::vector<std::string> PeftModel::adapter_names() const { return order_; }

const PeftConfig& PeftModel::config(const std::string& name) const {
    auto it = configs_.find(name);
    EMBER_CHECK(it != configs_.end(), "PeftModel: no adapter named '", name, "'");
    return *it->second;
}

std::shared_ptr<PeftConfig> PeftModel::saved_config(const std::string& name) const {
    std::shared_ptr<PeftConfig> c = config(name).clone();
    for (auto& [key, tl] : tuner_layers())
        if (tl->has_adapter(name)) tl->describe(name, key, *c);
    return c;
}

std::vector<std::pair<std::string, std::shared_ptr<SiteAdapters>>> PeftModel::site_adapters() const {
    std::vector<std::pair<std::string, std::shared_ptr<SiteAdapters>>> out;
    for (auto& [name, m] : model_->named_modules())
        if (auto sa = std::dynamic_pointer_cast<SiteAdapters>(m)) out.emplace_back(name, sa);
    return out;
}

// Parameters of the base model: every parameter except adapter tensors and modules_to_save
// slots, with the module that owns it.
struct BaseParam {
    std::string name;
    Tensor tensor;
    std::shared_ptr<nn::Module> owner;
};

static std::vector<BaseParam> base_parameters(nn::Module& model, const std::set<std::string>& skip_names) {
    std::vector<BaseParam> out;
    std::map<std::string, std::shared_ptr<nn::Module>> modules;
    std::vector<std::string> adapter_prefixes;  // subtrees that hold adapters, not base weights
    for (auto& [name, m] : model.named_modules()) {
        modules[name] = m;
        if (std::dynamic_pointer_cast<SiteAdapters>(m) || std::dynamic_pointer_cast<PromptAdapters>(m) ||
            std::dynamic_pointer_cast<ModulesToSave>(m))
            adapter_prefixes.push_back(name + ".");
        else if (std::dynamic_pointer_cast<TunerLayer>(m))
            for (auto& [child, c] : m->named_children())
                if (child != "base_layer") adapter_prefixes.push_back(name + "." + child + ".");
    }
    for (auto& [name, t] : model.named_parameters()) {
        if (skip_names.count(name)) continue;
        bool adapter = false;
        for (const std::string& p : adapter_prefixes) adapter = adapter || name.rfind(p, 0) == 0;
        if (adapter) continue;
        size_t dot = name.rfind('.');
        auto it = modules.find(dot == std::string::npos ? std::string() : name.substr(0, dot));
        out.push_back({name, t, it == modules.end() ? nullptr : it->second});
    }
    return out;
}

std::vector<std::string> PeftModel::tuned_base_parameters(const std::string& adapter) const {
    const PeftConfig& cfg = config(adapter);
    std::set<std::string> skip = modules_to_save_names();
    std::vector<std::string> target_prefixes;
    for (auto& [key, tl] : tuner_layers())
        if (tl->has_adapter(adapter)) target_prefixes.push_back(key + ".base_layer.");
    std::vector<std::string> out;
    for (const BaseParam& p : base_parameters(*model_, skip)) {
        bool in_target = false;
        for (const std::string& t : target_prefixes) in_target = in_target || p.name.rfind(t, 0) == 0;
        if (p.owner && cfg.trains_base_parameter(p.name, *p.owner, in_target)) out.push_back(p.name);
    }
    return out;
}

// ---- training ----

namespace {
// The active adapters' controllers as one nn::TrainingHooks; controller a's state is "<a>.<name>".
class ControllerHooks : public nn::TrainingHooks {
public:
    std::vector<std::pair<std::string, std::shared_ptr<Controller>>> controllers;

    void before_step(int64_t step) override {
        for (auto& [a, c] : controllers) c->before_step(step);
    }
    Tensor loss_term() override {
        Tensor total;
        for (auto& [a, c] : controllers) {
            Tensor t = c->loss_term();
            if (t.defined()) total = total.defined() ? total + t : t;
        }
        return total;
    }
    void after_optimizer_step(int64_t step) override {
        for (auto& [a, c] : controllers) c->after_optimizer_step(step);
    }
    nn::StateDict state_dict() const override {
        nn::StateDict sd;
        for (auto& [a, c] : controllers)
            for (auto& [n, t] : c->state_dict()) sd[a + "." + n] = t;
        return sd;
    }
    void load_state_dict(const nn::StateDict& sd) override {
        for (auto& [a, c] : controllers) {
            nn::StateDict mine;
            for (auto& [n, t] : sd)
                if (n.rfind(a + ".", 0) == 0) mine[n.substr(a.size() + 1)] = t;
            c->load_state_dict(mine);
        }
    }
    std::vector<std::shared_ptr<Generator>> generators() const override {
        std::vector<std::shared_ptr<Generator>> out;
        for (auto& [a, c] : controllers)
            for (auto& g : c->generators()) out.push_back(g);
        return out;
    }
};
}  // namespace

std::shared_ptr<nn::TrainingHooks> PeftModel::training_hooks() const {
    auto hooks = std::make_shared<ControllerHooks>();
    for (const std::string& a : active_) {
        auto it = controllers_.find(a);
        if (it != controllers_.end() && !configs_.at(a)->inference_mode) hooks->controllers.emplace_back(a, it->second);
    }
    if (hooks->controllers.empty()) return nullptr;
    return hooks;
}

std::shared_ptr<Controller> PeftModel::controller(const std::string& adapter) const {
    auto it = controllers_.find(adapter);
    return it == controllers_.end() ? nullptr : it->second;
}

void PeftModel::report_training(std::ostream& out, const std::function<double()>& evaluate) const {
    for (const std::string& a : active_)
        if (auto c = controller(a)) c->report(out, evaluate);
}

void PeftModel::update_trainable() {
    auto trains = [&](const std::string& a) {
        return std::find(active_.begin(), active_.end(), a) != active_.end() &&
               !configs_.at(a)->inference_mode;
    };
    for (auto& [key, tl] : tuner_layers())
        for (const std::string& a : tl->adapter_names())
            for (auto& [local, t] : tl->adapter_tensors(a)) t.set_requires_grad(trains(a));
    for (auto& [key, sa] : site_adapters())
        for (const std::string& a : sa->adapter_names())
            for (auto& [local, t] : sa->get(a)->named_parameters()) t.set_requires_grad(trains(a));
    if (auto pa = prompt_adapters())
        for (const std::string& a : pa->adapter_names())
            for (auto& [local, t] : pa->get(a)->named_parameters()) t.set_requires_grad(trains(a));
    // Parameter tuners: a base parameter trains while an active adapter tunes it.
    std::set<std::string> tuned;
    for (const std::string& a : active_)
        if (trains(a))
            for (const std::string& n : tuned_base_parameters(a)) tuned.insert(n);
    for (const BaseParam& p : base_parameters(*model_, modules_to_save_names()))
        model_->parameter(p.name).set_requires_grad(tuned.count(p.name) > 0);
    if (auto store = modules_to_save())
        for (const std::string& pname : store->parameter_names())
            for (const std::string& a : store->adapters_of(pname)) store->copy(a, pname).set_requires_grad(trains(a));
}

void PeftModel::disable_adapters(bool on) {
    check_usable();
    disabled_ = on;
    for (auto& [key, tl] : tuner_layers()) tl->set_disabled(on);
    for (auto& [key, sa] : site_adapters()) sa->set_disabled(on);
    if (auto pa = prompt_adapters()) pa->set_disabled(on);
    apply_modules_to_save();
}

std::vector<std::string> PeftModel::targeted_modules(const std::string& adapter) const {
    std::vector<std::string> out;
    for (auto& [key, tl] : tuner_layers())
        if (tl->has_adapter(adapter)) out.push_back(key);
    return out;
}

std::shared_ptr<TunerLayer> PeftModel::tuner_layer(const std::string& module_name) const {
    auto tl = std::dynamic_pointer_cast<TunerLayer>(model_->get_submodule(module_name));
    EMBER_CHECK(tl, "PeftModel.tuner_layer: ", module_name, " holds no adapter");
    return tl;
}

void PeftModel::delete_adapter(const std::string& name) {
    check_usable();
    EMBER_CHECK(configs_.count(name), "PeftModel.delete_adapter: no adapter named '", name, "'");
    for (auto& [key, tl] : tuner_layers()) {
        if (!tl->has_adapter(name)) continue;
        tl->delete_adapter(name);
        if (tl->adapter_names().empty()) {  // nothing left to wrap for: put the Linear back
            tl->unmerge();
            model_->replace_submodule(key, tl->base_layer);
        }
    }
    for (auto& [key, sa] : site_adapters()) {
        sa->set(name, nullptr);
        if (sa->empty()) model_->replace_submodule(key, nullptr);
    }
    if (auto pa = prompt_adapters()) {
        pa->set(name, nullptr);
        if (pa->empty()) model_->replace_submodule("prompt_encoder", nullptr);
    }
    if (auto store = modules_to_save()) {
        for (auto& [pname, original] : store->remove_adapter(name)) model_->parameter(pname) = original;
        if (store->empty()) model_->replace_submodule("modules_to_save", nullptr);
    }
    configs_.erase(name);
    controllers_.erase(name);
    order_.erase(std::find(order_.begin(), order_.end(), name));
    std::vector<std::string> active;
    for (const std::string& a : active_)
        if (a != name) active.push_back(a);
    if (active.empty() && !order_.empty()) active = {order_.front()};  // as peft: another becomes active
    set_adapters(active);
}

// ---- merging ----

// Site modules are nonlinear side branches: nothing to fold into a weight.
void PeftModel::check_mergeable(const std::vector<std::string>& names) const {
    for (const std::string& n : names.empty() ? active_ : names) {
        EMBER_CHECK(configs_.count(n), "PeftModel.merge_adapter: no adapter named '", n, "'");
        for (auto& [key, sa] : site_adapters())
            EMBER_CHECK(!sa->get(n), "PeftModel.merge_adapter: adapter '", n, "' (", configs_.at(n)->peft_type(),
                        ") puts a nonlinear module at ", key, ", which cannot be merged into the weights; "
                        "keep the PeftModel for inference, or save the adapter");
        auto pa = prompt_adapters();
        EMBER_CHECK(!pa || !pa->get(n), "PeftModel.merge_adapter: adapter '", n, "' (", configs_.at(n)->peft_type(),
                    ") adds inputs to every forward pass, which cannot be merged into the weights; keep the "
                    "PeftModel for inference, or save the adapter");
    }
}

void PeftModel::merge_adapter(const std::vector<std::string>& names, bool safe_merge) {
    check_usable();
    check_mergeable(names);
    for (auto& [key, tl] : tuner_layers()) {
        std::vector<std::string> here;
        for (const std::string& n : names.empty() ? active_ : names)
            if (tl->has_adapter(n)) here.push_back(n);
        if (!here.empty()) tl->merge(here, safe_merge);
    }
}

void PeftModel::unmerge_adapter() {
    check_usable();
    for (auto& [key, tl] : tuner_layers()) tl->unmerge();
}

std::shared_ptr<nn::Module> PeftModel::merge_and_unload(const std::vector<std::string>& names, bool safe_merge) {
    check_usable();
    check_mergeable(names);
    disable_adapters(false);
    merge_adapter(names, safe_merge);
    for (auto& [key, tl] : tuner_layers()) model_->replace_submodule(key, tl->base_layer);
    if (modules_to_save()) model_->replace_submodule("modules_to_save", nullptr);  // the slots keep the active copies
    spent_ = true;
    return model_;
}

std::shared_ptr<nn::Module> PeftModel::unload() {
    check_usable();
    for (auto& [key, tl] : tuner_layers()) {
        tl->unmerge();
        model_->replace_submodule(key, tl->base_layer);
    }
    for (auto& [key, sa] : site_adapters()) model_->replace_submodule(key, nullptr);
    if (prompt_adapters()) model_->replace_submodule("prompt_encoder", nullptr);
    if (auto store = modules_to_save()) {
        for (const std::string& pname : store->parameter_names()) model_->parameter(pname) = store->original(pname);
        model_->replace_submodule("modules_to_save", nullptr);
    }
    spent_ = true;
    return model_;
}

// ---- modules_to_save ----

std::shared_ptr<ModulesToSave> PeftModel::modules_to_save() const {
    for (auto& [name, m] : model_->named_children())
        if (name == "modules_to_save") return std::dynamic_pointer_cast<ModulesToSave>(m);
    return nullptr;
}

std::set<std::string> PeftModel::modules_to_save_names() const {
    std::set<std::string> out;
    if (auto store = modules_to_save())
        for (const std::string& n : store->parameter_names()) out.insert(n);
    return out;
}

void PeftModel::setup_modules_to_save(const std::string& name, const PeftConfig& config) {
    if (config.modules_to_save.empty()) return;
    std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> modules = model_->named_modules();
    std::shared_ptr<ModulesToSave> store = modules_to_save();
    if (!store) {
        store = std::make_shared<ModulesToSave>();
        model_->add_module("modules_to_save", store);
    }
    for (const std::string& m : config.modules_to_save) {
        bool found = false;
        for (auto& [key, mod] : modules) {
            if (key.empty() || !(key == m || ends_with(key, "." + m))) continue;
            if (key.rfind("modules_to_save", 0) == 0) continue;  // the store itself (a later adapter's call)
            found = true;
            for (auto& [local, t] : mod->named_parameters()) {
                std::string pname = key + "." + local;
                Tensor original = store->original(pname);
                store->add(name, pname, original.defined() ? original : model_->parameter(pname));
            }
        }
        EMBER_CHECK(found, "PeftModel: no module matched modules_to_save entry '", m, "'");
    }
}

void PeftModel::apply_modules_to_save() {
    auto store = modules_to_save();
    if (!store) return;
    for (const std::string& pname : store->parameter_names()) {
        Tensor use = store->original(pname);
        if (!disabled_)
            for (const std::string& a : active_)
                if (Tensor copy = store->copy(a, pname); copy.defined()) {
                    use = copy;
                    break;
                }
        model_->parameter(pname) = use;
    }
}

// ---- counting ----

PeftModel::ParamCounts PeftModel::count_parameters() const {
    ParamCounts c;
    std::set<const TensorImpl*> seen;
    auto add = [&](const Tensor& t) {
        if (!seen.insert(t.impl_ptr().get()).second) return;
        c.all += t.numel();
        if (t.requires_grad()) c.trainable += t.numel();
    };
    // The modules_to_save originals and every adapter's copy are in the tree: peft counts them all.
    for (auto& [n, t] : model_->named_parameters()) add(t);
    // A 4-bit or bf16 base keeps its frozen weight outside the parameters. peft counts a 4-bit
    // weight at its logical size (peft_model.py get_nb_trainable_parameters doubles the packed
    // bytes), so each such base adds out x in to the whole.
    for (auto& [n, m] : model_->named_modules())
        if (auto base = std::dynamic_pointer_cast<nn::LinearBase>(m); base && !base->stores_dense_weight())
            c.all += base->in_features * base->out_features;
    return c;
}

static std::string with_commas(int64_t v) {
    std::string digits = std::to_string(v), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

std::string PeftModel::trainable_parameters_line() const {
    ParamCounts c = count_parameters();
    char pct[32];
    std::snprintf(pct, sizeof(pct), "%.4f", c.all ? 100.0 * double(c.trainable) / double(c.all) : 0.0);
    return "trainable params: " + with_commas(c.trainable) + " || all params: " + with_commas(c.all) +
           " || trainable%: " + pct;
}

void PeftModel::print_trainable_parameters() const { std::cout << trainable_parameters_line() << "\n"; }

// ---- adapter files ----

nn::StateDict PeftModel::adapter_state_dict(const std::string& adapter) const {
    config(adapter);  // checks the name
    nn::StateDict sd;
    const std::string prefix = "base_model.model.";
    for (auto& [key, tl] : tuner_layers())
        if (tl->has_adapter(adapter)) tl->add_to_state_dict(adapter, key, sd);
    for (auto& [key, sa] : site_adapters())
        if (auto m = sa->get(adapter))
            for (auto& [local, t] : m->named_parameters()) sd[prefix + key + "." + local] = t.detach();
    if (auto pa = prompt_adapters())
        if (auto m = pa->get(adapter))
            for (auto& [k, t] : m->saved_tensors()) sd[k] = t.detach();  // peft's keys, no prefix
    for (const std::string& n : tuned_base_parameters(adapter)) sd[prefix + n] = model_->parameter(n).detach();
    if (auto store = modules_to_save())
        for (const std::string& pname : store->parameter_names())
            if (Tensor copy = store->copy(adapter, pname); copy.defined())
                sd[prefix + pname] = copy.detach();  // as the original's name
    return sd;
}

void PeftModel::save_adapter(const std::string& dir, const std::string& adapter) const {
    check_usable();
    config(adapter);  // checks the name
    nn::make_folders(dir, "save_pretrained");
    nn::save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), adapter_state_dict(adapter),
                         {{"format", "pt"}});
    std::shared_ptr<PeftConfig> c = saved_config(adapter);
    c->inference_mode = true;  // as peft's save_pretrained writes it
    nn::write_file_atomically((fs::path(dir) / "adapter_config.json").string(), c->to_json() + "\n");
}

void PeftModel::save_pretrained(const std::string& dir) const {
    for (const std::string& a : order_)
        save_adapter(a == "default" ? dir : (fs::path(dir) / a).string(), a);
}

static std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    EMBER_CHECK(f, "from_pretrained: cannot open ", path, " (is this a folder written by save_pretrained?)");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::unique_ptr<PeftModel> PeftModel::from_pretrained(std::shared_ptr<nn::Module> model, const std::string& dir,
                                                      const std::string& adapter_name, bool is_trainable,
                                                      const std::string& model_type) {
    std::shared_ptr<PeftConfig> cfg = config_from_json(read_text((fs::path(dir) / "adapter_config.json").string()));
    cfg->inference_mode = !is_trainable;
    nn::SafetensorsFile file = nn::load_safetensors((fs::path(dir) / "adapter_model.safetensors").string());
    auto pm = std::make_unique<PeftModel>(model, *cfg, adapter_name, 0, model_type);
    pm->load_adapter_state_dict(file.tensors, adapter_name);
    return pm;
}

void PeftModel::load_adapter(const std::string& dir, const std::string& adapter_name, bool is_trainable) {
    std::shared_ptr<PeftConfig> cfg = config_from_json(read_text((fs::path(dir) / "adapter_config.json").string()));
    cfg->inference_mode = !is_trainable;
    nn::SafetensorsFile file = nn::load_safetensors((fs::path(dir) / "adapter_model.safetensors").string());
    add_adapter(adapter_name, *cfg);
    load_adapter_state_dict(file.tensors, adapter_name);
}

void PeftModel::load_adapter_state_dict(const nn::StateDict& sd, const std::string& adapter) {
    check_usable();
    nn::StateDict mine = adapter_state_dict(adapter);
    std::vector<std::string> missing, unexpected, wrong;
    for (auto& [k, t] : mine) {
        auto it = sd.find(k);
        if (it == sd.end()) missing.push_back(k);
        else if (it->second.shape() != t.shape())
            wrong.push_back(make_message(k, " (file ", it->second.shape(), ", model ", t.shape(), ")"));
    }
    for (auto& [k, t] : sd)
        if (!mine.count(k)) unexpected.push_back(k);
    if (!missing.empty() || !unexpected.empty() || !wrong.empty()) {
        auto list = [](const std::vector<std::string>& v) {
            std::string s;
            for (size_t i = 0; i < v.size() && i < 8; ++i) s += "\n    " + v[i];
            if (v.size() > 8) s += make_message("\n    ... (", v.size() - 8, " more)");
            return s;
        };
        std::string msg = make_message("load_adapter ('", adapter, "'): the adapter file does not fit this model");
        if (!wrong.empty()) msg += make_message("\n  wrongly shaped (", wrong.size(), "):", list(wrong));
        if (!missing.empty()) msg += make_message("\n  missing (", missing.size(), "):", list(missing));
        if (!unexpected.empty()) msg += make_message("\n  unexpected (", unexpected.size(), "):", list(unexpected));
        msg += "\n  (was it saved for another model, or with other target_modules / r?)";
        throw Error(msg);
    }
    NoGradGuard no_grad;
    for (auto& [k, t] : mine) raw::copy_(t, raw::to_device(sd.at(k), t.device()));
    // Every tensor must now read back as the file has it: a computed one (a reparameterised
    // prefix, a rank-sliced copy) cannot take values.
    for (auto& [k, t] : adapter_state_dict(adapter)) {
        Tensor want = raw::to_dtype(sd.at(k), t.dtype());
        EMBER_CHECK(raw::to_device(raw::contiguous(t), Device::cpu()).to_vector<double>() ==
                        raw::to_device(want, Device::cpu()).to_vector<double>(),
                    "load_adapter ('", adapter, "'): ", k, " is computed by this adapter (", configs_.at(adapter)->peft_type(),
                    "), not stored, so the file's values cannot be loaded into it; load the adapter for inference "
                    "(is_trainable = false), which stores it as it is");
    }
}

}  // namespace peft
}  // namespace ember
