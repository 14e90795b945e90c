// longctx: context extension with LongLoRA on a small LLaMA-style byte-level GPT.
//
//   longctx [--data FILE] [--base-steps N] [--ext-steps N] [--passkey-share P] [--ext-min-depth D]
//           [--rope linear|yarn|both] [--save-base DIR] [--load-base DIR] [--seed S] [--threads N]
//
// 1. Trains a LLaMA-style GPT (RoPE, RMSNorm, SwiGLU; 4 layers x 128, 4 heads) from scratch at
//    context 256 on the King James Bible read as whole books (Debian's bible-kjv, dumped by
//    scripts/longctx.sh; every 8th book held out for evaluation). --save-base keeps it in a
//    folder and --load-base starts from one, so extensions can be compared without retraining.
// 2. Extends it to context 1024, factor 4, in each of two ways of rescaling RoPE
//    (models/context.h): linear position interpolation, LongLoRA's, and YaRN's "NTK-by-parts".
//    For each it fine-tunes two copies at 1024 for the same steps on the same batches: LongLoRA
//    (LoRA r 8 on q, k, v, o + embeddings + norms, S2-Attn with groups of 256) and the same
//    trainables with full attention ("full-attention LoRA"), so within a way the only
//    difference is the attention pattern in training.
// 3. Evaluates as LongLoRA does: perplexity (per byte) on held-out books at 256 / 512 / 1024 for
//    the base as trained (no interpolation: RoPE positions past 256 it never saw), the base
//    rescaled but not trained, LongLoRA and full-attention LoRA (and LongLoRA at 1024 with its
//    training-time S2-Attn kept on, to tell the pattern's effect from the length's); and passkey
//    retrieval: a random 5-digit key hidden at a depth in filler text, then "What is the pass
//    key? The pass key is"; a trial counts when every one of the 5 digits is the model's argmax
//    given the digits before it (what greedy decoding would produce).
// A share of the training sequences (--passkey-share, at both stages) are such passkey
// documents, so the small model can learn to copy at all (at 256, in the base training); the
// question is whether it still finds the key far back after the extension to 1024. The defaults
// (half of the sequences, 3000 base steps, 800 extension steps; ~12 minutes on 2 cores) are the
// smallest run seen to teach the base the passkey at 256 and to bring the extensions' perplexity
// back to the base's. What they show (docs/LONGCTX-RESULTS.md): linear interpolation squeezes the
// distance between neighbouring bytes 4x and the model no longer copies at any length; with YaRN
// full-attention LoRA retrieves the key at 1024, and LongLoRA's S2-Attn training does not.
// --ext-min-depth D puts the extension's keys at depths [D, 1) only: with D = 0.82 every key lies
// in the question's S2 group (the last 256 bytes), a diagnostic of what S2-Attn lets training see.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "models/context.h"
#include "models/gpt.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "peft/longlora.h"
#include "peft/peft_model.h"
#include "tensor/parallel.h"

using namespace ember;

namespace {

struct Options {
    std::string data = "build/data/kjv.txt";
    int base_steps = 3000, ext_steps = 800;
    double passkey_share = 0.5;  // of the training sequences, at both stages
    double ext_min_depth = 0;    // the extension's passkey documents hide the key at depths [D, 1)
    std::vector<nn::RopeScaling::Type> ropes = {nn::RopeScaling::Type::Linear, nn::RopeScaling::Type::Yarn};
    std::string save_base, load_base;  // a folder for the trained base (Hugging Face layout)
    uint64_t seed = 1;
    int threads = 2;
};

std::vector<nn::RopeScaling::Type> ropes_of(const std::string& v) {
    using Type = nn::RopeScaling::Type;
    if (v == "linear") return {Type::Linear};
    if (v == "yarn") return {Type::Yarn};
    if (v == "both") return {Type::Linear, Type::Yarn};
    throw Error(make_message("longctx: --rope ", v, " is not one of linear, yarn, both"));
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            EMBER_CHECK(i + 1 < argc, "longctx: ", a, " needs a value");
            return argv[++i];
        };
        if (a == "--data") o.data = next();
        else if (a == "--base-steps") o.base_steps = std::stoi(next());
        else if (a == "--ext-steps") o.ext_steps = std::stoi(next());
        else if (a == "--passkey-share") o.passkey_share = std::stod(next());
        else if (a == "--ext-min-depth") o.ext_min_depth = std::stod(next());
        else if (a == "--seed") o.seed = std::stoull(next());
        else if (a == "--save-base") o.save_base = next();
        else if (a == "--load-base") o.load_base = next();
        else if (a == "--rope") o.ropes = ropes_of(next());
        else if (a == "--threads") o.threads = std::stoi(next());
        else throw Error(make_message("longctx: unknown option ", a,
                                      "; use --data FILE --base-steps N --ext-steps N --passkey-share P --ext-min-depth D "
                                      "--rope linear|yarn|both "
                                      "--save-base DIR --load-base DIR --seed S --threads N"));
    }
    return o;
}

