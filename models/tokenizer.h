// Tokenizers: text <-> token ids.
//
// ByteTokenizer: one token per byte (vocabulary 256). No files, nothing unknown, and a loss per
// token is a loss per byte, which is how the examples report it.
//
// Gpt2Tokenizer: GPT-2's byte-level BPE, read from the vocab.json and merges.txt that come with
// GPT-2's weights. Text is split into words (letters, digits, other symbols, whitespace, and the
// English contractions), each word's bytes are spelled with GPT-2's printable stand-ins for bytes,
// and the merges are applied lowest rank first until none applies.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace ember {

class ByteTokenizer {
public:
    static constexpr int64_t VOCAB_SIZE = 256;
    std::vector<int64_t> encode(const std::string& text) const;
    std::string decode(const std::vector<int64_t>& ids) const;
};

class Gpt2Tokenizer {
public:
    // Reads `vocab_json` (token -> id) and `merges_txt` (one "left right" pair per line, the
    // first line may be a "#version" comment). Throws naming the file on a malformed one.
    Gpt2Tokenizer(const std::string& vocab_json, const std::string& merges_txt);
    // The same from the files' contents, for tests and embedded use.
    static Gpt2Tokenizer from_strings(const std::string& vocab_json_text, const std::string& merges_text);

    std::vector<int64_t> encode(const std::string& text) const;
    std::string decode(const std::vector<int64_t>& ids) const;
    int64_t vocab_size() const { return int64_t(id_to_token_.size()); }

    // GPT-2's split of text into words before BPE (exposed for tests).
    static std::vector<std::string> pretokenize(const std::string& text);

private:
    Gpt2Tokenizer() = default;
    void load(const std::string& vocab_json_text, const std::string& merges_text, const std::string& where);
    std::vector<std::string> bpe(const std::string& word) const;  // word in stand-in spelling

    std::unordered_map<std::string, int64_t> token_to_id_;
    std::vector<std::string> id_to_token_;
    std::map<std::pair<std::string, std::string>, int> merge_rank_;
    std::string byte_to_symbol_[256];              // byte -> its UTF-8 stand-in
    std::unordered_map<std::string, uint8_t> symbol_to_byte_;
};

}  // namespace ember
