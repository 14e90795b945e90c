// ModuleList: numbered children ("0", "1", ...), as a stack of transformer blocks needs so that
// its parameters read `h.0.attn.c_attn.weight`. Typed, so a model calls its blocks' own forward.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include "nn/module.h"

namespace ember {
namespace nn {

template <class M>
class ModuleList : public Module {
public:
    std::string type_name() const override { return "ModuleList"; }

    void push_back(std::shared_ptr<M> m) {
        items_.push_back(std::move(m));  // a deque keeps the registered slots where they are
        register_module(std::to_string(items_.size() - 1), items_.back());
    }
    M& operator[](size_t i) const { return *items_.at(i); }
    size_t size() const { return items_.size(); }

private:
    std::deque<std::shared_ptr<M>> items_;
};

}  // namespace nn
}  // namespace ember