// Books: the dump has a line "<Book> 1" before each book's first chapter.
std::vector<std::string> read_books(const std::string& path) {
    std::ifstream f(path);
    EMBER_CHECK(f, "longctx: cannot open ", path, "; run `make longctx`, which dumps the bible-kjv text there");
    std::vector<std::string> books;
    std::string line, book;
    std::string prev = "";
    while (std::getline(f, line)) {
        const bool header = line.size() > 2 && line.compare(line.size() - 2, 2, " 1") == 0 && prev.empty() &&
                            line.find(':') == std::string::npos && line[0] != ' ';
        if (header && book.find_first_not_of(" \n") != std::string::npos) books.push_back(book), book.clear();
        book += line + "\n";
        prev = line;
    }
    if (!book.empty()) books.push_back(book);
    EMBER_CHECK(books.size() >= 16, "longctx: ", path, " holds ", books.size(), " books; expected the whole KJV (66)");
    return books;
}

struct Data {
    std::vector<std::string> train, eval;
    double passkey_share = 0;  // of the training sequences
    double min_depth = 0;      // of the key in a training passkey document
};

struct Rng {  // splitmix64: the example's own draws, independent of the model's generators
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }
};

// `n` bytes of a random book that is at least n long.
std::string window(const std::vector<std::string>& books, int64_t n, Rng& rng) {
    for (;;) {
        const std::string& b = books[size_t(rng.below(int64_t(books.size())))];
        if (int64_t(b.size()) < n) continue;
        return b.substr(size_t(rng.below(int64_t(b.size()) - n + 1)), size_t(n));
    }
}

const std::string QUESTION = "\nWhat is the pass key? The pass key is ";

// A passkey document of exactly n bytes: filler, the key sentence at `depth` (0..1) of the
// filler, the question, the 5 digits. Returns the text; key_at is where the answer starts.
std::string passkey_doc(const std::vector<std::string>& books, int64_t n, double depth, Rng& rng,
                        std::string* key_out = nullptr) {
    char key[6];
    std::snprintf(key, sizeof key, "%05d", int(rng.below(100000)));
    const std::string needle = " The pass key is " + std::string(key) + ". Remember it. " + key + " is the pass key. ";
    const int64_t filler = n - int64_t(needle.size() + QUESTION.size() + 5);
    std::string f = window(books, filler, rng);
    const size_t at = size_t(double(filler) * depth);
    if (key_out) *key_out = key;
    return f.substr(0, at) + needle + f.substr(at) + QUESTION + key;
}

Tensor ids_of(const std::vector<std::string>& texts) {
    const int64_t B = int64_t(texts.size()), T = int64_t(texts[0].size());
    std::vector<int64_t> v;
    v.reserve(size_t(B * T));
    for (const std::string& t : texts)
        for (unsigned char c : t) v.push_back(int64_t(c));
    return from_vector(v, {B, T});
}

// One batch of B sequences of T + 1 bytes: a share d.passkey_share passkey documents, the key at a
// random depth in [d.min_depth, 1).
std::vector<std::string> batch(const Data& d, int64_t B, int64_t T, Rng& rng) {
    std::vector<std::string> out;
    for (int64_t b = 0; b < B; ++b)
        out.push_back(double(rng.below(1000)) < 1000 * d.passkey_share
                          ? passkey_doc(d.train, T + 1, d.min_depth + (1 - d.min_depth) * double(rng.below(1000)) / 1000.0, rng)
                          : window(d.train, T + 1, rng));
    return out;
}

