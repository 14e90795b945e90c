// safetensors reader and writer. The reader validates the whole header against the file's size
// before it allocates or copies anything; the writer builds the header first, then streams each
// tensor into a temporary file that replaces the target only once everything is on disk.
#include "nn/safetensors.h"

#include "nn/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "tensor/ops.h"

namespace ember::nn {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors.cpp copies little-endian file bytes straight into tensors");

using json = nlohmann::json;

namespace {

// A header longer than this is refused rather than parsed: real headers are kilobytes, and the
// limit keeps a hostile length field from making us allocate gigabytes.
constexpr uint64_t MAX_HEADER_BYTES = 100'000'000;
// No real dimension comes near 2^48; the bound keeps every product below in range.
constexpr uint64_t MAX_DIM = uint64_t(1) << 48;

[[noreturn]] void fail(const std::string& file, const std::string& problem) {
    throw Error("safetensors: " + file + ": " + problem);
}

std::string errno_text() { return std::strerror(errno); }

// Every dtype the format defines, with its size in bytes; 0 for a name we do not know.
size_t known_itemsize(const std::string& dtype) {
    static const std::map<std::string, size_t> sizes = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
        {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
    auto it = sizes.find(dtype);
    return it == sizes.end() ? 0 : it->second;
}

const char* safetensors_dtype(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F64: return "F64";
        case DType::I32: return "I32";
        case DType::I64: return "I64";
    }
    return "?";
}

// A short description of a JSON value for an error message. Never dump() a container here: the
// value comes from the file, and dumping a deeply nested one recurses until the stack overflows.
std::string describe(const json& v) {
    if (v.is_structured()) return std::string("a JSON ") + v.type_name();
    std::string text = v.dump();  // a scalar: short unless it is a long string
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return text;
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
    return out + "]";
}

// A JSON integer that is >= 0, as u64. JSON "-0" parses as a signed 0: it counts as 0 too.
bool as_u64(const json& v, uint64_t& out) {
    if (v.is_number_unsigned()) return out = v.get<uint64_t>(), true;
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return out = uint64_t(v.get<int64_t>()), true;
    return false;
}

uint64_t read_u64_le(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// Checks the 8-byte length prefix against the file's size; returns N.
uint64_t check_prefix(const uint8_t* first8, uint64_t file_bytes, const std::string& file) {
    if (file_bytes < 8)
        fail(file, "file is " + std::to_string(file_bytes) +
                       " bytes, shorter than the 8-byte header length; not a safetensors file");
    uint64_t n = read_u64_le(first8);
    if (n > MAX_HEADER_BYTES)
        fail(file, "header length " + std::to_string(n) + " is absurd (limit " +
                       std::to_string(MAX_HEADER_BYTES) + " bytes); the file is corrupt");
    if (n > file_bytes - 8)
        fail(file, "header length " + std::to_string(n) + " is past the end of the file (" +
                       std::to_string(file_bytes) + " bytes); the file is truncated or corrupt");
    return n;
}

// Reads one header entry's fields, checking their JSON types and values.
SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t data_bytes,
                             const std::string& file) {
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object()) fail(file, where + ": entry is not a JSON object");
    SafetensorsEntry e;
    e.name = name;

    auto dt = v.find("dtype");
    if (dt == v.end()) fail(file, where + ": missing \"dtype\"");
    if (!dt->is_string()) fail(file, where + ": \"dtype\" is not a string");
    e.dtype = dt->get<std::string>();
    size_t itemsize = known_itemsize(e.dtype);
    if (itemsize == 0) fail(file, where + ": unknown dtype \"" + e.dtype + "\"");

