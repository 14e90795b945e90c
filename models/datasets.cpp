#include "models/datasets.h"

#include <zlib.h>

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <sstream>

#include "tensor/ops.h"

namespace ember {

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    EMBER_CHECK(in, "read_text_file: cannot open ", path);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

std::vector<TextCategory> read_fortunes(const std::string& dir, const std::vector<std::string>& exclude,
                                        const std::vector<std::string>& only) {
    DIR* d = opendir(dir.c_str());
    EMBER_CHECK(d != nullptr, "read_fortunes: cannot open ", dir, "; install the fortunes with "
                "`apt-get install fortunes` or pass another text file");
    std::vector<std::string> all, names;
    while (dirent* entry = readdir(d)) {
        std::string name = entry->d_name;
        if (name.empty() || name[0] == '.' || name.find('.') != std::string::npos) continue;
        all.push_back(name);
    }
    closedir(d);
    std::sort(all.begin(), all.end());
    EMBER_CHECK(!all.empty(), "read_fortunes: no fortune files found in ", dir);
    for (const std::string& name : only) {
        if (std::find(all.begin(), all.end(), name) != all.end()) continue;
        std::string known;
        for (const std::string& n : all) known += (known.empty() ? "" : ", ") + n;
        throw Error(make_message("read_fortunes: no category '", name, "' in ", dir, "; it has: ", known));
    }
    for (const std::string& name : all) {
        if (std::find(exclude.begin(), exclude.end(), name) != exclude.end()) continue;
        if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
        names.push_back(name);
    }
    EMBER_CHECK(!names.empty(), "read_fortunes: every category in ", dir, " is excluded");
    std::vector<TextCategory> out;
    for (const std::string& name : names) out.push_back({name, read_text_file(dir + "/" + name)});
    return out;
}

// The file's bytes, through zlib when it is gzipped (zlib reads plain files unchanged too).
static std::string read_maybe_gzipped(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    EMBER_CHECK(f != nullptr, "read_idx: cannot open ", path, "; install Fashion-MNIST with "
                "`apt-get install dataset-fashion-mnist` or pass another IDX directory");
    std::string bytes;
    char buffer[1 << 16];
    int n;
    while ((n = gzread(f, buffer, sizeof buffer)) > 0) bytes.append(buffer, size_t(n));
    bool failed = n < 0;
    gzclose(f);
    EMBER_CHECK(!failed, "read_idx: ", path, " is not a readable gzip file");
    return bytes;
}

// Parses an IDX header of unsigned bytes with `rank` dims and returns the dims.
static std::vector<int64_t> idx_dims(const std::string& bytes, int rank, const std::string& path) {
    EMBER_CHECK(bytes.size() >= 4, "read_idx: ", path, " is too short for an IDX header");
    auto u8 = [&](size_t i) { return uint32_t(static_cast<unsigned char>(bytes[i])); };
    auto be32 = [&](size_t i) { return (u8(i) << 24) | (u8(i + 1) << 16) | (u8(i + 2) << 8) | u8(i + 3); };
    EMBER_CHECK(u8(0) == 0 && u8(1) == 0 && u8(2) == 0x08 && int(u8(3)) == rank, "read_idx: ", path,
                " is not an IDX file of unsigned bytes with ", rank, " dims (magic ", be32(0), ")");
    EMBER_CHECK(bytes.size() >= size_t(4 + 4 * rank), "read_idx: ", path, " is too short for an IDX header");
    // Each dim is a u32, so their product can pass 2^64: it is bounded by the file's size as it
    // grows, and the error states the promise exactly in decimal.
    std::vector<int64_t> dims;
    uint64_t count = 1;
    bool too_big = false;
    for (int i = 0; i < rank; ++i) {
        uint64_t d = be32(size_t(4 + 4 * i));
        dims.push_back(int64_t(d));
        if (d != 0 && count > uint64_t(bytes.size()) / d) too_big = true;
        count *= d;
    }
    std::string promised;
    for (int64_t d : dims) promised += (promised.empty() ? "" : " x ") + std::to_string(d);
    EMBER_CHECK(!too_big && uint64_t(bytes.size()) == uint64_t(4 + 4 * rank) + count, "read_idx: ", path, " holds ",
                bytes.size(), " bytes but its header promises ", promised, " values after ", 4 + 4 * rank,
                " header bytes; the file is truncated or corrupt");
    // With a zero dim the values check nothing; each dim below 2^31 keeps the strides of the
    // other two inside int64.
    for (int64_t d : dims)
        EMBER_CHECK(d < (int64_t(1) << 31), "read_idx: ", path, ": its header's dims ", promised,
                    " include one of 2^31 or more; the file is corrupt");
    return dims;
}

Tensor parse_idx_images(const std::string& bytes, const std::string& name) {
    std::vector<int64_t> dims = idx_dims(bytes, 3, name);
    Tensor images = empty(Shape(dims), DType::F32);
    float* out = images.data<float>();
    const unsigned char* src = reinterpret_cast<const unsigned char*>(bytes.data()) + 16;
    for (int64_t i = 0; i < images.numel(); ++i) out[i] = float(src[i]) / 255.0f;
    return images;
}

Tensor parse_idx_labels(const std::string& bytes, const std::string& name) {
    std::vector<int64_t> dims = idx_dims(bytes, 1, name);
    Tensor labels = empty(Shape(dims), DType::I64);
    int64_t* out = labels.data<int64_t>();
    for (int64_t i = 0; i < dims[0]; ++i) out[i] = int64_t(static_cast<unsigned char>(bytes[size_t(8 + i)]));
    return labels;
}

Tensor read_idx_images(const std::string& path) { return parse_idx_images(read_maybe_gzipped(path), path); }
Tensor read_idx_labels(const std::string& path) { return parse_idx_labels(read_maybe_gzipped(path), path); }

static std::string existing(const std::string& base) {
    if (std::ifstream(base + ".gz").good()) return base + ".gz";
    return base;
}

ImageSet read_idx_set(const std::string& dir, const std::string& prefix) {
    ImageSet set;
    set.images = read_idx_images(existing(dir + "/" + prefix + "-images-idx3-ubyte"));
    set.labels = read_idx_labels(existing(dir + "/" + prefix + "-labels-idx1-ubyte"));
    EMBER_CHECK(set.images.size(0) == set.labels.size(0), "read_idx_set: ", dir, "/", prefix, ": ",
                set.images.size(0), " images but ", set.labels.size(0), " labels");
    return set;
}

ImageSet filter_classes(const ImageSet& set, int64_t lo, int64_t hi, bool relabel) {
    std::vector<int64_t> keep, labels;
    std::vector<int64_t> all = set.labels.to_vector<int64_t>();
    for (size_t i = 0; i < all.size(); ++i)
        if (all[i] >= lo && all[i] <= hi) {
            keep.push_back(int64_t(i));
            labels.push_back(relabel ? all[i] - lo : all[i]);
        }
    Tensor index = from_vector(keep, {int64_t(keep.size())});
    return {raw::index_select(set.images, 0, index), from_vector(labels, {int64_t(labels.size())})};
}

}  // namespace ember