double train(models::GPT& gpt, const Data& d, int steps, int64_t B, int64_t T, double lr, Rng& rng,
             const char* what) {
    std::vector<Tensor> params;
    for (const Tensor& p : gpt.parameters())
        if (p.requires_grad()) params.push_back(p);
    nn::AdamWOptions o;
    o.lr = lr, o.weight_decay = 0;
    nn::AdamW opt(params, o);
    gpt.train();
    auto t0 = std::chrono::steady_clock::now();
    double last = 0;
    for (int s = 0; s < steps; ++s) {
        // linear warm-up over the first tenth, then cosine to a tenth of lr
        const double warm = std::max(1, steps / 10);
        const double frac = double(s) / double(std::max(1, steps - 1));
        opt.set_lr_factor(s < warm ? double(s + 1) / warm : 0.1 + 0.9 * 0.5 * (1 + std::cos(std::acos(-1.0) * frac)));
        Tensor ids = ids_of(batch(d, B, T, rng));
        Tensor inp = ids.slice(1, 0, T).contiguous(), tgt = ids.slice(1, 1, T + 1).contiguous();
        opt.zero_grad();
        Tensor loss = cross_entropy(gpt.forward_ids(inp), tgt);
        loss.backward();
        opt.step();
        last = loss.item<double>();
        if (s % 20 == 0 || s == steps - 1) {
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::printf("  %s step %4d/%d  loss %.3f nats/byte  %.0f s\n", what, s + 1, steps, last, sec);
            std::fflush(stdout);
        }
    }
    return last;
}

// Perplexity per byte on n held-out windows of T bytes (drawn from T alone, so every model
// reads the same windows at a length). keep_s2_attn evaluates in training mode, the only mode
// in which a LongLoRA model's S2-Attn is on; with dropout 0 nothing else differs.
double perplexity(models::GPT& gpt, const Data& d, int64_t T, int n, bool keep_s2_attn = false) {
    NoGradGuard no_grad;
    if (keep_s2_attn) {
        EMBER_CHECK(gpt.config.dropout == 0, "longctx: evaluating with S2-Attn kept on needs dropout 0, got ",
                    gpt.config.dropout);
        gpt.train();
    } else {
        gpt.eval();
    }
    Rng rng{777 + uint64_t(T)};
    double total = 0;
    for (int i = 0; i < n; ++i) {
        Tensor ids = ids_of({window(d.eval, T + 1, rng)});
        Tensor inp = ids.slice(1, 0, T).contiguous(), tgt = ids.slice(1, 1, T + 1).contiguous();
        total += cross_entropy(gpt.forward_ids(inp), tgt).item<double>();
    }
    return std::exp(total / n);
}

// Passkey accuracy over `trials` documents of T bytes with the key at `depth` (the same
// documents for every model at a length).
double passkey(models::GPT& gpt, const Data& d, int64_t T, double depth, int trials) {
    NoGradGuard no_grad;
    gpt.eval();
    Rng rng{999 + uint64_t(T)};
    int right = 0;
    for (int i = 0; i < trials; ++i) {
        std::string key;
        std::string doc = passkey_doc(d.eval, T + 1, depth, rng, &key);
        Tensor ids = ids_of({doc});
        Tensor logits = gpt.forward_ids(ids.slice(1, 0, T).contiguous());  // (1, T, 256)
        std::vector<float> v = logits.slice(1, T - 5, T).contiguous().to_vector<float>();
        bool ok = true;
        for (int c = 0; c < 5; ++c) {
            const float* row = v.data() + c * 256;
            ok = ok && int64_t(std::max_element(row, row + 256) - row) == int64_t((unsigned char)key[size_t(c)]);
        }
        right += ok;
    }
    return double(right) / trials;
}

