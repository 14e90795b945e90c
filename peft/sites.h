// SiteAdapters: what PeftModel puts in a block's adapter site (nn/transformer.h) -- one method
// module per adapter, run for the active adapters in activation order, skipped while adapters
// are disabled. A method supplies the per-adapter module (PeftConfig::make_site_module); the
// container, the switches and the names are shared by every site method.
//
// Names: the adapter's module is the child "<adapter>" of the site, e.g.
// "transformer.h.0.adapter_attn_post.default.adapter_down.weight"; saved keys drop the adapter
// name ("base_model.model.transformer.h.0.adapter_attn_post.adapter_down.weight").
//
// Several adapters at one site: at a *_pre or *_post site each active adapter's output feeds the
// next; at a *_parallel site their terms add up.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/transformer.h"

namespace ember {
namespace peft {

class SiteAdapters : public nn::SiteModule {
public:
    explicit SiteAdapters(const std::string& site);  // one of nn::site_names()
    std::string type_name() const override { return "SiteAdapters"; }
    Tensor forward_site(const nn::SiteInputs& in) override;

    void set(const std::string& adapter, std::shared_ptr<nn::SiteModule> m);  // null removes it
    std::shared_ptr<nn::SiteModule> get(const std::string& adapter) const;   // null if absent
    std::vector<std::string> adapter_names() const;
    bool empty() const { return adapter_names().empty(); }
    void set_active(const std::vector<std::string>& names) { active_ = names; }
    void set_disabled(bool on) { disabled_ = on; }
    const std::string& site() const { return site_; }

private:
    std::string site_;
    std::map<std::string, std::shared_ptr<nn::Module>> slots_;  // map nodes never move
    std::vector<std::string> active_;
    bool disabled_ = false;
};

}  // namespace peft
}  // namespace ember
