// safetensors and training checkpoints: bit-exact round trips, a hand-built file checked against
// the format itself, half-precision widening, every malformed header refused with its reason,
// atomic writes that leave the old file alone, and a full training-state round trip.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "nn/checkpoint.h"
#include "nn/safetensors.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::nn;
using namespace ember::testing;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp folder, removed with everything in it at scope exit.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "ember_st_XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
    size_t count() const {
        return size_t(std::distance(fs::directory_iterator(path), fs::directory_iterator()));
    }
};

// The bytes of a tensor's elements, row-major.
std::vector<uint8_t> bytes_of(const Tensor& t) {
    Tensor c = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    return std::vector<uint8_t>(p, p + c.numel() * int64_t(dtype_size(c.dtype())));
}

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_u16(std::vector<uint8_t>& out, uint16_t v) {
    out.push_back(uint8_t(v));
    out.push_back(uint8_t(v >> 8));
}

// A file: the length prefix, `header` as given, then `data_bytes` zero bytes of data.
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> out;
    put_u64(out, header.size());
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data_bytes, 0);
    return out;
}

// The error parse_safetensors gives for these bytes ("" if it accepts them).
std::string parse_error(const std::vector<uint8_t>& bytes) {
    return error_of([&] { parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors"); });
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

float bits_to_float(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit for bit, with metadata") {
    TempDir dir;
    Generator gen(7);
    StateDict sd;
    // Special values too: -0, infinities, a NaN with a payload, a subnormal.
    std::vector<float> specials = {-0.f, std::numeric_limits<float>::infinity(),
                                   -std::numeric_limits<float>::infinity(), bits_to_float(0x7FC01234u),
                                   bits_to_float(0x00000003u), 1.5f};
    sd["a.f32"] = from_vector<float>(specials, {2, 3});
    sd["b.f64"] = randn({3, 4, 5}, gen, DType::F64);
    sd["c.i32"] = from_vector<int32_t>({INT32_MIN, -1, 0, INT32_MAX}, {4});
    sd["d.i64"] = from_vector<int64_t>({INT64_MIN, -5, 1LL << 40, INT64_MAX}, {2, 2});
    sd["e.scalar"] = scalar_tensor(3.25);
    sd["f.empty"] = zeros({0, 3});
    std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "héllo \"quoted\"\n"}};
    save_safetensors(dir.file("m.safetensors"), sd, meta);

    SafetensorsFile f = load_safetensors(dir.file("m.safetensors"));
    CHECK(f.metadata == meta);
    REQUIRE(f.tensors.size() == sd.size());
    for (const auto& [name, t] : sd) {
        INFO(name);
        REQUIRE(f.tensors.count(name) == 1);
        const Tensor& u = f.tensors.at(name);
        CHECK(u.dtype() == t.dtype());
        CHECK(u.shape() == t.shape());
        CHECK(u.device() == Device::cpu());
        CHECK(bytes_of(u) == bytes_of(t));
    }
    CHECK(f.tensors.at("e.scalar").dim() == 0);
    CHECK(dir.count() == 1);  // no temporary file left behind
}

TEST_CASE("safetensors: non-contiguous tensors are written as their row-major values") {
    TempDir dir;
    Tensor base = arange(0, 24, 1, DType::F64).reshape({2, 3, 4});
    StateDict sd;
    sd["transposed"] = base.transpose(0, 2);
    sd["sliced"] = base.slice(2, 1, 4, 2);
    sd["expanded"] = arange(0, 3, 1, DType::I32).reshape({3, 1}).expand({3, 4});
    sd["offset_view"] = base.select(0, 1);
    for (const auto& [name, t] : sd) CHECK((name == "offset_view" || !t.is_contiguous()));
    save_safetensors(dir.file("v.safetensors"), sd);
    SafetensorsFile f = load_safetensors(dir.file("v.safetensors"));
    for (const auto& [name, t] : sd) {
        INFO(name);
        CHECK(f.tensors.at(name).shape() == t.shape());
        CHECK(f.tensors.at(name).is_contiguous());
        CHECK(bytes_of(f.tensors.at(name)) == bytes_of(t));
    }
    CHECK(f.tensors.at("sliced").to_vector<double>() ==
          std::vector<double>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
    CHECK(f.metadata.empty());
}

// Named "cuda: ..." so that the GPU runs (-tc=cuda*) pick it up.
TEST_CASE("cuda: safetensors copies CUDA tensors to the host when saving" *
          doctest::skip(!cuda_is_available())) {
    TempDir dir;
    Generator gen(11);
    Tensor host = randn({5, 7}, gen);
    StateDict sd = {{"g", host.to(Device::cuda()).transpose(0, 1)}};
    save_safetensors(dir.file("g.safetensors"), sd);
    Tensor back = load_safetensors(dir.file("g.safetensors")).tensors.at("g");
    CHECK(back.device() == Device::cpu());
    CHECK(bytes_of(back) == bytes_of(host.transpose(0, 1)));
}

TEST_CASE("safetensors: a file built byte by byte from the format loads to the expected values") {
    // {"w": F32 2x2 = [[1, -2], [0.5, 3]], "ids": I64 [7, -1]}, header padded with spaces.
    std::string header =
        R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},)"
        R"("ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
        R"("__metadata__":{"format":"pt"}})";
    header.append(6, ' ');
    std::vector<uint8_t> file;
    put_u64(file, header.size());
    file.insert(file.end(), header.begin(), header.end());
    put_u64(file, 7);
    put_u64(file, ~uint64_t(0));  // -1
    for (uint32_t bits : {0x3F800000u, 0xC0000000u, 0x3F000000u, 0x40400000u}) put_u32(file, bits);

    TempDir dir;
    write_bytes(dir.file("hand.safetensors"), file);
    SafetensorsFile f = load_safetensors(dir.file("hand.safetensors"));
    CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
    CHECK(f.tensors.at("w").shape() == Shape{2, 2});
    CHECK(f.tensors.at("w").to_vector<float>() == std::vector<float>{1, -2, 0.5f, 3});
    CHECK(f.tensors.at("ids").dtype() == DType::I64);
    CHECK(f.tensors.at("ids").to_vector<int64_t>() == std::vector<int64_t>{7, -1});
    // The in-memory parser agrees with the file reader.
    SafetensorsFile g = parse_safetensors(file.data(), file.size(), "mem");
    CHECK(g.tensors.at("w").to_vector<float>() == std::vector<float>{1, -2, 0.5f, 3});

    SafetensorsHeader h = read_safetensors_header(dir.file("hand.safetensors"));
    REQUIRE(h.entries.size() == 2);
    CHECK(h.entries[0].name == "ids");
    CHECK(h.entries[1].name == "w");
    CHECK(h.entries[1].dtype == "F32");
    CHECK(h.entries[1].shape == std::vector<int64_t>{2, 2});
    CHECK(h.entries[1].begin == 16);
    CHECK(h.entries[1].end == 32);
    CHECK(h.header_bytes == header.size());
    CHECK(h.data_bytes == 32);
}