    auto sh = v.find("shape");
    if (sh == v.end()) fail(file, where + ": missing \"shape\"");
    if (!sh->is_array()) fail(file, where + ": \"shape\" is not an array");
    if (sh->size() > size_t(MAX_DIMS))
        fail(file, where + ": shape has " + std::to_string(sh->size()) +
                       " dimensions; Ember supports at most " + std::to_string(MAX_DIMS));
    // Product of the dims (with 0 counted as 1, so a zero-size tensor's other dims are still
    // bounded: Ember computes strides from them).
    uint64_t product = 1;
    bool has_zero = false;
    for (const json& d : *sh) {
        if (!d.is_number_integer())
            fail(file, where + ": shape holds " + describe(d) + ", not an integer");
        uint64_t dim = 0;
        if (!as_u64(d, dim)) fail(file, where + ": shape holds negative dimension " + d.dump());
        if (dim > MAX_DIM) fail(file, where + ": dimension " + d.dump() + " is absurdly large");
        has_zero = has_zero || dim == 0;
        e.shape.push_back(int64_t(dim));
        if (__builtin_mul_overflow(product, std::max<uint64_t>(dim, 1), &product) ||
            product > uint64_t(INT64_MAX) / 8)
            fail(file, where + ": shape " + shape_text(e.shape) + "... has too many elements");
    }
    uint64_t bytes = has_zero ? 0 : product * itemsize;  // cannot overflow: product < 2^60

    auto off = v.find("data_offsets");
    if (off == v.end()) fail(file, where + ": missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2 || !as_u64((*off)[0], e.begin) ||
        !as_u64((*off)[1], e.end))
        fail(file, where + ": \"data_offsets\" must be [begin, end], two non-negative integers");
    const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ")";
    if (e.begin > e.end) fail(file, where + ": data_offsets " + range + " has begin > end");
    if (e.end > data_bytes)
        fail(file, where + ": data_offsets " + range + " ends past the data buffer (" +
                       std::to_string(data_bytes) + " bytes); the file is truncated or corrupt");
    if (e.end - e.begin != bytes)
        fail(file, where + ": shape " + shape_text(e.shape) + " of " + e.dtype + " needs " +
                       std::to_string(bytes) + " bytes but data_offsets " + range + " spans " +
                       std::to_string(e.end - e.begin));
    return e;
}

// Parses and validates N bytes of JSON header for a data buffer of `data_bytes` bytes.
SafetensorsHeader parse_header(const uint8_t* text, uint64_t n, uint64_t data_bytes,
                               const std::string& file) {
    // JSON lets a key repeat (the last one wins); a header must not: a repeated tensor name hides
    // one of the two entries. The callback sees each key of the top-level object (depth 1).
    std::set<std::string> top_keys;
    auto no_repeats = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth == 1 && event == json::parse_event_t::key &&
            !top_keys.insert(parsed.get<std::string>()).second)
            fail(file, "name \"" + parsed.get<std::string>() + "\" appears twice in the header");
        return true;
    };
    json root;
    try {
        root = json::parse(text, text + n, no_repeats);
    } catch (const json::exception& e) {
        fail(file, std::string("header is not valid JSON (") + e.what() + ")");
    }
    if (!root.is_object()) fail(file, "header is JSON but not an object");

    SafetensorsHeader h;
    h.header_bytes = n;
    h.data_bytes = data_bytes;
    for (auto it = root.begin(); it != root.end(); ++it) {
        if (it.key() == "__metadata__") {
            if (!it->is_object()) fail(file, "\"__metadata__\" is not a JSON object");
            for (auto m = it->begin(); m != it->end(); ++m) {
                if (!m->is_string()) fail(file, "metadata \"" + m.key() + "\" is not a string");
                h.metadata[m.key()] = m->get<std::string>();
            }
            continue;
        }
        h.entries.push_back(parse_entry(it.key(), *it, data_bytes, file));
    }

    // The format requires the tensors to tile the data buffer exactly: no overlaps (two tensors
    // sharing bytes), no gaps and no trailing bytes (room to hide data, or a sign of corruption).
    std::vector<const SafetensorsEntry*> order;
    for (const SafetensorsEntry& e : h.entries) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t covered = 0;
    const SafetensorsEntry* prev = nullptr;
    for (const SafetensorsEntry* e : order) {
        if (e->begin < covered)
            fail(file, "tensors '" + prev->name + "' and '" + e->name +
                           "' have overlapping data ranges");
        if (e->begin > covered)
            fail(file, "data buffer has a gap of unused bytes [" + std::to_string(covered) + ", " +
                           std::to_string(e->begin) + ") before tensor '" + e->name +
                           "'; the format requires the tensors to cover the buffer exactly");
        covered = e->end;
        prev = e;
    }
    if (covered != data_bytes)
        fail(file, "data buffer has " + std::to_string(data_bytes - covered) +
                       " trailing bytes that belong to no tensor; the format requires the "
                       "tensors to cover the buffer exactly");
    return h;
}

