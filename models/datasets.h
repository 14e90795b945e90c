// The data the examples train on, read from files a Debian machine can install:
//   text:   the `fortunes` package's cookie files (/usr/share/games/fortunes), or any text file
//   images: IDX files such as the `dataset-fashion-mnist` package's (gzipped or not)
// Both readers refuse a malformed file with an error that names it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ember {

constexpr const char* FORTUNES_DIR = "/usr/share/games/fortunes";
constexpr const char* FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

// The whole file as bytes.
std::string read_text_file(const std::string& path);

// The fortune cookie files of `dir` (files without an extension, skipping .dat indexes and .u8
// links), sorted by name, as (category, text) pairs. `exclude` names categories to leave out;
// `only`, when not empty, keeps just those.
struct TextCategory {
    std::string name, text;
};
std::vector<TextCategory> read_fortunes(const std::string& dir = FORTUNES_DIR,
                                        const std::vector<std::string>& exclude = {},
                                        const std::vector<std::string>& only = {});

// An IDX file (big-endian magic, dims, then the values) of unsigned bytes: images (N, H, W) or
// labels (N). Gzipped files (.gz) are read through zlib. Returns an i64 labels tensor or an f32
// images tensor scaled to [0, 1].
Tensor read_idx_images(const std::string& path);
Tensor read_idx_labels(const std::string& path);
// The same over bytes already in memory (`name` is used in error messages); the fuzzer calls these.
Tensor parse_idx_images(const std::string& bytes, const std::string& name);
Tensor parse_idx_labels(const std::string& bytes, const std::string& name);

// A split of images and labels.
struct ImageSet {
    Tensor images;  // (N, H, W) f32 in [0, 1]
    Tensor labels;  // (N) i64
};
// Reads `prefix`-images-idx3-ubyte(.gz) and `prefix`-labels-idx1-ubyte(.gz) from `dir`
// (prefix "train" or "t10k" for Fashion-MNIST).
ImageSet read_idx_set(const std::string& dir, const std::string& prefix);

// Keeps the examples whose label is in [lo, hi] (and relabels them from 0 if `relabel`).
ImageSet filter_classes(const ImageSet& set, int64_t lo, int64_t hi, bool relabel);

}  // namespace ember
