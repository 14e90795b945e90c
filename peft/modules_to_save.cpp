// modules_to_save: frozen originals and per-adapter copies, in the model's tree. See modules_to_save.h.
#include "peft/modules_to_save.h"

#include <algorithm>
#include <set>

namespace ember {
namespace peft {

namespace {
// "a.b.weight" -> {"a.b", "weight"}.
std::pair<std::string, std::string> owner_and_leaf(const std::string& param) {
    size_t dot = param.rfind('.');
    if (dot == std::string::npos) return {"", param};
    return {param.substr(0, dot), param.substr(dot + 1)};
}

std::string join(const std::string& a, const std::string& b) { return b.empty() ? a : a + "." + b; }
}  // namespace

void ModulesToSave::Group::add(const std::string& leaf, const Tensor& t) {
    const bool trains = t.requires_grad();  // registering marks it trainable (t shares that flag)
    slots_.push_back(t);
    register_parameter(leaf, slots_.back());
    slots_.back().set_requires_grad(trains);
    by_name_[leaf] = &slots_.back();
}

Tensor ModulesToSave::Group::get(const std::string& leaf) const {
    auto it = by_name_.find(leaf);
    return it == by_name_.end() ? Tensor() : *it->second;
}

ModulesToSave::Group& ModulesToSave::group(const std::string& name) {
    auto it = groups_.find(name);
    if (it != groups_.end() && it->second) return *it->second;
    std::shared_ptr<Group>& slot = groups_[name];
    slot = std::make_shared<Group>();
    if (it == groups_.end()) register_module(name, slot);  // a slot emptied before is reused
    return *slot;
}

Tensor ModulesToSave::find(const std::string& group_name, const std::string& param) const {
    auto [owner, leaf] = owner_and_leaf(param);
    auto it = groups_.find(join(group_name, owner));
    return it == groups_.end() || !it->second ? Tensor() : it->second->get(leaf);
}

void ModulesToSave::add(const std::string& adapter, const std::string& param, const Tensor& original) {
    EMBER_CHECK(adapter != kOriginal, "modules_to_save: an adapter cannot be named '", kOriginal,
                "' (the name of the frozen originals); pick another adapter name");
    auto [owner, leaf] = owner_and_leaf(param);
    Tensor kept = find(kOriginal, param);
    if (!kept.defined()) {
        kept = original;
        kept.set_requires_grad(false);
        group(join(kOriginal, owner)).add(leaf, kept);
    }
    NoGradGuard no_grad;
    Tensor copy = raw::clone(kept);
    copy.set_requires_grad(true);
    group(join(adapter, owner)).add(leaf, copy);
    copies_[param].push_back(adapter);
}

std::vector<std::string> ModulesToSave::parameter_names() const {
    std::vector<std::string> out;
    for (auto& [param, adapters] : copies_) out.push_back(param);
    return out;
}

Tensor ModulesToSave::original(const std::string& param) const { return find(kOriginal, param); }

Tensor ModulesToSave::copy(const std::string& adapter, const std::string& param) const {
    auto it = copies_.find(param);
    if (it == copies_.end() || std::find(it->second.begin(), it->second.end(), adapter) == it->second.end())
        return Tensor();
    return find(adapter, param);
}

std::vector<std::string> ModulesToSave::adapters_of(const std::string& param) const {
    auto it = copies_.find(param);
    return it == copies_.end() ? std::vector<std::string>() : it->second;
}

std::map<std::string, Tensor> ModulesToSave::remove_adapter(const std::string& adapter) {
    std::map<std::string, Tensor> dropped;
    std::set<std::string> still_copied;  // owner modules some adapter still copies
    for (auto it = copies_.begin(); it != copies_.end();) {
        std::vector<std::string>& adapters = it->second;
        adapters.erase(std::remove(adapters.begin(), adapters.end(), adapter), adapters.end());
        if (adapters.empty()) {
            dropped[it->first] = original(it->first);
            it = copies_.erase(it);
        } else {
            still_copied.insert(owner_and_leaf(it->first).first);
            ++it;
        }
    }
    // Empty the adapter's groups, and the groups of originals no adapter copies any more.
    for (auto& [param, original_tensor] : dropped) {
        const std::string owner = owner_and_leaf(param).first;
        if (!still_copied.count(owner) && groups_.count(join(kOriginal, owner)))
            replace_submodule(join(kOriginal, owner), nullptr);
    }
    for (auto& [name, g] : groups_)
        if (g && (name == adapter || name.rfind(adapter + ".", 0) == 0)) replace_submodule(name, nullptr);
    return dropped;
}

}  // namespace peft
}  // namespace ember
