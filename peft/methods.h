// The method table: every PEFT method Ember has, in one explicit list (peft/methods.cpp). Adding a
// method is its own file plus one row here; nothing else names methods. The table feeds
// config_from_json (by peft_type), the examples' --method list and presets, and the conformance
// suite (tests/test_peft_conformance.cpp), which fails for a method without a row of its own.
//
// No static registration: a row is written in the table, not added by a global constructor, so
// a statically linked program cannot lose methods to the linker.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "peft/config.h"

namespace ember {
namespace peft {

// What a preset is told: the examples' --rank (r of the low-rank methods, the bottleneck of
// adapters), the model type ("gpt2", "llama", "vit") and the run's length (AdaLoRA's schedule).
struct PresetOptions {
    int64_t rank = 8;
    std::string model_type;
    int64_t steps = 0;
};

struct Method {
    std::string name;       // the examples' --method name: "lora", "dora", ...
    std::string peft_type;  // adapter_config.json's peft_type ("LORA" for both lora and dora)
    std::string summary;    // one line for --help
    std::shared_ptr<PeftConfig> (*from_json)(const std::string& text);
    // A config for fine-tuning the examples' models with this method, and its learning rate.
    std::shared_ptr<PeftConfig> (*preset)(const PresetOptions& options);
    double preset_lr;
};

const std::vector<Method>& method_table();
// The row named `name`; the error lists every name.
const Method& find_method(const std::string& name);
// "lora, dora, ..." in table order.
std::string method_names(const std::string& separator = ", ");

}  // namespace peft
}  // namespace ember
