// Bad input and bad luck at the library's edges: the atomic writer, config validation with
// messages that name the key, non-finite training steps, sampling ranges, the IDX and fortunes
// readers, and the Hugging Face folders of ViT and adapter configs as peft writes them.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/datasets.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/vit.h"
#include "nn/atomic_file.h"
#include "nn/layers.h"
#include "nn/trainer.h"
#include "peft/lora.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
    std::string path;
    ScratchDir() {
        char tmpl[] = "/tmp/ember-hardening-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~ScratchDir() { fs::remove_all(path); }
    std::string file(const std::string& name) const { return path + "/" + name; }
    size_t count() const { return size_t(std::distance(fs::directory_iterator(path), fs::directory_iterator())); }
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("atomic writer: replaces on commit, leaves the old file and no temporary on failure") {
    ScratchDir dir;
    const std::string path = dir.file("config.json");
    nn::write_file_atomically(path, "old");
    {
        nn::AtomicFile f(path);
        f.write("new but never committed");
    }  // destroyed without commit(): as when an error unwinds through a save
    CHECK(slurp(path) == "old");
    CHECK(dir.count() == 1);
    nn::write_file_atomically(path, "new");
    CHECK(slurp(path) == "new");

    std::string e = error_of([&] { nn::write_file_atomically(dir.file("missing/config.json"), "x"); });
    CHECK(contains(e, "cannot write " + dir.file("missing/config.json")));
    CHECK(contains(e, "No such file or directory"));
}

TEST_CASE("append file: each append lands at once; truncate starts over") {
    ScratchDir dir;
    const std::string path = dir.file("metrics.csv");
    {
        nn::AppendFile f(path, true);
        f.append("a\n");
        CHECK(slurp(path) == "a\n");  // before close: a kill -9 now keeps the row
        f.append("b\n");
    }
    { nn::AppendFile(path, false).append("c\n"); }
    CHECK(slurp(path) == "a\nb\nc\n");
    { nn::AppendFile f(path, true); }
    CHECK(slurp(path).empty());
}

TEST_CASE("stale temporaries: those of dead processes go, those of live ones stay") {
    ScratchDir dir;
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    REQUIRE(dead > 0);
    waitpid(dead, nullptr, 0);
    const std::string stale = "checkpoint.safetensors.tmp." + std::to_string(dead);
    const std::string live = "model.safetensors.tmp." + std::to_string(getppid());
    const std::string own = "config.json.tmp." + std::to_string(getpid());
    for (const auto& name : {stale, live, own, std::string("notes.tmp.txt")}) std::ofstream(dir.file(name)) << "x";
    CHECK(nn::remove_stale_temporaries(dir.path) == std::vector<std::string>{stale});
    CHECK(!fs::exists(dir.file(stale)));
    CHECK(fs::exists(dir.file(live)));
    CHECK(fs::exists(dir.file(own)));
    CHECK(fs::exists(dir.file("notes.tmp.txt")));
}

TEST_CASE("GPT and ViT configs: zeros, divisibility and ranges refused before allocation") {
    auto gpt = models::GPTConfig::gpt2(256, 16, 16, 1, 2);
    auto bad = gpt;
    bad.heads = 0;
    CHECK(contains(error_of([&] { models::GPT(bad, 0); }), "heads (n_head) must be positive, not 0"));
    bad = gpt, bad.heads = 3;
    CHECK(contains(error_of([&] { bad.validate(); }), "dim 16 is not a multiple of heads 3"));
    bad = gpt, bad.norm_eps = -1;
    CHECK(contains(error_of([&] { bad.validate(); }), "norm epsilon must be a positive number, not -1"));
    bad = gpt, bad.layers = 1000000000;
    CHECK(contains(error_of([&] { models::GPT(bad, 0); }), "GB; the machine has"));

    models::ViTConfig vit;
    vit.patch = 0;
    CHECK(contains(error_of([&] { models::ViT(vit, 0); }), "patch (patch_size) must be positive, not 0"));
    vit.patch = 5;
    CHECK(contains(error_of([&] { vit.validate(); }), "image size 28 is not a multiple of the patch size 5"));
}

TEST_CASE("config.json: a key of the wrong type, an unknown activation and bad JSON name what is wrong") {
    nlohmann::json j = nlohmann::json::parse(models::GPTConfig::gpt2(256, 16, 16, 1, 2).to_hf_json());
    j["n_head"] = "2";
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(j.dump()); }),
                   "\"n_head\" must be an integer, not \"2\" (a string)"));
    j["n_head"] = 2, j["layer_norm_epsilon"] = "small";
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(j.dump()); }), "\"layer_norm_epsilon\" must be a number"));
    j["layer_norm_epsilon"] = 1e-5, j["activation_function"] = "relu";
    CHECK(contains(error_of([&] { models::GPTConfig::from_hf_json(j.dump()); }),
                   "\"activation_function\" \"relu\" is not supported"));
    j["activation_function"] = "gelu_new", j["n_inner"] = nullptr;
    CHECK(models::GPTConfig::from_hf_json(j.dump()).heads == 2);  // null counts as absent

    ScratchDir dir;
    std::ofstream(dir.file("config.json")) << "{\"n_embd\": ";
    std::string e = error_of([&] { models::GPT::from_pretrained(dir.path); });
    CHECK(contains(e, dir.file("config.json")));
    CHECK(contains(e, "not valid JSON"));
}

