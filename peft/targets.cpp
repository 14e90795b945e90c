// Target matching: peft's check_target_module_exists and get_pattern_key, rule by rule.
#include "peft/targets.h"

#include "peft/regex.h"

#include "tensor/check.h"

namespace ember {
namespace peft {

static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

static std::regex compile(const std::string& pattern, const char* what) {
    try {
        return std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        throw Error(make_message("peft: ", what, " regex '", pattern, "' does not compile (", e.what(),
                                 "); pass a valid regex or a list of module names"));
    }
}

bool selector_matches(const ModuleSelector& sel, const std::string& name) {
    if (!sel.is_set) return false;
    if (sel.is_regex) return std::regex_match(name, compile(sel.regex, "target"));  // re.fullmatch
    for (const std::string& t : sel.names)
        if (name == t || ends_with(name, "." + t)) return true;
    return false;
}

int64_t layer_index(const std::string& name, const std::string& layers_pattern) {
    // re.match(r".*\.[^.]*\.(\d+)\.", key) or re.match(rf".*\.{pattern}\.(\d+)\.", key):
    // anchored at the start, greedy, so the last such segment wins.
    std::string pattern = layers_pattern.empty() ? R"(.*\.[^.]*\.(\d+)\.)"
                                                 : ".*\\." + layers_pattern + R"(\.(\d+)\.)";
    std::smatch m;
    if (!std::regex_search(name, m, compile(pattern, "layers_pattern"), std::regex_constants::match_continuous))
        return -1;
    return std::stoll(m[1].str());
}

// modules_to_save entry m matches a name by peft's "(^|.*\.)m($|\..*)".
static bool inside_module_to_save(const PeftConfig& config, const std::string& name) {
    for (const std::string& m : config.modules_to_save)
        if (name == m || ends_with(name, "." + m) || name.rfind(m + ".", 0) == 0 ||
            name.find("." + m + ".") != std::string::npos)
            return true;
    return false;
}

bool is_target(const PeftConfig& config, const std::string& name, bool is_linear, bool is_output_head) {
    if (name.empty()) return false;
    if (selector_matches(config.exclude_modules, name)) return false;
    if (inside_module_to_save(config, name)) return false;
    bool hit;
    if (config.target_modules.all_linear()) hit = is_linear && !is_output_head;
    else hit = selector_matches(config.target_modules, name);
    if (!hit) return false;
    if (!config.layers_to_transform.empty()) {
        int64_t i = layer_index(name, config.layers_pattern);
        if (i < 0) return false;
        bool listed = false;
        for (int64_t l : config.layers_to_transform) listed = listed || l == i;
        return listed;
    }
    return true;
}

std::string pattern_key_of(const std::vector<std::string>& keys, const std::string& name) {
    for (const std::string& k : keys)
        if (std::regex_search(name, compile("(.*\\.)?(" + k + ")$", "rank_pattern/alpha_pattern"),
                              std::regex_constants::match_continuous))
            return k;
    return "";
}

ModuleSelector lora_default_targets(const std::string& model_type) {
    if (model_type == "gpt2") return ModuleSelector{"c_attn"};
    if (model_type == "llama") return ModuleSelector{"q_proj", "v_proj"};
    return {};  // peft has no default for vit: pass {"query", "value"}
}

std::string ModuleSelector::describe() const {
    if (!is_set) return "None";
    if (is_regex) return "\"" + regex + "\"";
    std::string s = "[";
    for (size_t i = 0; i < names.size(); ++i) s += (i ? ", \"" : "\"") + names[i] + "\"";
    return s + "]";
}

}  // namespace peft
}  // namespace ember
