// SiteAdapters: the per-adapter modules of one block site and how they chain.
#include "peft/sites.h"

#include <algorithm>

namespace ember {
namespace peft {

SiteAdapters::SiteAdapters(const std::string& site) : site_(site) {
    const auto& names = nn::site_names();
    EMBER_CHECK(std::find(names.begin(), names.end(), site) != names.end(), "SiteAdapters: '", site,
                "' is not a block site (adapter_attn_pre, adapter_attn_post, adapter_mlp_pre, adapter_mlp_post, "
                "adapter_mlp_parallel)");
}

void SiteAdapters::set(const std::string& adapter, std::shared_ptr<nn::SiteModule> m) {
    auto it = slots_.find(adapter);
    if (it == slots_.end()) {
        if (!m) return;
        it = slots_.emplace(adapter, nullptr).first;
        register_module(adapter, it->second);
    }
    it->second = std::move(m);
}

std::shared_ptr<nn::SiteModule> SiteAdapters::get(const std::string& adapter) const {
    auto it = slots_.find(adapter);
    return it == slots_.end() ? nullptr : std::static_pointer_cast<nn::SiteModule>(it->second);
}

std::vector<std::string> SiteAdapters::adapter_names() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : slots_)
        if (m) out.push_back(name);
    return out;
}

Tensor SiteAdapters::forward_site(const nn::SiteInputs& in) {
    const bool parallel = site_ == "adapter_mlp_parallel";
    const bool pre = site_ == "adapter_attn_pre" || site_ == "adapter_mlp_pre";
    Tensor value = parallel ? Tensor() : pre ? in.normed : in.output;
    nn::SiteInputs cur = in;
    if (!disabled_)
        for (const std::string& a : active_) {
            auto m = get(a);
            if (!m) continue;
            if (parallel) {
                Tensor term = m->forward_site(in);
                value = value.defined() ? value + term : term;
                continue;
            }
            (pre ? cur.normed : cur.output) = value;
            value = m->forward_site(cur);
        }
    return value.defined() ? value : zeros_like(in.normed);  // a parallel site with nothing on adds 0
}

}  // namespace peft
}  // namespace ember
