// adapter_config.json: the keys every method shares, and reading any method's file by its peft_type.
#include "peft/config_json.h"

#include <cmath>

#include "peft/methods.h"
#include "tensor/check.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

json str_or_null(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json whole_or_real(double v) {
    return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15 ? json(int64_t(v)) : json(v);
}

json selector_json(const ModuleSelector& s) {
    if (!s.is_set) return nullptr;
    if (s.is_regex) return s.regex;
    return s.names;
}

ModuleSelector selector_from(const json& j) {
    if (j.is_null()) return {};
    if (j.is_string()) return ModuleSelector(j.get<std::string>());
    return ModuleSelector(j.get<std::vector<std::string>>());
}

// The keys of peft's PeftConfig and of every tuner's target options.
json common_json(const PeftConfig& c) {
    json j;
    j["peft_type"] = c.peft_type();
    j["task_type"] = str_or_null(c.task_type);
    j["auto_mapping"] = nullptr;
    j["peft_version"] = "0.20.1.dev0";  // the peft snapshot whose format this follows
    j["base_model_name_or_path"] = str_or_null(c.base_model_name_or_path);
    j["revision"] = str_or_null(c.revision);
    j["inference_mode"] = c.inference_mode;
    j["target_modules"] = selector_json(c.target_modules);
    j["exclude_modules"] = selector_json(c.exclude_modules);
    j["fan_in_fan_out"] = c.fan_in_fan_out;
    j["modules_to_save"] = c.modules_to_save.empty() ? json(nullptr) : json(c.modules_to_save);
    j["layers_to_transform"] = c.layers_to_transform.empty() ? json(nullptr) : json(c.layers_to_transform);
    j["layers_pattern"] = str_or_null(c.layers_pattern);
    return j;
}

void read_common(const json& j, PeftConfig& c) {
    auto str = [&](const char* k) {
        return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    c.task_type = str("task_type");
    c.base_model_name_or_path = str("base_model_name_or_path");
    c.revision = str("revision");
    c.inference_mode = j.value("inference_mode", false);
    if (j.contains("target_modules")) c.target_modules = selector_from(j["target_modules"]);
    if (j.contains("exclude_modules")) c.exclude_modules = selector_from(j["exclude_modules"]);
    c.fan_in_fan_out = j.value("fan_in_fan_out", false);
    if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
        c.modules_to_save = j["modules_to_save"].get<std::vector<std::string>>();
    if (j.contains("layers_to_transform")) {
        const json& l = j["layers_to_transform"];
        if (l.is_number_integer()) c.layers_to_transform = {l.get<int64_t>()};
        else if (l.is_array()) c.layers_to_transform = l.get<std::vector<int64_t>>();
    }
    if (j.contains("layers_pattern") && j["layers_pattern"].is_string())
        c.layers_pattern = j["layers_pattern"].get<std::string>();
}

json parse_config(const std::string& text, const char* expected) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw Error(make_message("adapter_config.json: not valid JSON (", e.what(), ")"));
    }
    EMBER_CHECK(j.is_object() && j.contains("peft_type") && j["peft_type"].is_string(),
                "adapter_config.json: needs an object with a \"peft_type\" string");
    std::string type = j["peft_type"].get<std::string>();
    EMBER_CHECK(type == expected, "adapter_config.json: peft_type is \"", type, "\", expected \"",
                expected, "\"");
    return j;
}

std::shared_ptr<PeftConfig> config_from_json(const std::string& text) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw Error(make_message("adapter_config.json: not valid JSON (", e.what(), ")"));
    }
    EMBER_CHECK(j.is_object(), "adapter_config.json: expected a JSON object, got ", j.type_name());
    EMBER_CHECK(j.contains("peft_type") && j["peft_type"].is_string(),
                "adapter_config.json: \"peft_type\" must be a string such as \"LORA\"");
    std::string type = j["peft_type"].get<std::string>();
    for (const Method& m : method_table()) {
        if (m.peft_type != type) continue;
        try {  // a key of the wrong type: nlohmann's type_error, turned into Ember's error
            return m.from_json(text);
        } catch (const json::exception& e) {
            throw Error(make_message("adapter_config.json (", type, "): a key holds a value of the wrong type (",
                                     e.what(), "); compare the file with one peft writes"));
        }
    }
    std::string known;
    for (const Method& m : method_table())
        if (known.find("\"" + m.peft_type + "\"") == std::string::npos) known += (known.empty() ? "\"" : ", \"") + m.peft_type + "\"";
    throw Error(make_message("adapter_config.json: peft_type \"", type, "\" is not one Ember reads (", known, ")"));
}

}  // namespace peft
}  // namespace ember
