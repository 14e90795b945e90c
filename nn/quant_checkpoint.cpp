// Quantized safetensors: bitsandbytes' Linear4bit keys written with the byte-tensor writer of
// nn/safetensors.h, and read back by walking the validated header.
#include "nn/quant_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nn/safetensors.h"

namespace ember {
namespace nn {

using json = nlohmann::json;

namespace {

const char* NF4_STATE = ".weight.quant_state.bitsandbytes__nf4";
const char* INT4_STATE = ".weight.quant_state.ember__int4";

std::vector<uint8_t> host_bytes(const ByteBuffer& b) {
    ByteBuffer h = b.to(Device::cpu());
    return std::vector<uint8_t>(h.data(), h.data() + h.bytes);
}

ByteTensor json_bytes(const json& j) {
    std::string text = j.dump();
    return ByteTensor{{int64_t(text.size())}, std::vector<uint8_t>(text.begin(), text.end())};
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

[[noreturn]] void bad(const std::string& path, const std::string& problem) {
    throw Error("load_quantized: " + path + ": " + problem);
}

}  // namespace

void save_quantized(const std::string& path, Module& model) {
    StateDict tensors = model.state_dict();
    std::map<std::string, ByteTensor> bytes;
    for (auto& [name, m] : model.named_modules()) {
        auto q = std::dynamic_pointer_cast<QuantLinear>(m);
        if (!q) continue;
        const QuantizedWeight w = q->weight.to(Device::cpu());
        const std::string p = name + ".weight";
        bytes[p] = ByteTensor{{w.codes.bytes, 1}, host_bytes(w.codes)};
        json state = {{"shape", {w.rows, w.cols}}};
        if (w.format == QuantFormat::INT4) {
            tensors[p + ".scales"] = w.scales;
            tensors[p + ".zeros"] = w.zeros;
            state["quant_type"] = "int4";
            state["group_size"] = w.blocksize;
            bytes[name + INT4_STATE] = json_bytes(state);
            continue;
        }
        tensors[p + ".quant_map"] = from_vector(std::vector<float>(NF4_VALUES.begin(), NF4_VALUES.end()), {16});
        state["quant_type"] = "nf4";
        state["blocksize"] = w.blocksize;
        state["dtype"] = "float32";
        if (w.double_quant) {
            bytes[p + ".absmax"] = ByteTensor{{w.absmax_codes.bytes}, host_bytes(w.absmax_codes)};
            tensors[p + ".nested_absmax"] = w.nested_absmax;
            tensors[p + ".nested_quant_map"] = w.nested_code;
            state["nested_blocksize"] = w.nested_blocksize;
            state["nested_dtype"] = "float32";
            state["nested_offset"] = w.absmax_offset;
        } else {
            tensors[p + ".absmax"] = w.absmax;
        }
        bytes[name + NF4_STATE] = json_bytes(state);
    }
    save_safetensors_with_bytes(path, tensors, bytes, {{"format", "pt"}});
}

QuantizedCheckpoint read_quantized(const std::string& path) {
    const SafetensorsHeader header = read_safetensors_header(path);  // validated against the file
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) bad(path, std::string("cannot open: ") + std::strerror(errno));
    auto read_at = [&](const SafetensorsEntry& e, void* dst) {
        uint64_t done = 0, n = e.end - e.begin, base = 8 + header.header_bytes + e.begin;
        while (done < n) {
            ssize_t got = ::pread(fd, static_cast<uint8_t*>(dst) + done, n - done, off_t(base + done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                ::close(fd);
                bad(path, "read of '" + e.name + "' failed");
            }
            done += uint64_t(got);
        }
    };
    // Every entry, as a tensor or (U8) as bytes.
    StateDict tensors;
    std::map<std::string, std::vector<uint8_t>> raw;
    for (const SafetensorsEntry& e : header.entries) {
        if (e.dtype == "U8") {
            std::vector<uint8_t> b(e.end - e.begin);
            if (!b.empty()) read_at(e, b.data());
            raw[e.name] = std::move(b);
            continue;
        }
        const std::map<std::string, DType> types = {
            {"F32", DType::F32}, {"F64", DType::F64}, {"I32", DType::I32}, {"I64", DType::I64}};
        auto it = types.find(e.dtype);
        if (it == types.end()) {
            ::close(fd);
            bad(path, "tensor '" + e.name + "' has dtype " + e.dtype +
                          ", which a quantized checkpoint does not use (F32, F64, I32, I64, U8)");
        }
        Tensor t = make_tensor(Shape(e.shape), it->second, Device::cpu());
        if (t.numel() * int64_t(dtype_size(t.dtype())) != int64_t(e.end - e.begin)) {
            ::close(fd);
            bad(path, "tensor '" + e.name + "' has the wrong byte count for its shape");
        }
        if (t.numel() > 0) read_at(e, t.raw_data());
        tensors[e.name] = t;
    }
    ::close(fd);

    auto take = [&](const std::string& key) {
        auto it = tensors.find(key);
        if (it == tensors.end()) bad(path, "missing '" + key + "'");
        Tensor t = it->second;
        tensors.erase(it);
        if (t.dtype() != DType::F32) bad(path, "'" + key + "' must be F32");
        return t;
    };
    auto take_bytes = [&](const std::string& key) {
        auto it = raw.find(key);
        if (it == raw.end()) bad(path, "missing U8 tensor '" + key + "'");
        std::vector<uint8_t> b = std::move(it->second);
        raw.erase(it);
        return b;
    };
    auto to_buffer = [](const std::vector<uint8_t>& b) {
        ByteBuffer buf = ByteBuffer::zeros(int64_t(b.size()));
        if (!b.empty()) std::memcpy(buf.data(), b.data(), b.size());
        return buf;
    };

    QuantizedCheckpoint out;
    std::vector<std::string> states;
    for (const auto& [key, b] : raw)
        if (ends_with(key, NF4_STATE) || ends_with(key, INT4_STATE)) states.push_back(key);
    for (const std::string& key : states) try {
        const bool nf4 = ends_with(key, NF4_STATE);
        const std::string name = key.substr(0, key.size() - std::strlen(nf4 ? NF4_STATE : INT4_STATE));
        const std::string p = name + ".weight";
        std::vector<uint8_t> text = take_bytes(key);
        json state = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
        if (!state.is_object() || !state.contains("shape") || !state["shape"].is_array() ||
            state["shape"].size() != 2)
            bad(path, "'" + key + "' is not a quant state with a 2-D \"shape\"");
        QuantizedWeight w;
        w.rows = state["shape"][0].get<int64_t>(), w.cols = state["shape"][1].get<int64_t>();
        if (w.rows <= 0 || w.cols <= 0) bad(path, "'" + key + "' has a non-positive shape");
        w.codes = to_buffer(take_bytes(p));
        if (w.codes.bytes != (w.numel() + 1) / 2)
            bad(path, "'" + p + "' holds " + std::to_string(w.codes.bytes) + " bytes, not the " +
                          std::to_string((w.numel() + 1) / 2) + " of a (" + std::to_string(w.rows) +
                          ", " + std::to_string(w.cols) + ") 4-bit weight");
        if (!nf4) {
            w.format = QuantFormat::INT4;
            w.blocksize = state.value("group_size", int64_t(0));
            if (w.blocksize < 2 || w.cols % w.blocksize != 0) bad(path, "'" + key + "' has a bad group_size");
            w.scales = take(p + ".scales"), w.zeros = take(p + ".zeros");
            if (w.scales.numel() != w.rows * w.groups_per_row() || w.zeros.numel() != w.scales.numel())
                bad(path, "'" + p + ".scales' / '.zeros' do not fit the shape and group size");
            w.scales = w.scales.reshape({w.rows, w.groups_per_row()});
            w.zeros = w.zeros.reshape({w.rows, w.groups_per_row()});
            out.weights[name] = w;
            continue;
        }
        if (state.value("quant_type", std::string()) != "nf4")
            bad(path, "'" + key + "': only quant_type nf4 is supported (bitsandbytes' fp4 is not)");
        w.format = QuantFormat::NF4;
        w.blocksize = state.value("blocksize", int64_t(0));
        if (w.blocksize < 32 || (w.blocksize & (w.blocksize - 1)) != 0) bad(path, "'" + key + "' has a bad blocksize");
        std::vector<float> map = take(p + ".quant_map").to_vector<float>();
        if (map != std::vector<float>(NF4_VALUES.begin(), NF4_VALUES.end()))
            bad(path, "'" + p + ".quant_map' is not the NF4 table");
        if (state.contains("nested_offset")) {
            w.double_quant = true;
            w.nested_blocksize = state.value("nested_blocksize", int64_t(0));
            if (w.nested_blocksize <= 0) bad(path, "'" + key + "' has a bad nested_blocksize");
            w.absmax_offset = state["nested_offset"].get<float>();
            w.absmax_codes = to_buffer(take_bytes(p + ".absmax"));
            w.nested_absmax = take(p + ".nested_absmax");
            w.nested_code = take(p + ".nested_quant_map");
            if (w.absmax_codes.bytes != w.blocks() || w.nested_code.numel() != 256 ||
                w.nested_absmax.numel() != (w.blocks() + w.nested_blocksize - 1) / w.nested_blocksize)
                bad(path, "the statistics of '" + p + "' do not fit its shape and block sizes");
        } else {
            w.absmax = take(p + ".absmax");
            if (w.absmax.numel() != w.blocks()) bad(path, "'" + p + ".absmax' does not fit its shape");
        }
        out.weights[name] = w;
    } catch (const json::exception& e) {
        bad(path, "the quant state '" + key + "' has a field of the wrong type (" + e.what() + ")");
    }
    if (!raw.empty()) bad(path, "U8 tensor '" + raw.begin()->first + "' belongs to no quantized weight");
    out.tensors = std::move(tensors);
    return out;
}

void load_quantized(const std::string& path, Module& model) {
    QuantizedCheckpoint ck = read_quantized(path);
    for (auto& [name, w] : ck.weights) {
        std::shared_ptr<Module> m;
        try {
            m = model.get_submodule(name);
        } catch (const Error& e) {
            bad(path, "quantized weight '" + name + "' has no module in the model (" + e.what() + ")");
        }
        if (auto q = std::dynamic_pointer_cast<QuantLinear>(m)) {
            q->set_weight(w);
        } else if (auto l = std::dynamic_pointer_cast<Linear>(m)) {
            if (l->out_features != w.rows || l->in_features != w.cols)
                bad(path, "'" + name + "' is " + w.describe() + " but the model's Linear is (" +
                              std::to_string(l->out_features) + ", " + std::to_string(l->in_features) + ")");
            model.replace_submodule(name, std::make_shared<QuantLinear>(w.to(l->weight.device()), l->bias));
        } else {
            bad(path, "'" + name + "' is a " + m->type_name() + ", not a Linear or QuantLinear");
        }
    }
    model.load_state_dict(ck.tensors, /*strict=*/true);
}

}  // namespace nn
}  // namespace ember
