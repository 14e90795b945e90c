// Tokenizers and dataset readers, on small inputs made here.
#include <zlib.h>

#include <sys/stat.h>
#include <fstream>

#include "models/datasets.h"
#include "models/tokenizer.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

TEST_CASE("tokenizer: bytes round-trip, including non-ASCII") {
    ByteTokenizer t;
    std::string text = "Hello, w\xC3\xB6rld!\n";
    std::vector<int64_t> ids = t.encode(text);
    CHECK(ids.size() == text.size());
    CHECK(ids[0] == 'H');
    CHECK(ids[8] == 0xC3);
    CHECK(t.decode(ids) == text);
    CHECK(contains(error_of([&] { t.decode({300}); }), "not a byte"));
}

TEST_CASE("tokenizer: GPT-2's pre-tokenizer splits words the GPT-2 way") {
    auto words = Gpt2Tokenizer::pretokenize("Hello world, it's 2024!\n\nBye  now");
    std::vector<std::string> want = {"Hello", " world", ",", " it", "'s", " 2024", "!", "\n", "\n",
                                     "Bye", " ", " now"};
    CHECK(words == want);
}

TEST_CASE("tokenizer: GPT-2 BPE from a hand-made vocab.json and merges.txt") {
    // GPT-2 spells the space byte as U+0120 ("\xC4\xA0"). Merges: h+e, l+l, he+ll, hell+o, Ġ+w.
    std::string vocab = R"({"h": 0, "e": 1, "l": 2, "o": 3, "\u0120": 4, "w": 5, "r": 6, "d": 7,
                            "he": 8, "ll": 9, "hell": 10, "hello": 11, "\u0120w": 12, "!": 13})";
    std::string merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\xC4\xA0 w\n";
    Gpt2Tokenizer t = Gpt2Tokenizer::from_strings(vocab, merges);
    std::vector<int64_t> ids = t.encode("hello world!");
    CHECK(ids == std::vector<int64_t>{11, 12, 3, 6, 2, 7, 13});
    CHECK(t.decode(ids) == "hello world!");
    CHECK(t.vocab_size() == 14);
    CHECK(contains(error_of([&] { t.encode("z"); }), "not in vocab.json"));
    CHECK(contains(error_of([] { Gpt2Tokenizer::from_strings("{not json", ""); }), "not valid JSON"));
    CHECK(contains(error_of([] { Gpt2Tokenizer::from_strings("{}", "lonely\n"); }), "merges line 1"));
}

TEST_CASE("datasets: IDX images and labels, plain and gzipped; malformed files refused") {
    std::string dir = "/tmp/ember_idx_test";
    mkdir(dir.c_str(), 0755);
    // 2 images of 2x3, labels 7 and 1.
    std::string images = std::string("\0\0\x08\x03", 4) + std::string("\0\0\0\x02\0\0\0\x02\0\0\0\x03", 12);
    for (int i = 0; i < 12; ++i) images.push_back(char(i * 20));
    std::string labels = std::string("\0\0\x08\x01\0\0\0\x02", 8) + "\x07\x01";
    std::ofstream(dir + "/train-images-idx3-ubyte", std::ios::binary) << images;
    gzFile gz = gzopen((dir + "/train-labels-idx1-ubyte.gz").c_str(), "wb");
    gzwrite(gz, labels.data(), unsigned(labels.size()));
    gzclose(gz);

    ImageSet set = read_idx_set(dir, "train");
    CHECK(set.images.shape() == Shape{2, 2, 3});
    CHECK(set.images.to_vector<float>()[1] == doctest::Approx(20.0 / 255));
    CHECK(set.labels.to_vector<int64_t>() == std::vector<int64_t>{7, 1});
    ImageSet only_high = filter_classes(set, 5, 9, true);
    CHECK(only_high.labels.to_vector<int64_t>() == std::vector<int64_t>{2});
    CHECK(only_high.images.shape() == Shape{1, 2, 3});

    std::ofstream(dir + "/bad-images-idx3-ubyte", std::ios::binary) << images.substr(0, 20);
    CHECK(contains(error_of([&] { read_idx_images(dir + "/bad-images-idx3-ubyte"); }), "header promises"));
    std::ofstream(dir + "/wrong-images-idx3-ubyte", std::ios::binary) << labels;
    CHECK(contains(error_of([&] { read_idx_images(dir + "/wrong-images-idx3-ubyte"); }), "not an IDX file"));
    CHECK(contains(error_of([&] { read_idx_set(dir, "missing"); }), "cannot open"));
}

TEST_CASE("datasets: fortunes directory reader keeps and drops categories") {
    std::string dir = "/tmp/ember_fortunes_test";
    mkdir(dir.c_str(), 0755);
    std::ofstream(dir + "/alpha") << "one\n%\ntwo\n";
    std::ofstream(dir + "/beta") << "three\n";
    std::ofstream(dir + "/alpha.dat") << "index";
    auto all = read_fortunes(dir);
    REQUIRE(all.size() == 2);
    CHECK(all[0].name == "alpha");
    CHECK(all[1].text == "three\n");
    CHECK(read_fortunes(dir, {"alpha"}).size() == 1);
    CHECK(read_fortunes(dir, {}, {"alpha"})[0].name == "alpha");
    CHECK(contains(error_of([] { read_fortunes("/nonexistent/dir"); }), "apt-get install fortunes"));
}
