// Containers: ModuleList (numbered children, "h.0", "h.1", ... as in GPT-2's checkpoint names) and
// Sequential (a chain of unary modules, e.g. an adapter's down -> act -> up).
//
// Children live in a std::deque, whose elements never move when it grows, because the registry
// keeps a pointer to each slot (see nn/module.h).
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace ember {
namespace nn {

// Numbered slots holding M (Module by default): replace_submodule("h.3", m) requires an M.
template <class M = Module>
class ModuleList : public Module {
public:
    ModuleList() = default;
    explicit ModuleList(std::vector<std::shared_ptr<M>> items) {
        for (auto& m : items) push_back(std::move(m));
    }
    std::string type_name() const override { return "ModuleList"; }

    void push_back(std::shared_ptr<M> m) {
        items_.push_back(std::move(m));
        register_module(std::to_string(items_.size() - 1), items_.back());
    }
    size_t size() const { return items_.size(); }
    const std::shared_ptr<M>& operator[](size_t i) const {
        EMBER_CHECK(i < items_.size(), "ModuleList: index ", i, " is out of range for ", items_.size(),
                    " modules");
        return items_[i];
    }
    typename std::deque<std::shared_ptr<M>>::const_iterator begin() const { return items_.begin(); }
    typename std::deque<std::shared_ptr<M>>::const_iterator end() const { return items_.end(); }

private:
    std::deque<std::shared_ptr<M>> items_;
};

// y = m_n(...m_1(m_0(x))); children named "0", "1", ...; null slots are skipped.
class Sequential : public ModuleList<Module> {
public:
    using ModuleList<Module>::ModuleList;
    std::string type_name() const override { return "Sequential"; }
    Tensor forward(const Tensor& x) override {
        Tensor y = x;
        for (const auto& m : *this)
            if (m) y = m->forward(y);
        return y;
    }
};

}  // namespace nn
}  // namespace ember
