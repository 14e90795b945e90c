// libFuzzer target for adapter_config.json (LoRA, IA3, VeRA, AdaLoRA, DyLoRA): any text must
// parse or be refused with an ember::Error, and a config that parses must write JSON that parses
// back. `make fuzz` runs it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "peft/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    std::string written;
    try {
        written = ember::peft::config_from_json(text)->to_json();
    } catch (const ember::Error&) {
        return 0;  // refused with a message
    }
    try {
        if (ember::peft::config_from_json(written)->to_json() != written) std::abort();  // not a round trip
    } catch (const ember::Error&) {
        std::abort();  // Ember wrote a file it cannot read back
    }
    return 0;
}
