// adapter_config.json: peft's keys and defaults, written and read back.
#include "peft/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "peft/adalora.h"
#include "peft/dylora.h"
#include "peft/targets.h"
#include "tensor/check.h"

namespace ember {
namespace peft {

using json = nlohmann::json;

static json str_or_null(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

static json selector_json(const ModuleSelector& s) {
    if (!s.is_set) return nullptr;
    if (s.is_regex) return s.regex;
    return s.names;
}

static ModuleSelector selector_from(const json& j) {
    if (j.is_null()) return {};
    if (j.is_string()) return ModuleSelector(j.get<std::string>());
    return ModuleSelector(j.get<std::vector<std::string>>());
}

// The keys of peft's PeftConfig and of every tuner's target options.
static json common_json(const PeftConfig& c) {
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

static void read_common(const json& j, PeftConfig& c) {
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

static json parse(const std::string& text, const char* expected) {
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

void PeftConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) target_modules = default_target_modules(peft_type(), model_type);
}

void IA3Config::fill_defaults(const std::string& model_type) {
    bool had_targets = target_modules.is_set;
    PeftConfig::fill_defaults(model_type);
    // peft takes both from its mappings when target_modules is None.
    if (!feedforward_modules.is_set && !had_targets) feedforward_modules = default_feedforward_modules(model_type);
    // peft's __post_init__: with both given as lists, every feedforward entry must be a target.
    if (feedforward_modules.is_set && !feedforward_modules.is_regex && target_modules.is_set &&
        !target_modules.is_regex)
        for (const std::string& f : feedforward_modules.names) {
            bool in = false;
            for (const std::string& t : target_modules.names) in = in || t == f;
            EMBER_CHECK(in, "IA3Config: feedforward_modules should be a subset of target_modules; \"", f,
                        "\" is not in ", target_modules.describe());
        }
}

// ---- LoRA ----

// peft's lora_alpha is an int in its dataclass: a whole number is written as one (16, not 16.0).
static json whole_or_real(double v) {
    return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15 ? json(int64_t(v)) : json(v);
}

std::string LoraConfig::to_json() const {
    json j = common_json(*this);
    j["r"] = r;
    j["lora_alpha"] = whole_or_real(lora_alpha);
    j["lora_dropout"] = lora_dropout;
    j["bias"] = bias;
    j["use_rslora"] = use_rslora;
    if (init_lora_weights == "true") j["init_lora_weights"] = true;
    else if (init_lora_weights == "false") j["init_lora_weights"] = false;
    else j["init_lora_weights"] = init_lora_weights;
    j["rank_pattern"] = json(rank_pattern);
    j["alpha_pattern"] = json(alpha_pattern);
    j["use_dora"] = use_dora;
    // peft's other LoraConfig keys, at their defaults (Ember does not implement these options).
    for (const char* k : {"megatron_config", "trainable_token_indices", "loftq_config", "eva_config",
                          "corda_config", "lora_ga_config", "velora_config", "alora_invocation_tokens",
                          "monteclora_config", "layer_replication", "target_parameters",
                          "arrow_config", "kasa_config"})
        j[k] = nullptr;
    j["loftq_config"] = json::object();
    j["megatron_core"] = "megatron.core";
    j["use_qalora"] = false;
    j["qalora_group_size"] = 16;
    j["lora_bias"] = false;
    j["use_bdlora"] = nullptr;
    j["ensure_weight_tying"] = false;
    return j.dump(2);
}

LoraConfig LoraConfig::from_json(const std::string& text) {
    json j = parse(text, "LORA");
    LoraConfig c;
    read_common(j, c);
    c.r = j.value("r", int64_t(8));
    c.lora_alpha = j.value("lora_alpha", 8.0);
    c.lora_dropout = j.value("lora_dropout", 0.0);
    c.bias = j.value("bias", std::string("none"));
    c.use_rslora = j.value("use_rslora", false);
    c.use_dora = j.value("use_dora", false);
    if (j.contains("init_lora_weights")) {
        const json& w = j["init_lora_weights"];
        c.init_lora_weights = w.is_boolean() ? (w.get<bool>() ? "true" : "false") : w.get<std::string>();
    }
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
        c.rank_pattern = j["rank_pattern"].get<std::map<std::string, int64_t>>();
    if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
        c.alpha_pattern = j["alpha_pattern"].get<std::map<std::string, double>>();
    EMBER_CHECK(!j.value("lora_bias", false) && !j.value("use_qalora", false) &&
                    (!j.contains("layer_replication") || j["layer_replication"].is_null()),
                "adapter_config.json: this LoRA adapter uses lora_bias, use_qalora or layer_replication, "
                "which Ember does not implement");
    return c;
}

// ---- IA3 ----

std::string IA3Config::to_json() const {
    json j = common_json(*this);
    j["feedforward_modules"] = selector_json(feedforward_modules);
    j["init_ia3_weights"] = init_ia3_weights;
    // peft's IA3Config has no layer selection: leave the keys out unless used.
    if (layers_to_transform.empty()) j.erase("layers_to_transform");
    if (layers_pattern.empty()) j.erase("layers_pattern");
    return j.dump(2);
}

IA3Config IA3Config::from_json(const std::string& text) {
    json j = parse(text, "IA3");
    IA3Config c;
    read_common(j, c);
    if (j.contains("feedforward_modules")) c.feedforward_modules = selector_from(j["feedforward_modules"]);
    c.init_ia3_weights = j.value("init_ia3_weights", true);
    return c;
}

// ---- VeRA ----

std::string VeraConfig::to_json() const {
    json j = common_json(*this);
    j["r"] = r;
    j["vera_dropout"] = vera_dropout;
    j["d_initial"] = d_initial;
    j["projection_prng_key"] = projection_prng_key;
    j["save_projection"] = save_projection;
    j["bias"] = bias;
    j["init_weights"] = true;
    return j.dump(2);
}

VeraConfig VeraConfig::from_json(const std::string& text) {
    json j = parse(text, "VERA");
    VeraConfig c;
    read_common(j, c);
    c.r = j.value("r", int64_t(256));
    c.vera_dropout = j.value("vera_dropout", 0.0);
    c.d_initial = j.value("d_initial", 0.1);
    c.projection_prng_key = j.value("projection_prng_key", uint64_t(0));
    c.save_projection = j.value("save_projection", true);
    c.bias = j.value("bias", std::string("none"));
    return c;
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
    try {  // a key of the wrong type: nlohmann's type_error, turned into Ember's error
        if (type == "LORA") return std::make_shared<LoraConfig>(LoraConfig::from_json(text));
        if (type == "IA3") return std::make_shared<IA3Config>(IA3Config::from_json(text));
        if (type == "VERA") return std::make_shared<VeraConfig>(VeraConfig::from_json(text));
        if (type == "ADALORA") return std::make_shared<AdaLoraConfig>(AdaLoraConfig::from_json(text));
        if (type == "DYLORA") return std::make_shared<DyLoraConfig>(DyLoraConfig::from_json(text));
    } catch (const json::exception& e) {
        throw Error(make_message("adapter_config.json (", type, "): a key holds a value of the wrong type (", e.what(),
                                 "); compare the file with one peft writes"));
    }
    throw Error(make_message("adapter_config.json: peft_type \"", type, "\" is not one Ember reads "
                             "(LORA, IA3, VERA, ADALORA, DYLORA)"));
}

}  // namespace peft
}  // namespace ember
