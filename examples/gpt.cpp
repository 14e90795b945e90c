// gpt: train a small byte-level GPT on text, evaluate it, and sample from it.
//
//   gpt train  [--data DIR|FILE] [--out DIR] [--steps N] ...   trains, checkpoints, plots
//   gpt eval   [--out DIR]                                     validation loss of a trained model
//   gpt sample [--out DIR] [--prompt TEXT] ...                 continues a prompt
//   gpt finetune [--base DIR] [--method lora|...|full] ...      adapts it to the held-out text
//
// Data: by default the fortunes package's cookie files, with one category (songs-poems) held
// out as validation text, so the validation loss measures text the model never saw. Any text
// file works too (its last tenth is held out). Tokens are bytes: loss is in nats per byte.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <cmath>
#include <iostream>

#include "examples/support/finetune.h"
#include "examples/support/device.h"
#include "examples/support/flags.h"
#include "examples/support/run_dir.h"
#include "examples/support/train_log.h"
#include "models/datasets.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/memory_check.h"
#include "models/tokenizer.h"
#include "nn/trainer.h"
#include "tensor/cuda/cuda.h"
#include "tensor/parallel.h"

using namespace ember;
using namespace ember::examples;

namespace {

struct Text {
    std::string train, val, description;
};

bool is_directory(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The cookie files separate fortunes with lines holding just "%": make them blank lines.
std::string without_separators(std::string text) {
    std::string out;
    out.reserve(text.size());
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        out += (line == "%" ? "" : line) + "\n";
        start = end + 1;
    }
    return out;
}

Text load_text(const std::string& data, const std::string& holdout) {
    Text t;
    if (is_directory(data)) {
        std::vector<TextCategory> val;
        try {
            val = read_fortunes(data, {}, {holdout});
        } catch (const Error& e) {
            throw Error(make_message("--holdout ", holdout, ": ", e.what()));
        }
        for (const auto& c : read_fortunes(data, {holdout})) t.train += without_separators(c.text);
        t.val = without_separators(val[0].text);
        t.description = data + " without '" + holdout + "' (validation: '" + holdout + "')";
    } else {
        std::string all = read_text_file(data);
        size_t cut = all.size() / 10 * 9;
        t.train = all.substr(0, cut), t.val = all.substr(cut);
        t.description = data + " (validation: its last tenth)";
    }
    return t;
}

// (B, T+1) windows of bytes starting at the given offsets, as inputs (B, T) and targets (B, T).
std::pair<Tensor, Tensor> windows(const std::string& text, const std::vector<int64_t>& starts, int64_t T, Device d) {
    int64_t B = int64_t(starts.size());
    std::vector<int64_t> x(size_t(B * T)), y(size_t(B * T));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t) {
            x[size_t(b * T + t)] = static_cast<unsigned char>(text[size_t(starts[size_t(b)] + t)]);
            y[size_t(b * T + t)] = static_cast<unsigned char>(text[size_t(starts[size_t(b)] + t + 1)]);
        }
    return {from_vector(x, {B, T}).to(d), from_vector(y, {B, T}).to(d)};
}

// Mean loss over `batches` batches of windows spread evenly over the text (the same every time).
double evaluate(models::GPT& model, const std::string& text, int64_t batches, int64_t B, int64_t T, Device d) {
    EMBER_CHECK(int64_t(text.size()) > T + 1, "gpt: the validation text (", text.size(),
                " bytes) is shorter than one window of ", T + 1);
    NoGradGuard no_grad;
    model.eval();
    int64_t n = batches * B, span = int64_t(text.size()) - T - 1;
    double total = 0;
    for (int64_t i = 0; i < batches; ++i) {
        std::vector<int64_t> starts;
        for (int64_t b = 0; b < B; ++b) starts.push_back((i * B + b) * span / n);
        auto [x, y] = windows(text, starts, T, d);
        total += cross_entropy(model.forward_ids(x), y).item<double>();
    }
    return total / double(batches);
}

// Weights, their gradients and AdamW's two moments (4 x 4 bytes a parameter), and the activations
// one micro-batch keeps for backward: per token and layer about 18 C + 3 H floats plus the
// attention scores, and the logits.
void check_training_fits(const models::GPTConfig& c, int64_t batch) {
    double tokens = double(batch) * double(c.context);
    double per_token = double(c.layers) * (18.0 * double(c.dim) + 3.0 * double(c.mlp_hidden()) +
                                           2.0 * double(c.heads) * double(c.context)) +
                       4.0 * double(c.vocab_size);
    models::check_fits_in_memory(make_message("gpt train: this run (", c.layers, " layers of width ", c.dim,
                                              ", batch ", batch, " x context ", c.context, ")"),
                                 16.0 * c.parameter_count() + 4.0 * tokens * per_token,
                                 "Use a smaller --batch, --context, --layers or --dim");
}