// Builds the tensors of a validated header. read(offset, dst, n) copies n bytes of the data buffer
// starting at `offset` into dst.
template <typename Read>
StateDict build_tensors(const SafetensorsHeader& h, const std::string& file, Read&& read) {
    for (const SafetensorsEntry& e : h.entries) {
        const std::string& d = e.dtype;
        if (d != "F32" && d != "F64" && d != "I32" && d != "I64" && d != "F16" && d != "BF16")
            fail(file, "unsupported dtype " + d + " in tensor '" + e.name +
                           "'; Ember loads F32, F64, I32, I64, and F16/BF16 (widened to F32)");
    }
    StateDict out;
    for (const SafetensorsEntry& e : h.entries) {
        const uint64_t n = e.end - e.begin;
        if (e.dtype == "F16" || e.dtype == "BF16") {
            Tensor t = make_tensor(Shape(e.shape), DType::F32, Device::cpu());
            std::vector<uint16_t> halves(n / 2);
            if (n) read(e.begin, halves.data(), n);
            float* dst = t.data<float>();
            bool f16 = e.dtype == "F16";
            for (size_t i = 0; i < halves.size(); ++i)
                dst[i] = f16 ? half_to_float(halves[i]) : bfloat16_to_float(halves[i]);
            out[e.name] = t;
            continue;
        }
        DType dt = e.dtype == "F32"   ? DType::F32
                   : e.dtype == "F64" ? DType::F64
                   : e.dtype == "I32" ? DType::I32
                                      : DType::I64;
        Tensor t = make_tensor(Shape(e.shape), dt, Device::cpu());
        if (n) read(e.begin, t.raw_data(), n);
        out[e.name] = t;
    }
    return out;
}

// An open file descriptor that closes itself.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// Reads exactly n bytes at `offset`, or throws.
void pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& file) {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
        ssize_t got = ::pread(fd, p, std::min<uint64_t>(n, 1u << 30), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail(file, "read failed: " + errno_text());
        if (got == 0) fail(file, "file ended early (was it truncated while being read?)");
        p += got, n -= uint64_t(got), offset += uint64_t(got);
    }
}

// Opens `path`, reads its length prefix and header, and validates the header.
SafetensorsHeader open_and_read_header(const std::string& path, Fd& f) {
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) fail(path, "cannot open for reading: " + errno_text());
    struct stat st {};
    if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat: " + errno_text());
    if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
    uint64_t size = uint64_t(st.st_size);
    uint8_t prefix[8] = {};
    if (size >= 8) pread_exact(f.fd, prefix, 8, 0, path);
    uint64_t n = check_prefix(prefix, size, path);
    std::vector<uint8_t> text(n);
    if (n) pread_exact(f.fd, text.data(), n, 8, path);
    return parse_header(text.data(), n, size - 8 - n, path);
}


}  // namespace

// ---- half precision ----

