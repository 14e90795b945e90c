// libFuzzer target for the model configs (config.json of GPT-2, LLaMA and ViT): any text must
// parse into a valid config or be refused with an ember::Error; a config that parses must write
// JSON that parses back to the same config. No model is built (a huge one would be refused by
// the memory check, not by the parser). `make fuzz` runs it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "models/gpt.h"
#include "models/vit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        ember::models::GPTConfig c = ember::models::GPTConfig::from_hf_json(text);
        ember::models::GPTConfig back = ember::models::GPTConfig::from_hf_json(c.to_hf_json());
        if (back.to_hf_json() != c.to_hf_json()) std::abort();  // not a round trip
    } catch (const ember::Error&) {
    }
    try {
        ember::models::ViTConfig c = ember::models::ViTConfig::from_hf_json(text);
        ember::models::ViTConfig back = ember::models::ViTConfig::from_hf_json(c.to_hf_json());
        if (back.to_hf_json() != c.to_hf_json()) std::abort();
    } catch (const ember::Error&) {
    }
    return 0;
}