// Evaluation keeps no activations for backward: the weights and one layer's worth, plus logits.
void check_eval_fits(const models::GPTConfig& c, int64_t batch) {
    double tokens = double(batch) * double(c.context);
    double per_token = 18.0 * double(c.dim) + 3.0 * double(c.mlp_hidden()) + 2.0 * double(c.heads) * double(c.context) +
                       2.0 * double(c.vocab_size);
    models::check_fits_in_memory(make_message("gpt: evaluating ", batch, " windows of ", c.context, " at a time"),
                                 4.0 * c.parameter_count() + 4.0 * tokens * per_token, "Use a smaller --batch");
}

struct ModelFlags {
    int64_t &layers, &dim, &heads, &context;
    std::string& style;
    double& dropout;
    models::GPTConfig config() const {
        if (style == "llama") return models::GPTConfig::llama(256, context, dim, layers, heads, heads, 0);
        EMBER_CHECK(style == "gpt2", "gpt: --style must be gpt2 or llama, not '", style, "'");
        models::GPTConfig c = models::GPTConfig::gpt2(256, context, dim, layers, heads);
        c.dropout = dropout;
        return c;
    }
};

int train(int argc, char** argv) {
    Flags f("gpt train", "Trains a byte-level GPT on text and saves it (model.safetensors + config.json) in --out.");
    std::string& data = f.text("data", FORTUNES_DIR, "a fortunes folder, or any text file");
    std::string& holdout = f.text("holdout", "songs-poems", "fortunes category held out for validation");
    std::string& out = f.text("out", "runs/gpt", "folder for the model, checkpoint, metrics.csv and loss.png");
    std::string& device_name = f.text("device", "auto", "cpu, cuda, or auto (the GPU when there is one)");
    const Range positive = Range::positive(), at_least_0 = Range::at_least(0);
    ModelFlags m{f.integer("layers", 4, "transformer blocks", positive), f.integer("dim", 128, "model width", positive),
                 f.integer("heads", 4, "attention heads", positive),
                 f.integer("context", 128, "tokens (bytes) per window", positive),
                 f.text("style", "gpt2", "gpt2 or llama"),
                 f.real("dropout", 0.0, "dropout (gpt2 style)", Range::from_below(0, 1))};
    int64_t& batch = f.integer("batch", 16, "windows per micro-batch", positive);
    int64_t& accumulate = f.integer("accumulate", 1, "micro-batches per optimizer step", positive);
    int64_t& steps = f.integer("steps", 1000, "optimizer steps", positive);
    int64_t& stop_at = f.integer("stop-at", 0, "stop after this step as if interrupted (then --resume)", at_least_0);
    double& lr = f.real("lr", 2e-3, "peak learning rate (AdamW, cosine schedule)", positive);
    int64_t& warmup = f.integer("warmup", 50, "warmup steps", at_least_0);
    double& weight_decay = f.real("weight-decay", 0.1, "AdamW weight decay (not on biases and norms)", at_least_0);
    int64_t& eval_every = f.integer("eval-every", 100, "validation every N steps (0: at the end only)", at_least_0);
    int64_t& eval_batches = f.integer("eval-batches", 8, "validation batches", positive);
    int64_t& save_every = f.integer("save-every", 200, "checkpoint every N steps (0: at the end only)", at_least_0);
    bool& resume = f.boolean("resume", false, "continue from --out/checkpoint.safetensors");
    bool& overwrite = f.boolean("overwrite", false, "start over in an --out that holds a run, replacing it");
    bool& skip_nonfinite = f.boolean("skip-nonfinite", false, "skip steps whose loss is NaN or infinite (else: stop)");
    int64_t& seed = f.integer("seed", 1, "seed for weights and batches");
    int64_t& threads = f.integer("threads", 0, "CPU threads (0: all cores)", at_least_0);
    double& clip = f.real("clip", 1.0, "clip the gradient norm to this before each step (0: no clipping)", at_least_0);
    bool& tf32 = f.boolean("tf32", true, "TF32 tensor cores for f32 matmuls on CUDA (--tf32=false: full f32)");
    std::string& optim = f.text("optim", "adamw", examples::optimizer_help(false));
    std::string& precision = f.text("precision", "f32", examples::precision_help());
    if (!f.parse(argc, argv, 2)) return 0;
    if (threads > 0) set_num_threads(int(threads));

    // Everything is checked before the folder is touched or a tensor allocated.
    Device device = pick_device(device_name);
    cuda::set_allow_tf32(tf32 && device.is_cuda());
    const nn::MomentStorage moments = examples::optimizer_moments(optim, "", device.is_cuda());
    const bool bf16_autocast = examples::bf16_autocast_requested("gpt train", precision, device.is_cuda());
    models::GPTConfig config = m.config();
    config.validate();
    check_training_fits(config, batch);
    Text text = load_text(data, holdout);
    const int64_t T = m.context;
    EMBER_CHECK(int64_t(text.train.size()) > T + 1, "gpt train: the training text (", text.train.size(),
                " bytes) is shorter than one window of ", T + 1, "; use a smaller --context");
    RunDir run_dir("gpt train", out);
    resume = run_dir.start_training(resume, overwrite);

    auto model = std::make_shared<models::GPT>(config, uint64_t(seed));
    model->to(device);
    std::cout << "data: " << text.description << ", " << text.train.size() << " train bytes, " << text.val.size()
              << " validation bytes\nmodel: " << m.style << ", " << m.layers << " layers, width " << m.dim << ", "
              << model->num_parameters() << " parameters, on " << device << "\n";

    nn::TrainerOptions o;
    o.moments = moments;
    o.bf16_autocast = bf16_autocast;
    o.steps = steps, o.stop_at = stop_at, o.accumulate = accumulate, o.lr = lr, o.warmup = warmup;
    o.weight_decay = weight_decay, o.eval_every = eval_every, o.save_every = save_every;
    o.checkpoint = run_dir.checkpoint(), o.resume = resume, o.skip_nonfinite = skip_nonfinite, o.clip = clip;
    nn::Trainer trainer(*model, o, {model->rng}, {{"config", model->config.to_hf_json()}});
    if (device.is_cuda()) cuda::reset_peak();

    // Each micro-batch's windows are a pure function of (seed, step, micro): a resumed run draws
    // exactly the batches the interrupted one would have.
    int64_t span = int64_t(text.train.size()) - T - 1;
    auto batch_fn = [&](int64_t step, int64_t micro) {
        Generator g(uint64_t(seed) * 1000003u + uint64_t(step) * 131u + uint64_t(micro));
        std::vector<int64_t> starts = randint(0, span, {batch}, g).to_vector<int64_t>();
        auto [x, y] = windows(text.train, starts, T, device);
        return nn::MicroBatch{cross_entropy(model->forward_ids(x), y), batch * T};
    };
    TrainLog log(out + "/metrics.csv", steps, "tok", resume);
    auto eval_fn = [&](int64_t step) {
        log.metric(step, "val_loss", evaluate(*model, text.val, eval_batches, batch, T, device));
    };
    // Throughput over every step after the first (which pays for warm-up and allocation).
    std::chrono::steady_clock::time_point first_done, last_done;
    int64_t timed_items = 0, timed_steps = -1;
    int64_t done = trainer.run(batch_fn, eval_fn, [&](int64_t step, double loss, int64_t items, double rate) {
        log.step(step, loss, items, rate);
        last_done = std::chrono::steady_clock::now();
        if (++timed_steps == 0) first_done = last_done;
        else timed_items += items;
    });
    log.finish();
    if (timed_steps > 0) {
        const double seconds = std::chrono::duration<double>(last_done - first_done).count();
        std::cout << "throughput: " << std::lround(double(timed_items) / seconds) << " tok/s over " << timed_steps
                  << " steps after the first (clip " << clip << ", tf32 " << (cuda::allow_tf32() ? "on" : "off") << ")";
        if (device.is_cuda())
            std::cout << ", peak GPU memory " << cuda::allocator_stats().peak_bytes_in_use / (1 << 20) << " MiB";
        std::cout << "\n";
    }
    if (trainer.resumed_from() > 0) std::cout << "resumed from step " << trainer.resumed_from() << "\n";
    model->save_pretrained(out);
    std::cout << "saved " << out << "/model.safetensors after step " << done << "\n";
    TrainLog::plot(out + "/metrics.csv", out + "/loss.png", "gpt on " + text.description);
    return 0;
}