TEST_CASE("safetensors: the writer's bytes follow the format exactly") {
    TempDir dir;
    StateDict sd;
    sd["b"] = from_vector<int32_t>({1, 2}, {2});
    sd["a"] = from_vector<float>({1.f}, {1});
    save_safetensors(dir.file("w.safetensors"), sd);
    std::vector<uint8_t> got = read_bytes(dir.file("w.safetensors"));

    std::string header = R"({"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1]},)"
                         R"("b":{"data_offsets":[4,12],"dtype":"I32","shape":[2]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    std::vector<uint8_t> want;
    put_u64(want, header.size());
    want.insert(want.end(), header.begin(), header.end());
    put_u32(want, 0x3F800000u);  // a = 1.0f, first: keys are sorted
    put_u32(want, 1);
    put_u32(want, 2);
    CHECK(got == want);
    CHECK((8 + header.size()) % 8 == 0);
}

TEST_CASE("safetensors: f16 and bf16 widen to f32 exactly") {
    CHECK(half_to_float(0x3C00) == 1.0f);
    CHECK(half_to_float(0xC000) == -2.0f);
    CHECK(half_to_float(0x3555) == 0.333251953125f);
    CHECK(half_to_float(0x7BFF) == 65504.0f);                 // largest finite half
    CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));    // smallest subnormal
    CHECK(half_to_float(0x03FF) == std::ldexp(1023.0f, -24)); // largest subnormal
    CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));    // smallest normal
    CHECK(std::signbit(half_to_float(0x8000)));
    CHECK(half_to_float(0x8000) == 0.0f);
    CHECK(std::isinf(half_to_float(0x7C00)));
    CHECK(half_to_float(0xFC00) < 0);
    CHECK(std::isnan(half_to_float(0x7E00)));
    CHECK(bfloat16_to_float(0x3F80) == 1.0f);
    CHECK(bfloat16_to_float(0xC040) == -3.0f);
    CHECK(bfloat16_to_float(0x3E20) == 0.15625f);
    CHECK(std::isnan(bfloat16_to_float(0x7FC0)));

    std::string header = R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
                         R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[6,10]}})";
    std::vector<uint8_t> file;
    put_u64(file, header.size());
    file.insert(file.end(), header.begin(), header.end());
    for (uint16_t v : {0x3C00, 0xC000, 0x3800}) put_u16(file, v);  // 1, -2, 0.5
    for (uint16_t v : {0x3F80, 0x4120}) put_u16(file, v);          // 1, 10
    SafetensorsFile f = parse_safetensors(file.data(), file.size(), "half");
    CHECK(f.tensors.at("h").dtype() == DType::F32);
    CHECK(f.tensors.at("h").to_vector<float>() == std::vector<float>{1, -2, 0.5f});
    CHECK(f.tensors.at("b").shape() == Shape{1, 2});
    CHECK(f.tensors.at("b").to_vector<float>() == std::vector<float>{1, 10});
}

