// Which modules a PEFT config adapts: Hugging Face peft's matching rules (tuners_utils.py
// check_target_module_exists, utils/other.py get_pattern_key), on full dotted module names such
// as "transformer.h.3.attn.c_attn".
//
//   exclude_modules  first: a string is a full regex match, a list an exact name or ".name" suffix
//   modules_to_save  a module named by it (or inside one) is never a target
//   target_modules   a string is a full regex match ("all-linear": every Linear but the output
//                    head); a list matches a full name or a ".name" suffix
//   layers_to_transform  the layer index is the number after layers_pattern
//                    (".*\.<pattern>\.(\d+)\."), or after any segment when there is no pattern;
//                    a name without one is not a target
//   rank_pattern / alpha_pattern  the first key K (in the map's sorted order -- peft uses the
//                    dict's insertion order) for which "(.*\.)?(K)$" matches the name
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "peft/config.h"

namespace ember {
namespace peft {

// True when `name` matches `sel` as peft's target_modules / exclude_modules do (not all-linear).
bool selector_matches(const ModuleSelector& sel, const std::string& name);

// The layer index in `name` (peft's rule above), or -1 when it has none.
int64_t layer_index(const std::string& name, const std::string& layers_pattern);

// Whether the config targets `name`. is_linear: the module is a Linear (for all-linear);
// is_output_head: it is the model's output layer (lm_head, classifier, score), which all-linear
// leaves out.
bool is_target(const PeftConfig& config, const std::string& name, bool is_linear, bool is_output_head);

// The key of `patterns` that applies to `name`, or "" when none does.
template <class V>
std::string pattern_key(const std::map<std::string, V>& patterns, const std::string& name);
std::string pattern_key_of(const std::vector<std::string>& keys, const std::string& name);

template <class V>
std::string pattern_key(const std::map<std::string, V>& patterns, const std::string& name) {
    std::vector<std::string> keys;
    for (const auto& kv : patterns) keys.push_back(kv.first);
    return pattern_key_of(keys, name);
}

// Default targets of peft's LoRA mapping (utils/constants.py
// TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING), which the LoRA family (DoRA, DyLoRA,
// AdaLoRA, VeRA) shares; unset when peft has none (e.g. "vit"). Other methods keep their own
// mappings in their own files.
ModuleSelector lora_default_targets(const std::string& model_type);

}  // namespace peft
}  // namespace ember