std::shared_ptr<models::GPT> load_trained(const std::string& out, Device device) {
    auto model = models::GPT::from_pretrained(out);
    model->to(device);
    return model;
}

int eval(int argc, char** argv) {
    Flags f("gpt eval", "Validation loss (nats per byte) of the model in --out.");
    std::string& data = f.text("data", FORTUNES_DIR, "a fortunes folder, or any text file");
    std::string& holdout = f.text("holdout", "songs-poems", "fortunes category held out for validation");
    std::string& out = f.text("out", "runs/gpt", "folder holding model.safetensors and config.json");
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    int64_t& batches = f.integer("eval-batches", 32, "validation batches", Range::positive());
    int64_t& batch = f.integer("batch", 16, "windows per batch", Range::positive());
    if (!f.parse(argc, argv, 2)) return 0;
    Device device = pick_device(device_name);
    auto model = load_trained(out, device);
    check_eval_fits(model->config, batch);
    Text text = load_text(data, holdout);
    double loss = evaluate(*model, text.val, batches, batch, model->config.context, device);
    std::cout << "validation loss: " << loss << " nats/byte (" << loss / std::log(2.0) << " bits/byte) on "
              << text.description << "\n";
    return 0;
}

int sample(int argc, char** argv) {
    Flags f("gpt sample", "Continues a prompt with the model in --out.");
    std::string& out = f.text("out", "runs/gpt", "folder holding model.safetensors and config.json "
                                                "(and GPT-2's vocab.json + merges.txt for a Hugging Face GPT-2)");
    std::string& prompt = f.text("prompt", "The ", "text to continue");
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    int64_t& tokens = f.integer("tokens", 200, "bytes to generate", Range::positive());
    double& temperature = f.real("temperature", 0.8, "0: greedy", Range::at_least(0));
    int64_t& top_k = f.integer("top-k", 0, "keep the k most likely bytes (0: all)", Range::at_least(0));
    double& top_p = f.real("top-p", 0.95, "nucleus sampling mass (1: off)", Range::above_up_to(0, 1));
    int64_t& samples = f.integer("samples", 1, "how many continuations", Range::positive());
    int64_t& seed = f.integer("seed", 0, "sampling seed");
    if (!f.parse(argc, argv, 2)) return 0;
    auto model = load_trained(out, pick_device(device_name));
    // A folder with GPT-2's vocab.json and merges.txt (a Hugging Face GPT-2 download) samples
    // through GPT-2's BPE; Ember's own models are byte-level.
    std::function<std::vector<int64_t>(const std::string&)> encode;
    std::function<std::string(const std::vector<int64_t>&)> decode;
    std::shared_ptr<Gpt2Tokenizer> bpe;
    if (std::filesystem::exists(out + "/vocab.json") && std::filesystem::exists(out + "/merges.txt")) {
        bpe = std::make_shared<Gpt2Tokenizer>(out + "/vocab.json", out + "/merges.txt");
        encode = [bpe](const std::string& t) { return bpe->encode(t); };
        decode = [bpe](const std::vector<int64_t>& ids) { return bpe->decode(ids); };
    } else {
        ByteTokenizer bytes;
        encode = [bytes](const std::string& t) { return bytes.encode(t); };
        decode = [bytes](const std::vector<int64_t>& ids) { return bytes.decode(ids); };
    }
    std::vector<int64_t> prompt_ids = encode(prompt);
    for (int64_t i = 0; i < samples; ++i) {
        models::GenerateOptions o;
        o.max_new_tokens = tokens;
        o.temperature = temperature, o.top_k = top_k, o.top_p = top_p, o.seed = uint64_t(seed + i);
        std::cout << "--- sample " << i + 1 << "\n" << prompt << decode(models::generate(*model, prompt_ids, o)) << "\n";
    }
    return 0;
}