TEST_CASE("safetensors: malformed files are refused with the reason") {
    auto entry = [](const std::string& body) { return R"({"t":)" + body + "}"; };
    const std::string good = entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})");
    REQUIRE(parse_error(make_file(good, 8)) == "");
    // "-0" is an integer zero, not a negative number.
    CHECK(parse_error(make_file(entry(R"({"dtype":"F32","shape":[-0],"data_offsets":[-0,0]})"), 0)) == "");

    CHECK(parse_error({}).find("shorter than the 8-byte header length") != std::string::npos);
    CHECK(parse_error({1, 2, 3}).find("3 bytes") != std::string::npos);
    {
        std::vector<uint8_t> f;
        put_u64(f, 200'000'000);
        f.resize(64);
        CHECK(parse_error(f).find("absurd") != std::string::npos);
        std::vector<uint8_t> g;
        put_u64(g, 100);
        g.resize(50);
        std::string e = parse_error(g);
        CHECK(e.find("past the end of the file") != std::string::npos);
        CHECK(e.find("bad.safetensors") != std::string::npos);  // names the file
    }
    CHECK(parse_error(make_file("{\"t\": [", 0)).find("not valid JSON") != std::string::npos);
    CHECK(parse_error(make_file("[1, 2]", 0)).find("not an object") != std::string::npos);
    CHECK(parse_error(make_file(good + "\xff", 8)).find("not valid JSON") != std::string::npos);
    CHECK(parse_error(make_file(entry("3"), 0)).find("not a JSON object") != std::string::npos);
    CHECK(parse_error(make_file(R"({"__metadata__":{"k":1}})", 0)).find("not a string") !=
          std::string::npos);
    CHECK(parse_error(make_file(R"({"__metadata__":[]})", 0)).find("\"__metadata__\" is not") !=
          std::string::npos);

    struct Case {
        const char* entry;
        size_t data_bytes;
        const char* message;
    };
    const Case cases[] = {
        {R"({"shape":[2],"data_offsets":[0,8]})", 8, "missing \"dtype\""},
        {R"({"dtype":"F32","data_offsets":[0,8]})", 8, "missing \"shape\""},
        {R"({"dtype":"F32","shape":[2]})", 8, "missing \"data_offsets\""},
        {R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})", 8, "\"dtype\" is not a string"},
        {R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})", 8, "\"shape\" is not an array"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":"0-8"})", 8, "must be [begin, end]"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", 8, "must be [begin, end]"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.0]})", 8, "must be [begin, end]"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[-1,8]})", 8, "must be [begin, end]"},
        {R"({"dtype":"F17","shape":[2],"data_offsets":[0,8]})", 8, "unknown dtype \"F17\""},
        {R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", 8, "negative dimension -2"},
        {R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})", 8, "not an integer"},
        {R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})", 8, "not an integer"},
        {R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8, "needs 12 bytes"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", 8, "begin > end"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 4, "ends past the data buffer"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 12, "gap of unused bytes"},
        {R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 9, "1 trailing bytes"},
        {R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]})", 4, "at most 8"},
        // numel * itemsize would wrap around 2^64 to 0: must be caught, not "0 bytes, fine".
        {R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0, "too many elements"},
        {R"({"dtype":"F64","shape":[0,281474976710656,281474976710656],"data_offsets":[0,0]})", 0,
         "too many elements"},
        {R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,0]})", 0, "absurdly large"},
    };
    for (const Case& c : cases) {
        std::string e = parse_error(make_file(entry(c.entry), c.data_bytes));
        INFO(c.entry, " -> ", e);
        CHECK(e.find(c.message) != std::string::npos);
        CHECK(e.find("bad.safetensors") != std::string::npos);
        const bool names_culprit = e.find("tensor 't'") != std::string::npos ||
                                   e.find("data buffer") != std::string::npos;
        CHECK(names_culprit);
    }

    // Deeply nested values where numbers belong: refused without recursing through them (a
    // recursive dump() of 100k levels into the message would overflow the stack).
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    CHECK(parse_error(make_file(entry(R"({"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,0]})"), 0))
              .find("shape holds a JSON array, not an integer") != std::string::npos);
    CHECK(parse_error(make_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,)" + deep + "]}"), 4))
              .find("must be [begin, end]") != std::string::npos);

    std::string overlap = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    CHECK(parse_error(make_file(overlap, 12)).find("'a' and 'b' have overlapping") != std::string::npos);
    std::string twice = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("n":{"b":1,"b":2},)"
                        R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
    CHECK(parse_error(make_file(twice, 8)).find("name \"a\" appears twice") != std::string::npos);
    std::string u8 = R"({"m":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
    CHECK(parse_error(make_file(u8, 3)).find("unsupported dtype U8 in tensor 'm'") != std::string::npos);
    // The header-only reader lists dtypes it cannot load.
    TempDir dir;
    write_bytes(dir.file("u8.safetensors"), make_file(u8, 3));
    CHECK(read_safetensors_header(dir.file("u8.safetensors")).entries.at(0).dtype == "U8");
    CHECK(error_of([&] { load_safetensors(dir.file("u8.safetensors")); })
              .find("unsupported dtype U8") != std::string::npos);
    CHECK(error_of([&] { load_safetensors(dir.file("missing.safetensors")); })
              .find("cannot open") != std::string::npos);
    CHECK(error_of([&] { load_safetensors(dir.path.string()); }).find("not a regular file") !=
          std::string::npos);
}

