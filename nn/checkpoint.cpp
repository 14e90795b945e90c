// Training checkpoints as one safetensors file. Layout of the header's __metadata__:
//   "format"          "ember.training_checkpoint.v1" (a weights-only file is not mistaken for one)
//   "step"            the step, decimal
//   "rng.count"       the number of generators, decimal
//   "rng.<i>.seed"    generator i's seed, decimal u64
//   "rng.<i>.offset"  generator i's offset, decimal u64
//   "extra.<key>"     the caller's extra strings, verbatim
#include "nn/checkpoint.h"

#include <charconv>

#include "nn/safetensors.h"

namespace ember::nn {

namespace {

const char* const FORMAT = "ember.training_checkpoint.v1";
const std::string MODEL = "model.", OPTIM = "optim.", HOOKS = "hooks.", EXTRA = "extra.";

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

// A metadata value parsed as a whole decimal integer of type T, or a clear error.
template <typename T>
T parse_integer(const std::map<std::string, std::string>& meta, const std::string& key,
                const std::string& path) {
    auto it = meta.find(key);
    EMBER_CHECK(it != meta.end(), "load_training_checkpoint: ", path, ": metadata \"", key,
                "\" is missing; the file is not a complete training checkpoint");
    const std::string& s = it->second;
    T value{};
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    EMBER_CHECK(ec == std::errc() && end == s.data() + s.size() && !s.empty(),
                "load_training_checkpoint: ", path, ": metadata \"", key, "\" = \"", s,
                "\" is not a valid decimal integer");
    return value;
}

}  // namespace

void save_training_checkpoint(const std::string& path, const TrainingState& s) {
    StateDict tensors;
    for (const auto& [name, t] : s.model) tensors[MODEL + name] = t;
    for (const auto& [name, t] : s.optimizer) tensors[OPTIM + name] = t;
    for (const auto& [name, t] : s.hooks) tensors[HOOKS + name] = t;

    std::map<std::string, std::string> meta;
    meta["format"] = FORMAT;
    meta["step"] = std::to_string(s.step);
    meta["rng.count"] = std::to_string(s.rngs.size());
    for (size_t i = 0; i < s.rngs.size(); ++i) {
        const std::string key = "rng." + std::to_string(i);
        meta[key + ".seed"] = std::to_string(s.rngs[i].seed());
        meta[key + ".offset"] = std::to_string(s.rngs[i].offset());
    }
    for (const auto& [key, value] : s.extra) meta[EXTRA + key] = value;
    save_safetensors(path, tensors, meta);
}

TrainingState load_training_checkpoint(const std::string& path) {
    SafetensorsFile file = load_safetensors(path);
    const auto& meta = file.metadata;
    auto format = meta.find("format");
    EMBER_CHECK(format != meta.end() && format->second == FORMAT, "load_training_checkpoint: ",
                path, ": not an Ember training checkpoint (metadata \"format\" is not \"", FORMAT,
                "\"); for plain weights use load_safetensors");

    TrainingState s;
    for (auto& [name, t] : file.tensors) {
        if (starts_with(name, MODEL))
            s.model[name.substr(MODEL.size())] = t;
        else if (starts_with(name, OPTIM))
            s.optimizer[name.substr(OPTIM.size())] = t;
        else if (starts_with(name, HOOKS))
            s.hooks[name.substr(HOOKS.size())] = t;
        else
            throw Error(make_message("load_training_checkpoint: ", path, ": tensor '", name,
                                     "' is not \"model.*\", \"optim.*\" or \"hooks.*\""));
    }
    s.step = parse_integer<int64_t>(meta, "step", path);
    uint64_t count = parse_integer<uint64_t>(meta, "rng.count", path);
    EMBER_CHECK(count <= meta.size(), "load_training_checkpoint: ", path, ": rng.count = ", count,
                " but the metadata holds only ", meta.size(), " entries");
    for (uint64_t i = 0; i < count; ++i) {
        const std::string key = "rng." + std::to_string(i);
        Generator g;
        g.set_state(parse_integer<uint64_t>(meta, key + ".seed", path),
                    parse_integer<uint64_t>(meta, key + ".offset", path));
        s.rngs.push_back(g);
    }
    for (const auto& [key, value] : meta)
        if (starts_with(key, EXTRA)) s.extra[key.substr(EXTRA.size())] = value;
    return s;
}

}  // namespace ember::nn
