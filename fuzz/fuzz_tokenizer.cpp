// libFuzzer target for GPT-2's tokenizer files: the input is vocab.json, a line "\n--merges--\n",
// then merges.txt (without the marker, all of it is vocab.json). Loading must succeed or throw an
// ember::Error; a loaded tokenizer must encode text (the merges' own text among it) to ids it
// decodes back without a crash. `make fuzz` runs it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/tokenizer.h"
#include "tensor/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string input(reinterpret_cast<const char*>(data), size);
    const std::string marker = "\n--merges--\n";
    size_t cut = input.find(marker);
    std::string vocab = input.substr(0, cut);
    std::string merges = cut == std::string::npos ? std::string() : input.substr(cut + marker.size());
    try {
        ember::Gpt2Tokenizer tok = ember::Gpt2Tokenizer::from_strings(vocab, merges);
        for (const std::string& text : {std::string("Hello world, it's 2024!"), merges.substr(0, 256)}) {
            std::vector<int64_t> ids = tok.encode(text);
            volatile size_t sink = tok.decode(ids).size();
            (void)sink;
        }
    } catch (const ember::Error&) {
    }
    return 0;
}
