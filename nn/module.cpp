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
    const bool is_module = std::string(what) == "module";
    if (is_module) {  // a path of plain names, or empty (the child's entries join this module's)
        EMBER_CHECK(name.empty() || (name.front() != '.' && name.back() != '.' &&
                                     name.find("..") == std::string::npos),
                    type_name(), ": cannot register module '", name, "': a child's name is a dotted path of "
                    "non-empty names (\"attention.query\"), or empty to inline the child");
    } else {
        EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name(), ": cannot register ",
                    what, " '", name, "': names must be non-empty and contain no '.'");
    }
    bool taken = !name.empty() && find_child(name) != nullptr;
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

void Module::add_module(const std::string& name, std::shared_ptr<Module> m) {
    if (const ChildSlot* c = find_child(name)) {
        EMBER_CHECK(!c->get(), type_name(), ".add_module('", name, "'): the slot is taken; empty it first");
        c->set(m);
        return;
    }
    added_.push_back(std::move(m));
    register_module(name, added_.back());
}

const Module::ChildSlot* Module::find_child(const std::string& name) const {
    for (const auto& c : children_)
        if (c.name == name) return &c;
    return nullptr;
}

// ---- walking the tree ----

static std::string join(const std::string& prefix, const std::string& name) {
    if (name.empty()) return prefix;
    return prefix.empty() ? name : prefix + "." + name;
}

void Module::visit(const std::string& prefix,
                   const std::function<void(const std::string&, const Module&)>& fn) const {
    fn(prefix, *this);
    for (const auto& c : children_) {
        std::shared_ptr<Module> m = c.get();
        if (m) m->visit(join(prefix, c.name), fn);
    }
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
    for (auto& [name, child] : named_children()) {
        for (auto& [sub, m] : child->named_modules()) {
            // An inlined child (empty name) is not listed under this module's own name; its
            // descendants are, as if they were this module's.
            if (name.empty() && sub.empty()) continue;
            out.emplace_back(join(name, sub), m);
        }
    }
    return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
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

// Whether the child name `name` (a dotted path) matches parts[i, i + its length).
static size_t matches_at(const std::string& name, const std::vector<std::string>& parts, size_t i) {
    std::vector<std::string> own = split_dotted(name);
    if (own.empty() || i + own.size() > parts.size()) return 0;
    for (size_t k = 0; k < own.size(); ++k)
        if (own[k] != parts[i + k]) return 0;
    return own.size();
}

// The slot whose full path is parts[i..]: a child of `at` whose (dotted) name matches the next
// parts, then on inside it; an inlined child (empty name) is searched as if its children were
// at's. *owner is set to the module that holds the slot. Null if there is none.
const Module::ChildSlot* Module::locate(const Module& at, const std::vector<std::string>& parts, size_t i,
                                        const Module** owner) {
    for (const auto& c : at.children_) {
        std::shared_ptr<Module> m = c.get();
        if (c.name.empty()) {
            if (!m) continue;
            if (const ChildSlot* found = locate(*m, parts, i, owner)) return found;
            continue;
        }
        size_t n = matches_at(c.name, parts, i);
        if (n == 0) continue;
        if (i + n == parts.size()) {
            *owner = &at;
            return &c;
        }
        if (!m) continue;
        if (const ChildSlot* found = locate(*m, parts, i + n, owner)) return found;
    }
    return nullptr;
}

const Module::ChildSlot* Module::locate_slot(const std::string& dotted, const char* op, const Module** owner) const {
    EMBER_CHECK(!dotted.empty(), type_name(), ": ", op, " needs a non-empty dotted name");
    const Module* holder = nullptr;
    const ChildSlot* c = locate(*this, split_dotted(dotted), 0, &holder);
    if (!c) {  // name the longest prefix that does exist, to say where the path breaks
        std::vector<std::string> parts = split_dotted(dotted);
        std::string found_path;
        const Module* at = this;
        for (size_t n = parts.size() - 1; n > 0; --n) {
            const Module* h = nullptr;
            std::vector<std::string> head(parts.begin(), parts.begin() + long(n));
            if (const ChildSlot* p = locate(*this, head, 0, &h); p && p->get()) {
                found_path = join_parts(head);
                at = p->get().get();
                break;
            }
        }
        throw Error(make_message(op, "('", dotted, "'): ", found_path.empty() ? "the root" : "'" + found_path + "'",
                                 " (", at->type_name(), ") has no child at '",
                                 dotted.substr(found_path.empty() ? 0 : found_path.size() + 1), "'"));
    }
    if (owner) *owner = holder;
    return c;
}

std::string Module::join_parts(const std::vector<std::string>& parts) {
    std::string out;
    for (const std::string& p : parts) out = join(out, p);
    return out;
}

std::shared_ptr<Module> Module::get_submodule(const std::string& dotted) const {
    std::shared_ptr<Module> found = locate_slot(dotted, "get_submodule", nullptr)->get();
    EMBER_CHECK(found, "get_submodule('", dotted, "'): the slot is empty (null)");
    return found;
}

void Module::replace_submodule(const std::string& dotted, std::shared_ptr<Module> m) {
    const ChildSlot* c = locate_slot(dotted, "replace_submodule", nullptr);
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
    // The owner's own parameters, then those of its inlined children (empty names).
    std::function<Tensor*(Module&)> find = [&](Module& m) -> Tensor* {
        for (auto& p : m.params_)
            if (p.name == leaf) return p.slot;
        for (auto& c : m.children_)
            if (c.name.empty())
                if (std::shared_ptr<Module> inl = c.get())
                    if (Tensor* t = find(*inl)) return t;
        return nullptr;
    };
    if (Tensor* t = find(*owner)) return *t;
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