int finetune(int argc, char** argv) {
    Flags f("gpt finetune",
            "Adapts a trained GPT to one fortunes category (by default the one its training held out) with a "
            "PEFT method, or in full, and reports the validation loss before and after.");
    std::string& base = f.text("base", "runs/gpt", "folder of the trained base model (gpt train --out)");
    std::string& data = f.text("data", FORTUNES_DIR, "a fortunes folder");
    std::string& domain = f.text("domain", "songs-poems", "the category to adapt to; its last tenth is validation");
    std::string& out = f.text("out", "runs/gpt-finetune", "folder for the adapter (peft format) or the full model");
    std::string& method_name = f.text("method", "lora", examples::finetune_methods_help());
    int64_t& rank = f.integer("rank", 8, "rank r of the low-rank methods (VeRA: 0 keeps its default 256)",
                              Range::at_least(0));
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    std::string& base_dtype = f.text("base-dtype", "f32", "f32, or bf16: the frozen weights' products in bf16 "
                                     "(GPT::cast_to_bf16; CPU only, not with full or methods that train the head)");
    int64_t& steps = f.integer("steps", 200, "optimizer steps", Range::positive());
    double& lr = f.real("lr", 0, "peak learning rate (0: the method's default)", Range::at_least(0));
    int64_t& batch = f.integer("batch", 16, "windows per step", Range::positive());
    int64_t& eval_batches = f.integer("eval-batches", 16, "validation batches", Range::positive());
    int64_t& seed = f.integer("seed", 1, "seed for the adapter and the batches");
    std::string& optim = f.text("optim", "", examples::optimizer_help(true));
    std::string& precision = f.text("precision", "f32", examples::precision_help());
    std::string& results = f.text("results", "", "append a row to this CSV (for the results table)");
    if (!f.parse(argc, argv, 2)) return 0;

    Device device = pick_device(device_name);
    auto model = load_trained(base, device);
    check_eval_fits(model->config, batch);
    const nn::MomentStorage moments = examples::optimizer_moments(optim, method_name, device.is_cuda());
    const bool bf16_autocast = examples::bf16_autocast_requested("gpt finetune", precision, device.is_cuda());
    if (examples::bf16_base_requested("gpt finetune", base_dtype, method_name, device.is_cuda()))
        std::cout << "bf16 base: " << model->cast_to_bf16() << " Linears and the head in bf16\n";
    const int64_t T = model->config.context;
    std::vector<TextCategory> category;
    try {
        category = read_fortunes(data, {}, {domain});
    } catch (const Error& e) {
        throw Error(make_message("gpt finetune: --domain ", domain, ": ", e.what()));
    }
    std::string text = without_separators(category[0].text);
    size_t cut = text.size() / 10 * 9;
    std::string train_text = text.substr(0, cut), val_text = text.substr(cut);
    double before = evaluate(*model, val_text, eval_batches, batch, T, device);

    RunDir run_dir("gpt finetune", out);
    examples::FinetuneJob job;
    job.model = model, job.method = method_name, job.rank = rank, job.steps = steps, job.lr = lr;
    job.model_type = model->config.style == models::GPTConfig::Style::GPT2 ? "gpt2" : "llama";
    job.seed = uint64_t(seed), job.out = out, job.unit = "tok", job.on_cuda = device.is_cuda(), job.rngs = {model->rng};
    job.moments = moments;
    job.bf16_autocast = bf16_autocast;
    int64_t span = int64_t(train_text.size()) - T - 1;
    auto batch_fn = [&](int64_t step, int64_t micro) {
        Generator g(uint64_t(seed) * 7919u + uint64_t(step) * 131u + uint64_t(micro));
        // Windows leave room for a prompt method's virtual tokens (token_context() <= T).
        const int64_t Tw = model->token_context();
        auto [x, y] = windows(train_text, randint(0, span, {batch}, g).to_vector<int64_t>(), Tw, device);
        return nn::MicroBatch{cross_entropy(model->forward_ids(x), y), batch * Tw};
    };
    examples::FinetuneResult r = examples::run_finetune(
        job, batch_fn, [&] { return evaluate(*model, val_text, eval_batches, batch, model->token_context(), device); },
        [&](const std::string& dir) { model->save_pretrained(dir); });
    r.task = "gpt/" + domain, r.metric = "val_loss", r.before = before;
    std::cout << "validation loss on " << domain << ": " << r.before << " before, " << r.after << " after " << steps
              << " steps of " << method_name << "\n";
    if (!results.empty()) examples::append_result(results, r);
    return 0;
}
}  // namespace

int main(int argc, char** argv) {
    std::string command = argc > 1 ? argv[1] : "--help";
    try {
        if (command == "train") return train(argc, argv);
        if (command == "eval") return eval(argc, argv);
        if (command == "sample") return sample(argc, argv);
        if (command == "finetune") return finetune(argc, argv);
        if (command == "methods") {  // the --method names, one a line (scripts/peft_results.sh reads them)
            for (const std::string& m : examples::finetune_methods()) std::cout << m << "\n";
            return 0;
        }
        const char* usage = "usage: gpt train|eval|sample|finetune|methods [flags]   (gpt <command> --help lists the flags)\n";
        if (command == "--help" || command == "-h") return std::cout << usage, 0;
        std::cerr << "gpt: unknown command '" << command << "'; the commands are train, eval, sample, finetune and methods\n"
                  << usage;
        return 2;
    } catch (const std::exception& e) {
        std::string message = e.what();  // most already start with the command's name
        std::cerr << (message.rfind("gpt", 0) == 0 ? "" : "gpt: ") << message << "\n";
        return 1;
    }
}