float half_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);  // inf or NaN (payload kept)
    } else if (exp != 0) {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);  // normal: rebias the exponent
    } else if (man == 0) {
        bits = sign;  // +-0
    } else {
        // Subnormal: value = man * 2^-24. Shift the mantissa up until its leading 1 reaches the
        // implicit-bit position, lowering the exponent once per shift.
        int e = -14;
        while (!(man & 0x400)) man <<= 1, --e;
        bits = sign | (uint32_t(e + 127) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float bfloat16_to_float(uint16_t b) {
    uint32_t bits = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// ---- reading ----

SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name) {
    uint8_t prefix[8] = {};
    if (size >= 8) std::memcpy(prefix, data, 8);
    uint64_t n = check_prefix(prefix, size, name);
    SafetensorsFile out;
    SafetensorsHeader h = parse_header(data + 8, n, size - 8 - n, name);
    const uint8_t* buffer = data + 8 + n;
    out.tensors = build_tensors(h, name, [&](uint64_t offset, void* dst, uint64_t bytes) {
        std::memcpy(dst, buffer + offset, bytes);  // in range: parse_header checked end <= size
    });
    out.metadata = std::move(h.metadata);
    return out;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
    Fd f;
    return open_and_read_header(path, f);
}

SafetensorsFile load_safetensors(const std::string& path) {
    Fd f;
    SafetensorsHeader h = open_and_read_header(path, f);
    const uint64_t base = 8 + h.header_bytes;
    SafetensorsFile out;
    // Each tensor is read straight into its storage: no second copy of the whole file in memory.
    out.tensors = build_tensors(h, path, [&](uint64_t offset, void* dst, uint64_t bytes) {
        pread_exact(f.fd, dst, bytes, base + offset, path);
    });
    out.metadata = std::move(h.metadata);
    return out;
}

// ---- writing ----

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
    save_safetensors_with_bytes(path, tensors, {}, metadata);
}

void save_safetensors_with_bytes(const std::string& path, const StateDict& tensors,
                                 const std::map<std::string, ByteTensor>& byte_tensors,
                                 const std::map<std::string, std::string>& metadata) {
    // One list of (name, dtype, shape, bytes) in name order, checked before anything is written.
    struct Entry {
        const char* dtype;
        std::vector<int64_t> shape;
        const Tensor* tensor = nullptr;           // or
        const std::vector<uint8_t>* bytes = nullptr;
    };
    std::map<std::string, Entry> entries;
    for (const auto& [name, t] : tensors) {
        EMBER_CHECK(t.defined(), "save_safetensors: ", path, ": tensor '", name,
                    "' is undefined; give it a value or leave it out of the state dict");
        entries[name] = Entry{safetensors_dtype(t.dtype()), t.shape().vec(), &t, nullptr};
    }
    for (const auto& [name, b] : byte_tensors) {
        EMBER_CHECK(!entries.count(name), "save_safetensors: ", path, ": '", name,
                    "' is both a tensor and a byte tensor; give them different names");
        int64_t n = 1;
        for (int64_t d : b.shape) n *= d;
        EMBER_CHECK(n == int64_t(b.bytes.size()), "save_safetensors: ", path, ": byte tensor '",
                    name, "' has ", b.bytes.size(), " bytes but its shape ", shape_text(b.shape),
                    " holds ", n);
        entries[name] = Entry{"U8", b.shape, nullptr, &b.bytes};
    }
    // The header first: it checks every tensor before the temporary file exists.
    json header = json::object();
    if (!metadata.empty()) {
        json meta = json::object();
        for (const auto& [key, value] : metadata) meta[key] = value;
        header["__metadata__"] = meta;
    }
    uint64_t offset = 0;
    for (const auto& [name, e] : entries) {
        EMBER_CHECK(name != "__metadata__", "save_safetensors: ", path,
                    ": a tensor may not be named \"__metadata__\" (the format reserves it); "
                    "rename it");
        uint64_t bytes = e.tensor ? uint64_t(e.tensor->numel()) * dtype_size(e.tensor->dtype())
                                  : uint64_t(e.bytes->size());
        json entry = json::object();
        entry["dtype"] = e.dtype;
        entry["shape"] = e.shape;
        entry["data_offsets"] = json::array({offset, offset + bytes});
        header[name] = entry;
        offset += bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const json::exception& e) {
        throw Error(make_message("save_safetensors: ", path,
                                 ": a tensor name or metadata string is not valid UTF-8 (",
                                 e.what(), ")"));
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // 8 + N stays a multiple of 8: aligned data

    AtomicFile out(path);
    uint8_t prefix[8];
    for (int i = 0; i < 8; ++i) prefix[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    out.write(prefix, 8);
    out.write(text.data(), text.size());
    for (const auto& [name, e] : entries) {  // map order: the same order as the offsets above
        if (e.bytes) {
            if (!e.bytes->empty()) out.write(e.bytes->data(), e.bytes->size());
            continue;
        }
        Tensor c = e.tensor->detach().to(Device::cpu()).contiguous();
        if (c.numel() > 0) out.write(c.raw_data(), size_t(c.numel()) * dtype_size(c.dtype()));
    }
    out.commit();
}

}  // namespace ember::nn
