// Module: the registry of slots and every walk over the tree (names, freezing, moving, saving).
#include "nn/module.h"

#include <cxxabi.h>

#include <cstdlib>
#include <set>
#include <sstream>

namespace ember {
namespace nn {

Tensor Module::forward(const Tensor&) {
    throw Error(make_message(type_name(), ": this module has no one-argument forward(x); call its "
                             "own forward overload (e.g. forward(x, inputs))"));
}

std::string Module::demangled_type_name(const char* mangled) {
    int status = 0;
    char* name = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string out = (status == 0 && name) ? name : mangled;
    std::free(name);
    return out;
}

// ---- registration ----

void Module::check_new_name(const std::string& name, const char* what) const {
    EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), ": cannot register ",
                what, " '", name, "': names must be non-empty and contain no '.'");
    bool taken = find_child(name) != nullptr;
    for (const auto& p : params_) taken = taken || p.name == name;
    for (const auto& b : buffers_) taken = taken || b.name == name;
    EMBER_CHECK(!taken, type_name(), ": cannot register ", what, " '", name,
                "': the name is already used in this module");
}

void Module::register_parameter(const std::string& name, Tensor& slot) {
    check_new_name(name, "parameter");
    EMBER_CHECK(slot.defined(), type_name(), ": parameter '", name, "' is undefined; initialize the "
                "slot before registering it (or do not register an absent bias)");
    slot.set_requires_grad(true);
    params_.push_back({name, &slot});
}

void Module::register_buffer(const std::string& name, Tensor& slot, bool persistent) {
    check_new_name(name, "buffer");
    buffers_.push_back({name, &slot, persistent});
}

void Module::add_child(ChildSlot child) {
    check_new_name(child.name, "module");
    children_.push_back(std::move(child));
}

const Module::ChildSlot* Module::find_child(const std::string& name) const {
    for (const auto& c : children_)
        if (c.name == name) return &c;
    return nullptr;
}

// ---- walking the tree ----

void Module::visit(const std::string& prefix,
                   const std::function<void(const std::string&, const Module&)>& fn) const {
    fn(prefix, *this);
    for (const auto& c : children_) {
        std::shared_ptr<Module> m = c.get();
        if (m) m->visit(prefix.empty() ? c.name : prefix + "." + c.name, fn);
    }
}

static std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
}

std::vector<std::pair<std::string, Tensor*>> Module::parameter_slots(bool unique) const {
    std::vector<std::pair<std::string, Tensor*>> out;
    std::set<const TensorImpl*> seen;  // tied weights (one tensor in two slots) count once
    visit("", [&](const std::string& prefix, const Module& m) {
        for (const auto& p : m.params_)
            if (!unique || seen.insert(p.slot->impl_ptr().get()).second)
                out.emplace_back(join(prefix, p.name), p.slot);
    });
    return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::buffer_slots(bool all) const {
    std::vector<std::pair<std::string, Tensor*>> out;
    visit("", [&](const std::string& prefix, const Module& m) {
        for (const auto& b : m.buffers_)
            if (b.slot->defined() && (all || b.persistent)) out.emplace_back(join(prefix, b.name), b.slot);
    });
    return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& [name, slot] : parameter_slots()) out.emplace_back(name, *slot);
    return out;
}

