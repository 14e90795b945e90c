// Reading Hugging Face config.json files: every field is fetched with its type checked, so a bad
// file gives an ember::Error that names the key, what it holds and what it should hold, never a
// raw nlohmann type_error. A null field counts as absent (Hugging Face writes "n_inner": null).
#pragma once

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "tensor/check.h"

namespace ember::models::config_json {

using json = nlohmann::json;

inline json parse(const std::string& text, const char* op) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw Error(make_message(op, ": not valid JSON (", e.what(), ")"));
    }
    EMBER_CHECK(j.is_object(), op, ": expected a JSON object, got ", j.type_name());
    return j;
}

inline bool has(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

[[noreturn]] inline void wrong_type(const json& j, const char* key, const char* wanted, const char* op) {
    throw Error(make_message(op, ": \"", key, "\" must be ", wanted, ", not ", j[key].dump(), " (a ",
                             j[key].type_name(), "); fix that key in the file"));
}

inline int64_t integer(const json& j, const char* key, int64_t fallback, const char* op) {
    if (!has(j, key)) return fallback;
    if (j[key].is_number_integer()) return j[key].get<int64_t>();
    // 64.0 is an integer too (some writers emit whole numbers as reals).
    if (j[key].is_number_float()) {
        double v = j[key].get<double>();
        if (v > -9e15 && v < 9e15 && v == double(int64_t(v))) return int64_t(v);
    }
    wrong_type(j, key, "an integer", op);
}

inline int64_t required_integer(const json& j, const char* key, const std::string& kind, const char* op) {
    EMBER_CHECK(has(j, key), op, ": a ", kind, " config needs an integer \"", key, "\"; add it to the file");
    return integer(j, key, 0, op);
}

inline double real(const json& j, const char* key, double fallback, const char* op) {
    if (!has(j, key)) return fallback;
    if (!j[key].is_number()) wrong_type(j, key, "a number", op);
    return j[key].get<double>();
}

inline bool boolean(const json& j, const char* key, bool fallback, const char* op) {
    if (!has(j, key)) return fallback;
    if (!j[key].is_boolean()) wrong_type(j, key, "true or false", op);
    return j[key].get<bool>();
}

inline std::string text(const json& j, const char* key, const std::string& fallback, const char* op) {
    if (!has(j, key)) return fallback;
    if (!j[key].is_string()) wrong_type(j, key, "a string", op);
    return j[key].get<std::string>();
}

// Reads `path` and turns its text into a config with parse(text), naming the file in any error.
template <typename Parse>
auto from_file(const std::string& path, const char* op, Parse parse) -> decltype(parse(std::string())) {
    std::ifstream in(path, std::ios::binary);
    EMBER_CHECK(in.good(), op, ": cannot open ", path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
        return parse(text);
    } catch (const Error& e) {
        throw Error(make_message(op, ": ", path, ": ", e.what()));
    }
}

}  // namespace ember::models::config_json
