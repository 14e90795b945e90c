// BitFit: the biases train, nothing else. See bitfit.h.
#include "peft/bitfit.h"

#include "peft/config_json.h"
#include "peft/methods.h"
#include "peft/targets.h"

namespace ember {
namespace peft {

std::string BitFitConfig::to_json() const {
    nlohmann::json j = common_json(*this);
    j["bias_terms"] = "all";  // the reference's --bias-terms option; Ember trains all of them
    return j.dump(2);
}

BitFitConfig BitFitConfig::from_json(const std::string& text) {
    nlohmann::json j = parse_config(text, "BITFIT");
    BitFitConfig c;
    read_common(j, c);
    std::string terms = j.value("bias_terms", std::string("all"));
    EMBER_CHECK(terms == "all", "adapter_config.json: BitFit bias_terms \"", terms,
                "\" is not one Ember implements (\"all\")");
    return c;
}

bool BitFitConfig::trains_base_parameter(const std::string& name, const nn::Module& /*owner*/,
                                         bool /*in_target*/) const {
    const bool bias = name == "bias" || (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
    if (!bias) return false;
    const std::string module = name.size() > 5 ? name.substr(0, name.size() - 5) : std::string();
    return !selector_matches(exclude_modules, module);
}

std::shared_ptr<PeftConfig> bitfit_from_json(const std::string& text) {
    return std::make_shared<BitFitConfig>(BitFitConfig::from_json(text));
}

std::shared_ptr<PeftConfig> bitfit_preset(const PresetOptions& /*options*/) { return std::make_shared<BitFitConfig>(); }

}  // namespace peft
}  // namespace ember