std::shared_ptr<models::GPT> copy_of(const models::GPT& base, uint64_t seed) {
    auto g = std::make_shared<models::GPT>(base.config, seed);
    g->load_hf_state_dict(base.hf_state_dict());
    return g;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options o = parse(argc, argv);
        set_num_threads(o.threads);
        std::vector<std::string> books = read_books(o.data);
        EMBER_CHECK(o.passkey_share >= 0 && o.passkey_share <= 1, "longctx: --passkey-share must lie in [0, 1], got ",
                    o.passkey_share);
        EMBER_CHECK(o.ext_min_depth >= 0 && o.ext_min_depth < 1, "longctx: --ext-min-depth must lie in [0, 1), got ",
                    o.ext_min_depth);
        Data d;
        d.passkey_share = o.passkey_share;
        for (size_t i = 0; i < books.size(); ++i) (i % 8 == 7 ? d.eval : d.train).push_back(books[i]);
        std::printf("longctx: %zu books (%zu train, %zu held out), seed %llu, passkey share %.2f\n", books.size(),
                    d.train.size(), d.eval.size(), (unsigned long long)o.seed, o.passkey_share);
        Rng rng{o.seed};
        auto t0 = std::chrono::steady_clock::now();

        models::GPTConfig cfg = models::GPTConfig::llama(256, 256, 128, 4, 4, 4, 352);
        cfg.tie_embeddings = true;
        std::printf("base: LLaMA-style, 4 x 128, 4 heads, context 256, %.2f M parameters\n",
                    cfg.parameter_count() / 1e6);
        std::shared_ptr<models::GPT> base;
        if (o.load_base.empty()) {
            base = std::make_shared<models::GPT>(cfg, o.seed);
            train(*base, d, o.base_steps, 8, 256, 3e-3, rng, "base@256");
        } else {
            base = models::GPT::from_pretrained(o.load_base, o.seed);
            EMBER_CHECK(base->config.to_hf_json() == cfg.to_hf_json(), "longctx: ", o.load_base,
                        "/config.json is not the base longctx trains (4 x 128 LLaMA-style, bytes, context 256); "
                        "give --load-base a folder written by --save-base");
        }
        if (!o.save_base.empty()) base->save_pretrained(o.save_base);
        d.min_depth = o.ext_min_depth;  // the base trained with keys at every depth
        if (d.min_depth > 0) std::printf("extension passkey documents: keys at depths %.2f-1\n", d.min_depth);

        struct Run {
            std::string name;
            std::shared_ptr<models::GPT> gpt;
        };
        // The base as trained: only its context raised, RoPE angles unscaled (extrapolation).
        auto plain = copy_of(*base, o.seed);
        plain->config.context = 1024;
        std::vector<Run> runs = {{"base (no interpolation)", plain}};
        std::vector<Run> longloras;  // evaluated again with S2-Attn kept on
        for (nn::RopeScaling::Type how : o.ropes) {
            const std::string way = how == nn::RopeScaling::Type::Linear ? "linear" : "YaRN";
            auto only = copy_of(*base, o.seed);
            models::interpolate_positions(*only, 1024, how);
            runs.push_back({"base, " + way + " x4 only", only});
            for (bool s2 : {true, false}) {
                auto g = copy_of(*base, o.seed);
                models::interpolate_positions(*g, 1024, how);
                peft::LongLoraConfig lc;
                lc.use_s2_attn = s2;
                lc.target_modules = peft::ModuleSelector{"q_proj", "k_proj", "v_proj", "o_proj"};
                peft::PeftModel pm(g, lc, "default", o.seed, "llama");
                const std::string name = (s2 ? "LongLoRA, " : "full-attention LoRA, ") + way;
                std::printf("%s: %s\n", name.c_str(), pm.trainable_parameters_line().c_str());
                Rng ext{o.seed + 100};  // every extension sees the same batches
                train(*g, d, o.ext_steps, 2, 1024, 2e-3, ext, name.c_str());
                runs.push_back({name, g});
                if (s2) longloras.push_back({name + ", S2 kept", g});
            }
        }

        std::printf("\nperplexity per byte on held-out books (16 windows each)\n");
        std::printf("%-34s %8s %8s %8s\n", "model", "256", "512", "1024");
        for (Run& r : runs) {
            std::printf("%-34s", r.name.c_str());
            for (int64_t T : {256, 512, 1024}) std::printf(" %8.3f", perplexity(*r.gpt, d, T, 16));
            std::printf("\n");
            std::fflush(stdout);
        }
        // LongLoRA evaluated with the attention it trained with, at 1024 only (groups of 256, as
        // in training): whether its loss at 1024 under full attention comes from distances
        // further than a group, which S2-Attn never let it attend over.
        for (Run& r : longloras)
            std::printf("%-34s %8s %8s %8.3f\n", r.name.c_str(), "-", "-", perplexity(*r.gpt, d, 1024, 16, true));
        const std::vector<double> depths = {0.1, 0.3, 0.5, 0.7, 0.9};
        std::printf("\npasskey retrieval accuracy (8 trials per cell), by length and depth of the key\n");
        std::printf("%-34s %6s", "model", "length");
        for (double dp : depths) std::printf(" %6.0f%%", dp * 100);
        std::printf("\n");
        for (Run& r : runs)
            for (int64_t T : {256, 512, 1024}) {
                std::printf("%-34s %6lld", r.name.c_str(), (long long)T);
                for (double dp : depths) std::printf(" %7.2f", passkey(*r.gpt, d, T, dp, 8));
                std::printf("\n");
                std::fflush(stdout);
            }
        std::printf("\ntotal %.0f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