TEST_CASE("ViT::from_pretrained loads what save_pretrained wrote") {
    models::ViTConfig c;
    c.image_size = 8, c.patch = 4, c.dim = 8, c.layers = 1, c.heads = 2, c.num_labels = 3;
    models::ViT model(c, 5);
    ScratchDir dir;
    const std::string folder = dir.file("new/vit");  // created on save, parents included
    model.save_pretrained(folder);
    auto loaded = models::ViT::from_pretrained(folder);
    CHECK(loaded->config.num_labels == 3);
    model.eval(), loaded->eval();
    NoGradGuard no_grad;
    Tensor x = rand({2, 8, 8}, *std::make_shared<Generator>(3));
    CHECK(max_abs_diff(model.forward(x), loaded->forward(x)) == 0);
}

TEST_CASE("save_pretrained creates its folder, and names the folder it cannot create") {
    models::GPT model(models::GPTConfig::llama(16, 8, 8, 1, 2, 2, 16), 5);
    ScratchDir dir;
    const std::string folder = dir.file("a/b");
    model.save_pretrained(folder);
    auto loaded = models::GPT::from_pretrained(folder);
    NoGradGuard no_grad;
    Tensor ids = from_vector(std::vector<int64_t>{1, 2, 3}, {1, 3});
    CHECK(max_abs_diff(model.forward_ids(ids), loaded->forward_ids(ids)) == 0);

    std::ofstream(dir.file("plain")) << "a file, not a folder";
    std::string e = error_of([&] { model.save_pretrained(dir.file("plain/model")); });
    CHECK(contains(e, "GPT::save_pretrained: cannot create the folder " + dir.file("plain/model")));
}

TEST_CASE("Trainer: a non-finite loss stops the run naming the step, or is skipped on request") {
    Generator gen(1);
    nn::Linear model(2, 1, true, gen);
    Tensor x = from_vector(std::vector<float>{1, 2}, {1, 2});
    auto batch = [&](int64_t step, int64_t) {
        Tensor loss = mean(model.forward(x));
        return nn::MicroBatch{step == 2 ? loss * std::numeric_limits<double>::quiet_NaN() : loss, 1};
    };
    nn::TrainerOptions o;
    o.steps = 3, o.lr = 1e-2;
    {
        nn::Trainer trainer(model, o);
        CHECK(contains(error_of([&] { trainer.run(batch); }), "the loss at step 2 is nan"));
    }
    o.skip_nonfinite = true;
    nn::Trainer trainer(model, o);
    CHECK(trainer.run(batch) == 3);
    CHECK(trainer.skipped_steps() == 1);

    o.lr = std::numeric_limits<double>::quiet_NaN();
    CHECK(contains(error_of([&] { nn::Trainer(model, o); }), "learning rate must be a positive number"));
}

TEST_CASE("generate: sampling settings out of range are refused") {
    models::GenerateOptions o;
    o.temperature = -1;
    CHECK(contains(error_of([&] { o.validate(); }), "temperature must be a number >= 0"));
    o = {}, o.top_p = std::numeric_limits<double>::quiet_NaN();
    CHECK(contains(error_of([&] { o.validate(); }), "top_p must be in (0, 1]"));
    o = {}, o.top_k = -5;
    CHECK(contains(error_of([&] { o.validate(); }), "top_k must be >= 0"));
    o = {}, o.max_new_tokens = -1;
    CHECK(contains(error_of([&] { o.validate(); }), "max_new_tokens must be >= 0"));
}

TEST_CASE("IDX: dims of 0xFFFFFFFF are refused with the promise in full, not a negative count") {
    std::string bytes = {0, 0, 8, 3};
    bytes += std::string(12, char(0xFF));
    std::string e = error_of([&] { parse_idx_images(bytes, "x.idx"); });
    CHECK(contains(e, "x.idx holds 16 bytes but its header promises 4294967295 x 4294967295 x 4294967295 values"));
    CHECK(!contains(e, "-"));
    // Zero images of 2^32 - 1 by 2^32 - 1 pixels: no values to check, but strides past int64
    // (found by fuzz_idx).
    bytes = {0, 0, 8, 3, 0, 0, 0, 0};
    bytes += std::string(8, char(0xFF));
    CHECK(contains(error_of([&] { parse_idx_images(bytes, "x.idx"); }), "include one of 2^31 or more"));
}

TEST_CASE("read_fortunes: a missing category is named, with the ones there are") {
    ScratchDir dir;
    std::ofstream(dir.file("alpha")) << "a\n%\n";
    std::ofstream(dir.file("beta")) << "b\n%\n";
    CHECK(contains(error_of([&] { read_fortunes(dir.path, {}, {"gamma"}); }),
                   "no category 'gamma' in " + dir.path + "; it has: alpha, beta"));
}

TEST_CASE("adapter_config.json: lora_alpha is an integer when it is one") {
    peft::LoraConfig c;
    c.lora_alpha = 16;
    CHECK(nlohmann::json::parse(c.to_json())["lora_alpha"].is_number_integer());
    c.lora_alpha = 0.5;
    CHECK(nlohmann::json::parse(c.to_json())["lora_alpha"] == 0.5);
    CHECK(contains(error_of([&] { peft::config_from_json(R"({"peft_type": "LORA", "r": "eight"})"); }),
                   "a key holds a value of the wrong type"));
}