std::vector<Tensor> Module::parameters() const {
    std::vector<Tensor> out;
    for (auto& [name, slot] : parameter_slots()) out.push_back(*slot);
    return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& [name, slot] : buffer_slots(false)) out.emplace_back(name, *slot);
    return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() {
    std::shared_ptr<Module> self = weak_from_this().lock();
    EMBER_CHECK(self, type_name(), ": named_modules() needs the module to be held by a "
                "std::shared_ptr (make it with std::make_shared)");
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> out = {{"", self}};
    for (auto& [name, child] : named_children())
        for (auto& [sub, m] : child->named_modules())
            out.emplace_back(sub.empty() ? name : name + "." + sub, m);
    return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() {
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
    for (const auto& c : children_)
        if (std::shared_ptr<Module> m = c.get()) out.emplace_back(c.name, m);
    return out;
}

// Splits "a.b.c" into {"a", "b", "c"}.
static std::vector<std::string> split_dotted(const std::string& dotted) {
    std::vector<std::string> parts;
    std::stringstream ss(dotted);
    std::string part;
    while (std::getline(ss, part, '.')) parts.push_back(part);
    return parts;
}

std::shared_ptr<Module> Module::get_submodule(const std::string& dotted) const {
    EMBER_CHECK(!dotted.empty(), type_name(), ": get_submodule needs a non-empty dotted name");
    const Module* at = this;
    std::shared_ptr<Module> found;
    std::string path;
    for (const std::string& part : split_dotted(dotted)) {
        const ChildSlot* c = at->find_child(part);
        EMBER_CHECK(c, "get_submodule('", dotted, "'): ", path.empty() ? "the root" : "'" + path + "'",
                    " (", at->type_name(), ") has no child named '", part, "'");
        found = c->get();
        path = join(path, part);
        EMBER_CHECK(found, "get_submodule('", dotted, "'): the slot '", path, "' is empty (null)");
        at = found.get();
    }
    return found;
}

void Module::replace_submodule(const std::string& dotted, std::shared_ptr<Module> m) {
    EMBER_CHECK(!dotted.empty(), type_name(), ": replace_submodule needs a non-empty dotted name");
    size_t dot = dotted.rfind('.');
    Module* parent = this;
    std::shared_ptr<Module> keep;
    if (dot != std::string::npos) {
        keep = get_submodule(dotted.substr(0, dot));
        parent = keep.get();
    }
    const std::string leaf = dot == std::string::npos ? dotted : dotted.substr(dot + 1);
    const ChildSlot* c = parent->find_child(leaf);
    EMBER_CHECK(c, "replace_submodule('", dotted, "'): ", parent->type_name(),
                " has no child slot named '", leaf, "'");
    EMBER_CHECK(c->set(m), "replace_submodule('", dotted, "'): the slot holds a ", c->slot_type,
                " and a ", m->type_name(), " is not one; wrap it in a module of that type, or "
                "replace a slot typed std::shared_ptr<Module>");
}

Tensor& Module::parameter(const std::string& dotted) {
    size_t dot = dotted.rfind('.');
    Module* owner = this;
    std::shared_ptr<Module> keep;
    if (dot != std::string::npos) {
        keep = get_submodule(dotted.substr(0, dot));
        owner = keep.get();
    }
    const std::string leaf = dot == std::string::npos ? dotted : dotted.substr(dot + 1);
    for (auto& p : owner->params_)
        if (p.name == leaf) return *p.slot;
    throw Error(make_message("parameter('", dotted, "'): ", owner->type_name(),
                             " has no parameter named '", leaf, "'"));
}

int64_t Module::num_parameters(bool trainable_only) const {
    int64_t n = 0;
    for (auto& [name, slot] : parameter_slots())
        if (!trainable_only || slot->requires_grad()) n += slot->numel();
    return n;
}

// ---- mode and placement ----

void Module::train(bool on) {
    visit("", [on](const std::string&, const Module& m) { const_cast<Module&>(m).training_ = on; });
}

// Replaces each slot by convert(slot), as a fresh leaf with the old requires_grad. Slots that held
// one tensor (tied weights) hold one converted tensor afterwards.
static void convert_slots(const std::vector<std::pair<std::string, Tensor*>>& slots,
                          const std::function<Tensor(const Tensor&)>& convert) {
    NoGradGuard no_grad;
    std::map<const TensorImpl*, Tensor> done;
    for (auto& [name, slot] : slots) {
        auto it = done.find(slot->impl_ptr().get());
        if (it != done.end()) {
            *slot = it->second;
            continue;
        }
        bool requires = slot->requires_grad();
        Tensor converted = convert(*slot);
        if (converted.same_storage(*slot)) converted = *slot;
        else if (requires) converted.set_requires_grad(true);
        done[slot->impl_ptr().get()] = converted;
        *slot = converted;
    }
}

void Module::to(Device device) {
    auto convert = [device](const Tensor& t) { return raw::to_device(t, device); };
    auto slots = parameter_slots(false);
    for (auto& b : buffer_slots(true)) slots.push_back(b);
    convert_slots(slots, convert);
}

void Module::to(DType dtype) {
    EMBER_CHECK(is_floating(dtype), type_name(), ": to(", dtype, ") converts floating-point "
                "parameters and buffers, so the target must be f32 or f64");
    auto convert = [dtype](const Tensor& t) {
        return is_floating(t.dtype()) ? raw::to_dtype(t, dtype) : t;
    };
    auto slots = parameter_slots(false);
    for (auto& b : buffer_slots(true)) slots.push_back(b);
    convert_slots(slots, convert);
}

void Module::requires_grad_(bool on) {
    for (auto& [name, slot] : parameter_slots(false)) slot->set_requires_grad(on);
}

void Module::zero_grad() {
    for (auto& [name, slot] : parameter_slots(false)) slot->zero_grad();
}

// ---- checkpoints ----

StateDict Module::state_dict() const {
    StateDict sd;
    for (auto& [name, slot] : parameter_slots(false)) sd[name] = slot->detach();
    for (auto& [name, slot] : buffer_slots(false)) sd[name] = slot->detach();
    return sd;
}

void Module::load_state_dict(const StateDict& sd, bool strict) {
    std::vector<std::pair<std::string, Tensor*>> slots = parameter_slots(false);
    for (auto& b : buffer_slots(false)) slots.push_back(b);

    std::vector<std::string> missing, wrong_shape, unexpected;
    std::set<std::string> known;
    for (auto& [name, slot] : slots) {
        known.insert(name);
        auto it = sd.find(name);
        if (it == sd.end())
            missing.push_back(name);
        else if (it->second.shape() != slot->shape())
            wrong_shape.push_back(make_message(name, " (checkpoint ", it->second.shape(), ", model ",
                                               slot->shape(), ")"));
    }
    for (auto& [name, t] : sd)
        if (!known.count(name)) unexpected.push_back(name);

    auto list = [](const std::vector<std::string>& names) {
        std::string s;
        for (const auto& n : names) s += "\n    " + n;
        return s;
    };
    bool bad = !wrong_shape.empty() || (strict && (!missing.empty() || !unexpected.empty()));
    if (bad) {
        std::string msg = make_message("load_state_dict (", type_name(), "): the checkpoint does not fit");
        if (!wrong_shape.empty()) msg += make_message("\n  wrongly shaped keys (", wrong_shape.size(), "):", list(wrong_shape));
        if (strict && !missing.empty()) msg += make_message("\n  missing keys (", missing.size(), "):", list(missing));
        if (strict && !unexpected.empty()) msg += make_message("\n  unexpected keys (", unexpected.size(), "):", list(unexpected));
        msg += "\n  (pass strict = false to load only the keys that match)";
        throw Error(msg);
    }

    NoGradGuard no_grad;
    for (auto& [name, slot] : slots) {
        auto it = sd.find(name);
        if (it == sd.end()) continue;
        Tensor src = raw::to_device(it->second, slot->device());
        raw::copy_(*slot, src);  // converts dtype
    }
}

}  // namespace nn
}  // namespace ember
