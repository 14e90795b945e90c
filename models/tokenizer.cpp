#include "models/tokenizer.h"

#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/check.h"

namespace ember {

// ---------------------------------------------------------------- bytes

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = int64_t(uint8_t(text[i]));
    return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
    std::string text;
    for (int64_t id : ids) {
        EMBER_CHECK(id >= 0 && id < VOCAB_SIZE, "ByteTokenizer::decode: id ", id, " is not a byte (0..255)");
        text.push_back(char(uint8_t(id)));
    }
    return text;
}

// ---------------------------------------------------------------- GPT-2 BPE

static std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
        s += char(cp);
    } else if (cp < 0x800) {
        s += char(0xC0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3F));
    } else {
        s += char(0xE0 | (cp >> 12));
        s += char(0x80 | ((cp >> 6) & 0x3F));
        s += char(0x80 | (cp & 0x3F));
    }
    return s;
}

static std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    EMBER_CHECK(in, "Gpt2Tokenizer: cannot open ", path, "; pass the vocab.json and merges.txt that "
                "come with GPT-2's weights");
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& vocab_json, const std::string& merges_txt) {
    load(read_file(vocab_json), read_file(merges_txt), vocab_json + " / " + merges_txt);
}

Gpt2Tokenizer Gpt2Tokenizer::from_strings(const std::string& vocab_json_text, const std::string& merges_text) {
    Gpt2Tokenizer t;
    t.load(vocab_json_text, merges_text, "(in memory)");
    return t;
}

void Gpt2Tokenizer::load(const std::string& vocab_text, const std::string& merges_text, const std::string& where) {
    // GPT-2 spells each byte with a printable character: the printable Latin-1 bytes stand for
    // themselves, the other 68 bytes take code points 256, 257, ... in byte order.
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_symbol_[b] = utf8(printable ? uint32_t(b) : next++);
        symbol_to_byte_[byte_to_symbol_[b]] = uint8_t(b);
    }

    nlohmann::json vocab;
    try {
        vocab = nlohmann::json::parse(vocab_text);
    } catch (const std::exception& e) {
        throw Error(make_message("Gpt2Tokenizer: ", where, ": vocab.json is not valid JSON (", e.what(), ")"));
    }
    EMBER_CHECK(vocab.is_object(), "Gpt2Tokenizer: ", where, ": vocab.json must map tokens to ids");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        EMBER_CHECK(it.value().is_number_integer(), "Gpt2Tokenizer: ", where, ": the id of token '",
                    it.key(), "' is not an integer");
        int64_t id = it.value().get<int64_t>();
        EMBER_CHECK(id >= 0 && id < 10000000, "Gpt2Tokenizer: ", where, ": token id ", id, " is out of range");
        token_to_id_[it.key()] = id;
        if (size_t(id) >= id_to_token_.size()) id_to_token_.resize(size_t(id) + 1);
        id_to_token_[size_t(id)] = it.key();
    }

    std::istringstream lines(merges_text);
    std::string line;
    int rank = 0;
    while (std::getline(lines, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || line.rfind("#version", 0) == 0) continue;
        size_t space = line.find(' ');
        EMBER_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size(),
                    "Gpt2Tokenizer: ", where, ": merges line ", rank + 1, " ('", line,
                    "') is not two symbols separated by a space");
        merge_rank_[{line.substr(0, space), line.substr(space + 1)}] = rank++;
    }
}

// Splits UTF-8 text into its characters (each a short string).
static std::vector<std::string> utf8_chars(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        out.push_back(s.substr(i, len));
        i += len;
    }
    return out;
}