TEST_CASE("safetensors: a failed write leaves the old file intact and no temporary file") {
    TempDir dir;
    const std::string path = dir.file("model.safetensors");
    StateDict good = {{"w", tensor({1, 2, 3})}};
    save_safetensors(path, good);
    const std::vector<uint8_t> before = read_bytes(path);

    // An invalid state dict: refused before anything is written.
    StateDict bad = {{"a", tensor({9, 9})}, {"w", Tensor()}};
    CHECK(error_of([&] { save_safetensors(path, bad); }).find("tensor 'w' is undefined") !=
          std::string::npos);
    StateDict reserved = {{"__metadata__", tensor({1})}};
    CHECK(error_of([&] { save_safetensors(path, reserved); }).find("reserves it") != std::string::npos);
    CHECK(error_of([&] { save_safetensors(path, good, {{"k", "\xff\xfe"}}); }).find("not valid UTF-8") !=
          std::string::npos);
    CHECK(read_bytes(path) == before);
    CHECK(dir.count() == 1);

    // A failure at rename time, after the data went to the temporary file: the target is a
    // non-empty directory, which rename() cannot replace. The temporary file must be removed.
    const std::string blocked = dir.file("blocked");
    fs::create_directory(blocked);
    write_bytes(blocked + "/keep", {1});
    std::string e = error_of([&] { save_safetensors(blocked, good); });
    CHECK(e.find("cannot rename") != std::string::npos);
    CHECK(fs::is_directory(blocked));
    CHECK(dir.count() == 2);  // model.safetensors and blocked/, nothing else

    // A directory that does not exist: the temporary file cannot even be created.
    CHECK(error_of([&] { save_safetensors(dir.file("no/such/dir.safetensors"), good); })
              .find("cannot create temporary file") != std::string::npos);

    // A successful overwrite replaces the contents.
    save_safetensors(path, {{"w", tensor({4, 5})}});
    CHECK(load_safetensors(path).tensors.at("w").to_vector<float>() == std::vector<float>{4, 5});
    CHECK(dir.count() == 2);
}

