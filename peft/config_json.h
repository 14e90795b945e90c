// adapter_config.json helpers the methods' own files share: the keys of peft's PeftConfig and
// of every tuner's target options, written and read back (peft's config.py), and module selectors
// as JSON (a list of names, one regex string, or null).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "peft/config.h"

namespace ember {
namespace peft {

nlohmann::json selector_json(const ModuleSelector& s);
ModuleSelector selector_from(const nlohmann::json& j);
nlohmann::json str_or_null(const std::string& s);
// A whole number as a JSON integer (16, not 16.0), as peft writes its int-typed fields such as
// lora_alpha; anything else as a real.
nlohmann::json whole_or_real(double v);

// The shared keys of `c`, with "peft_type" = c.peft_type().
nlohmann::json common_json(const PeftConfig& c);
void read_common(const nlohmann::json& j, PeftConfig& c);

// Parses config text and checks that its peft_type is `expected`; the error names the file.
nlohmann::json parse_config(const std::string& text, const char* expected);

}  // namespace peft
}  // namespace ember