std::vector<std::string> Gpt2Tokenizer::bpe(const std::string& word) const {
    std::vector<std::string> parts = utf8_chars(word);
    while (parts.size() > 1) {
        int best_rank = INT_MAX;
        size_t best_at = 0;
        for (size_t i = 0; i + 1 < parts.size(); ++i) {
            auto it = merge_rank_.find({parts[i], parts[i + 1]});
            if (it != merge_rank_.end() && it->second < best_rank) best_rank = it->second, best_at = i;
        }
        if (best_rank == INT_MAX) break;
        // Merge every occurrence of the best pair, left to right.
        std::pair<std::string, std::string> pair{parts[best_at], parts[best_at + 1]};
        std::vector<std::string> merged;
        for (size_t i = 0; i < parts.size(); ++i) {
            if (i + 1 < parts.size() && parts[i] == pair.first && parts[i + 1] == pair.second) {
                merged.push_back(parts[i] + parts[i + 1]);
                ++i;
            } else {
                merged.push_back(parts[i]);
            }
        }
        parts = std::move(merged);
    }
    return parts;
}

// Character classes for the pre-tokenizer. Bytes of multi-byte UTF-8 characters count as
// letters, which keeps non-ASCII words whole (GPT-2 uses Unicode letter classes here).
static bool is_letter(unsigned char c) { return std::isalpha(c) || c >= 0x80; }
static bool is_digit(unsigned char c) { return std::isdigit(c); }
static bool is_space(unsigned char c) { return std::isspace(c); }

std::vector<std::string> Gpt2Tokenizer::pretokenize(const std::string& text) {
    std::vector<std::string> words;
    size_t i = 0, n = text.size();
    auto at = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    while (i < n) {
        // Contractions: 's 't 're 've 'm 'll 'd
        if (text[i] == '\'') {
            bool matched = false;
            for (const char* suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
                size_t len = std::char_traits<char>::length(suffix);
                if (text.compare(i + 1, len, suffix) == 0) {
                    words.push_back(text.substr(i, len + 1));
                    i += len + 1;
                    matched = true;
                    break;
                }
            }
            if (matched) continue;
        }
        size_t start = i;
        // An optional single leading space joins the word that follows it.
        size_t j = (text[i] == ' ' && i + 1 < n && !is_space(at(i + 1))) ? i + 1 : i;
        if (is_letter(at(j))) {
            while (j < n && is_letter(at(j))) ++j;
        } else if (is_digit(at(j))) {
            while (j < n && is_digit(at(j))) ++j;
        } else if (!is_space(at(j))) {
            while (j < n && !is_space(at(j)) && !is_letter(at(j)) && !is_digit(at(j))) ++j;
        } else {
            // A run of whitespace. If text follows, its last character is left for the next
            // step: a space there leads the next word, any other whitespace stands alone.
            while (j < n && is_space(at(j))) ++j;
            if (j < n && j - start > 1) --j;
        }
        words.push_back(text.substr(start, j - start));
        i = j;
    }
    return words;
}

std::vector<int64_t> Gpt2Tokenizer::encode(const std::string& text) const {
    std::vector<int64_t> ids;
    for (const std::string& word : pretokenize(text)) {
        std::string spelled;
        for (unsigned char c : word) spelled += byte_to_symbol_[c];
        for (const std::string& token : bpe(spelled)) {
            auto it = token_to_id_.find(token);
            EMBER_CHECK(it != token_to_id_.end(), "Gpt2Tokenizer::encode: token '", token,
                        "' is not in vocab.json (are vocab.json and merges.txt from the same model?)");
            ids.push_back(it->second);
        }
    }
    return ids;
}

std::string Gpt2Tokenizer::decode(const std::vector<int64_t>& ids) const {
    std::string text;
    for (int64_t id : ids) {
        EMBER_CHECK(id >= 0 && id < vocab_size() && !id_to_token_[size_t(id)].empty(),
                    "Gpt2Tokenizer::decode: id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
        for (const std::string& symbol : utf8_chars(id_to_token_[size_t(id)])) {
            auto it = symbol_to_byte_.find(symbol);
            EMBER_CHECK(it != symbol_to_byte_.end(), "Gpt2Tokenizer::decode: token ", id,
                        " holds a character that is not a byte stand-in");
            text.push_back(char(it->second));
        }
    }
    return text;
}

}  // namespace ember