TEST_CASE("checkpoint: a training state round-trips exactly") {
    TempDir dir;
    Generator gen(3);
    TrainingState s;
    s.model["wte.weight"] = randn({5, 4}, gen);
    s.model["ln.bias"] = randn({4}, gen, DType::F64);
    s.optimizer["wte.weight.exp_avg"] = randn({5, 4}, gen);
    s.optimizer["step"] = scalar_tensor(12, DType::I64);
    s.optimizer["lr"] = from_vector<double>({3e-4}, {1});
    s.step = 123456789012LL;
    Generator a(UINT64_MAX), b(42);
    a.set_state(UINT64_MAX, UINT64_MAX - 1);
    b.next_offset();
    s.rngs = {a, b};
    s.extra = {{"config", R"({"n_layer": 2})"}, {"epoch", "3"}, {"step", "not the real step"}};
    save_training_checkpoint(dir.file("ckpt.safetensors"), s);

    TrainingState r = load_training_checkpoint(dir.file("ckpt.safetensors"));
    CHECK(r.step == s.step);
    CHECK(r.extra == s.extra);
    REQUIRE(r.rngs.size() == 2);
    CHECK(r.rngs[0].seed() == UINT64_MAX);
    CHECK(r.rngs[0].offset() == UINT64_MAX - 1);
    CHECK(r.rngs[1].seed() == 42);
    CHECK(r.rngs[1].offset() == 1);
    REQUIRE(r.model.size() == s.model.size());
    REQUIRE(r.optimizer.size() == s.optimizer.size());
    for (const auto& [name, t] : s.model) CHECK(bytes_of(r.model.at(name)) == bytes_of(t));
    for (const auto& [name, t] : s.optimizer) {
        CHECK(r.optimizer.at(name).shape() == t.shape());
        CHECK(bytes_of(r.optimizer.at(name)) == bytes_of(t));
    }
    // The resumed generator draws the same numbers as the original would.
    CHECK(bytes_of(rand({6}, r.rngs[1])) == bytes_of(rand({6}, b)));

    // It is a plain safetensors file underneath.
    SafetensorsFile raw = load_safetensors(dir.file("ckpt.safetensors"));
    CHECK(raw.tensors.count("model.wte.weight") == 1);
    CHECK(raw.tensors.count("optim.step") == 1);
    CHECK(raw.metadata.at("step") == "123456789012");

    // A weights-only file is not a training checkpoint.
    save_safetensors(dir.file("weights.safetensors"), s.model);
    CHECK(error_of([&] { load_training_checkpoint(dir.file("weights.safetensors")); })
              .find("not an Ember training checkpoint") != std::string::npos);
    // A damaged number is named.
    raw.metadata["rng.1.offset"] = "12x";
    save_safetensors(dir.file("damaged.safetensors"), raw.tensors, raw.metadata);
    CHECK(error_of([&] { load_training_checkpoint(dir.file("damaged.safetensors")); })
              .find("\"rng.1.offset\" = \"12x\" is not a valid decimal integer") != std::string::npos);
}
