// vit: train a small Vision Transformer on Fashion-MNIST (or any IDX image set) and evaluate it.
//
//   vit train [--data DIR] [--out DIR] [--steps N] ...   trains, checkpoints, plots, tests
//   vit eval  [--data DIR] [--out DIR]                   test accuracy of a trained model
//   vit finetune [--base DIR] [--method lora|...|full]    adapts it to other classes, new head
#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <iostream>

#include "examples/support/finetune.h"
#include "examples/support/device.h"
#include "examples/support/flags.h"
#include "examples/support/run_dir.h"
#include "examples/support/train_log.h"
#include "models/datasets.h"
#include "models/memory_check.h"
#include "models/vit.h"
#include "nn/bf16_linear.h"
#include "nn/safetensors.h"
#include "nn/init.h"
#include "nn/trainer.h"
#include "tensor/cuda/cuda.h"
#include "tensor/parallel.h"

using namespace ember;
using namespace ember::examples;

namespace {

// Fashion-MNIST's pixel mean and standard deviation: inputs are standardized with them.
constexpr double PIXEL_MEAN = 0.2860, PIXEL_STD = 0.3530;

// The number of classes of a labelled set, K, after checking that its labels are exactly 0..K-1
// each present at least once: a stray label (255 in a 10-class file) would otherwise make a
// K = 256 classifier without a word.
int64_t count_classes(const ImageSet& set, const std::string& where) {
    std::vector<int64_t> labels = set.labels.to_vector<int64_t>();
    EMBER_CHECK(!labels.empty(), "vit: ", where, " holds no images");
    int64_t top = *std::max_element(labels.begin(), labels.end());
    std::vector<int64_t> seen(size_t(top + 1), 0);
    for (int64_t l : labels) ++seen[size_t(l)];
    std::string missing;
    int64_t n_missing = 0;
    for (int64_t c = 0; c <= top; ++c)
        if (seen[size_t(c)] == 0 && n_missing++ < 5) missing += (missing.empty() ? "" : ", ") + std::to_string(c);
    EMBER_CHECK(n_missing == 0, "vit: the labels of ", where, " run up to ", top, " but ", n_missing,
                " classes below it never occur (", missing, n_missing > 5 ? ", ..." : "",
                "); the label file is corrupt, or its classes are not numbered 0..K-1");
    return top + 1;
}

// "all", or "lo-hi" within the data's classes 0..K-1: the examples with labels in [lo, hi],
// relabelled lo -> 0.
ImageSet select_classes(const ImageSet& set, const std::string& classes, int64_t num_classes) {
    if (classes == "all") return set;
    long long lo = -1, hi = -1;
    int used = 0;
    bool parsed = std::sscanf(classes.c_str(), "%lld-%lld%n", &lo, &hi, &used) == 2 && size_t(used) == classes.size();
    EMBER_CHECK(parsed && 0 <= lo && lo <= hi, "vit: --classes must be 'all' or a range lo-hi such as 0-4, not '",
                classes, "'");
    EMBER_CHECK(hi < num_classes, "vit: --classes ", classes, ", but the data's classes are 0-", num_classes - 1);
    return filter_classes(set, lo, hi, true);
}

// The same estimate as gpt train's: weights, gradients and AdamW's moments, plus what one batch
// keeps for backward (per token and layer about 18 C + 3 H floats and the attention scores).
void check_training_fits(const models::ViTConfig& c, int64_t batch) {
    double tokens = double(c.num_patches() + 1);
    double per_image = double(c.layers) * tokens *
                       (18.0 * double(c.dim) + 3.0 * double(c.mlp_hidden()) + 2.0 * double(c.heads) * tokens);
    models::check_fits_in_memory(make_message("vit train: this run (", c.layers, " layers of width ", c.dim,
                                              ", batch ", batch, " of ", c.num_patches(), " patches)"),
                                 16.0 * c.parameter_count() + 4.0 * double(batch) * per_image,
                                 "Use a smaller --batch, --layers or --dim, or a larger --patch");
}

Tensor standardize(const Tensor& images) { return (images - PIXEL_MEAN) * (1.0 / PIXEL_STD); }

// Accuracy over a whole set, in batches, in eval mode.
double accuracy(models::ViT& model, const ImageSet& set, int64_t batch, Device d) {
    NoGradGuard no_grad;
    model.eval();
    int64_t n = set.images.size(0), correct = 0;
    for (int64_t start = 0; start < n; start += batch) {
        int64_t len = std::min(batch, n - start);
        Tensor x = standardize(set.images.narrow(0, start, len)).to(d);
        Tensor predicted = argmax(model.forward(x), -1).to(Device::cpu());
        Tensor truth = set.labels.narrow(0, start, len);
        correct += int64_t(sum(eq(predicted.to(DType::F32), truth.to(DType::F32))).item<double>());
    }
    return double(correct) / double(n);
}

std::shared_ptr<models::ViT> load_model(const std::string& out, Device d) {
    EMBER_CHECK(std::filesystem::exists(out + "/config.json"), "vit: no model in ", out,
                " (config.json is missing); train one first (vit train --out ", out, ")");
    auto model = models::ViT::from_pretrained(out);
    model->to(d);
    return model;
}

int train(int argc, char** argv) {
    Flags f("vit train", "Trains a ViT classifier on an IDX image set and reports test accuracy.");
    std::string& data = f.text("data", FASHION_MNIST_DIR, "folder with train-/t10k- images and labels (IDX, .gz ok)");
    std::string& out = f.text("out", "runs/vit", "folder for the model, checkpoint, metrics.csv and loss.png");
    std::string& device_name = f.text("device", "auto", "cpu, cuda, or auto (the GPU when there is one)");
    const Range positive = Range::positive(), at_least_0 = Range::at_least(0);
    int64_t& layers = f.integer("layers", 4, "transformer layers", positive);
    int64_t& dim = f.integer("dim", 64, "model width", positive);
    int64_t& heads = f.integer("heads", 4, "attention heads", positive);
    int64_t& patch = f.integer("patch", 7, "patch size in pixels", positive);
    int64_t& batch = f.integer("batch", 128, "images per step", positive);
    int64_t& steps = f.integer("steps", 1000, "optimizer steps", positive);
    int64_t& stop_at = f.integer("stop-at", 0, "stop after this step as if interrupted (then --resume)", at_least_0);
    double& lr = f.real("lr", 2e-3, "peak learning rate (AdamW, cosine schedule)", positive);
    int64_t& warmup = f.integer("warmup", 50, "warmup steps", at_least_0);
    double& weight_decay = f.real("weight-decay", 0.05, "AdamW weight decay (not on biases and norms)", at_least_0);
    int64_t& eval_every = f.integer("eval-every", 250, "test accuracy on 2,000 test images every N steps (0: at the end)",
                                    at_least_0);
    int64_t& save_every = f.integer("save-every", 250, "checkpoint every N steps (0: at the end only)", at_least_0);
    bool& resume = f.boolean("resume", false, "continue from --out/checkpoint.safetensors");
    bool& overwrite = f.boolean("overwrite", false, "start over in an --out that holds a run, replacing it");
    bool& skip_nonfinite = f.boolean("skip-nonfinite", false, "skip steps whose loss is NaN or infinite (else: stop)");
    int64_t& seed = f.integer("seed", 1, "seed for weights and batches");
    int64_t& threads = f.integer("threads", 0, "CPU threads (0: all cores)", at_least_0);
    std::string& classes = f.text("classes", "all", "train on labels lo-hi only, relabelled from 0 (e.g. 0-4)");
    bool& tf32 = f.boolean("tf32", true, "TF32 tensor cores for f32 matmuls on CUDA (--tf32=false: full f32)");
    std::string& optim = f.text("optim", "adamw", examples::optimizer_help(false));
    std::string& precision = f.text("precision", "f32", examples::precision_help());
    if (!f.parse(argc, argv, 2)) return 0;
    if (threads > 0) set_num_threads(int(threads));

    // Everything is checked before the folder is touched or the model allocated.
    Device device = pick_device(device_name);
    cuda::set_allow_tf32(tf32 && device.is_cuda());
    const nn::MomentStorage moments = examples::optimizer_moments(optim, "", device.is_cuda());
    const bool bf16_autocast = examples::bf16_autocast_requested("vit train", precision, device.is_cuda());
    ImageSet all_train = read_idx_set(data, "train");
    int64_t num_classes = count_classes(all_train, data + "/train-labels");
    ImageSet train_set = select_classes(all_train, classes, num_classes);
    ImageSet test_set = select_classes(read_idx_set(data, "t10k"), classes, num_classes);
    models::ViTConfig c;
    c.image_size = train_set.images.size(1), c.patch = patch, c.channels = 1;
    c.dim = dim, c.layers = layers, c.heads = heads;
    c.num_labels = count_classes(train_set, data + "/train-labels (--classes " + classes + ")");
    EMBER_CHECK(train_set.images.size(1) == train_set.images.size(2), "vit train: the images of ", data, " are ",
                train_set.images.size(1), "x", train_set.images.size(2), "; this ViT takes square images");
    c.validate();
    check_training_fits(c, batch);
    RunDir run_dir("vit train", out);
    resume = run_dir.start_training(resume, overwrite);
    auto model = std::make_shared<models::ViT>(c, uint64_t(seed));
    model->to(device);
    std::cout << "data: " << data << ", " << train_set.images.size(0) << " train and " << test_set.images.size(0)
              << " test images of " << c.image_size << "x" << c.image_size << ", " << c.num_labels << " classes\n"
              << "model: ViT, " << layers << " layers, width " << dim << ", patch " << patch << ", "
              << model->num_parameters() << " parameters, on " << device << "\n";

    nn::TrainerOptions o;
    o.moments = moments;
    o.bf16_autocast = bf16_autocast;
    o.steps = steps, o.stop_at = stop_at, o.lr = lr, o.warmup = warmup, o.weight_decay = weight_decay;
    o.eval_every = eval_every, o.save_every = save_every, o.min_lr_ratio = 0.05;
    o.checkpoint = run_dir.checkpoint(), o.resume = resume, o.skip_nonfinite = skip_nonfinite;
    nn::Trainer trainer(*model, o, {model->rng}, {{"config", c.to_hf_json()}});

    int64_t n = train_set.images.size(0);
    auto batch_fn = [&](int64_t step, int64_t micro) {
        Generator g(uint64_t(seed) * 1000003u + uint64_t(step) * 131u + uint64_t(micro));
        Tensor idx = randint(0, n, {batch}, g);
        Tensor x = standardize(index_select(train_set.images, 0, idx)).to(device);
        Tensor y = index_select(train_set.labels, 0, idx).to(device);
        return nn::MicroBatch{cross_entropy(model->forward(x), y), batch};
    };
    ImageSet test_slice{test_set.images.narrow(0, 0, std::min<int64_t>(2000, test_set.images.size(0))),
                        test_set.labels.narrow(0, 0, std::min<int64_t>(2000, test_set.images.size(0)))};
    TrainLog log(out + "/metrics.csv", steps, "img", resume);
    auto eval_fn = [&](int64_t step) { log.metric(step, "test_acc_2k", accuracy(*model, test_slice, 500, device)); };
    int64_t done = trainer.run(batch_fn, eval_fn, [&](int64_t step, double loss, int64_t items, double rate) {
        log.step(step, loss, items, rate);
    });
    log.finish();
    model->save_pretrained(out);
    TrainLog::plot(out + "/metrics.csv", out + "/loss.png", "vit on " + data);
    std::cout << "saved " << out << "/model.safetensors after step " << done << "\n"
              << "test accuracy: " << 100 * accuracy(*model, test_set, 500, device) << "% on "
              << test_set.images.size(0) << " test images\n";
    return 0;
}

int eval(int argc, char** argv) {
    Flags f("vit eval", "Test accuracy of the model in --out.");
    std::string& data = f.text("data", FASHION_MNIST_DIR, "folder with t10k- images and labels");
    std::string& out = f.text("out", "runs/vit", "folder holding model.safetensors and config.json");
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    if (!f.parse(argc, argv, 2)) return 0;
    Device device = pick_device(device_name);
    auto model = load_model(out, device);
    ImageSet test_set = read_idx_set(data, "t10k");
    std::cout << "test accuracy: " << 100 * accuracy(*model, test_set, 500, device) << "% on "
              << test_set.images.size(0) << " test images\n";
    return 0;
}

int finetune(int argc, char** argv) {
    Flags f("vit finetune",
            "Adapts a trained ViT to other classes with a new classifier head (trained in full, as peft's "
            "modules_to_save) and a PEFT method on the body, or in full; reports test accuracy before and after.");
    std::string& base = f.text("base", "runs/vit-0-4", "folder of the trained base model (vit train --classes 0-4)");
    std::string& data = f.text("data", FASHION_MNIST_DIR, "folder with train-/t10k- images and labels");
    std::string& classes = f.text("classes", "5-9", "the labels to adapt to, lo-hi");
    std::string& out = f.text("out", "runs/vit-finetune", "folder for the adapter (peft format) or the full model");
    std::string& method_name = f.text("method", "lora", examples::finetune_methods_help());
    int64_t& rank = f.integer("rank", 8, "rank r of the low-rank methods (VeRA: 0 keeps its default 256)",
                              Range::at_least(0));
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    std::string& base_dtype = f.text("base-dtype", "f32", "f32, or bf16: the frozen Linears' products in bf16 "
                                     "(the new classifier stays f32; CPU only, not with full)");
    int64_t& steps = f.integer("steps", 300, "optimizer steps", Range::positive());
    double& lr = f.real("lr", 0, "peak learning rate (0: the method's default)", Range::at_least(0));
    int64_t& batch = f.integer("batch", 128, "images per step", Range::positive());
    int64_t& seed = f.integer("seed", 1, "seed for the adapter, the head and the batches");
    std::string& optim = f.text("optim", "", examples::optimizer_help(true));
    std::string& precision = f.text("precision", "f32", examples::precision_help());
    std::string& results = f.text("results", "", "append a row to this CSV (for the results table)");
    if (!f.parse(argc, argv, 2)) return 0;

    Device device = pick_device(device_name);
    auto model = load_model(base, device);
    ImageSet all_train = read_idx_set(data, "train");
    int64_t num_classes = count_classes(all_train, data + "/train-labels");
    ImageSet train_set = select_classes(all_train, classes, num_classes);
    ImageSet test_set = select_classes(read_idx_set(data, "t10k"), classes, num_classes);
    int64_t labels = count_classes(train_set, data + "/train-labels (--classes " + classes + ")");
    EMBER_CHECK(labels == model->config.num_labels, "vit finetune: the base model has ", model->config.num_labels,
                " outputs but --classes ", classes, " has ", labels, " labels");
    // A new head: the old one scores the old classes. Freshly initialised like the base's was.
    {
        Generator head_gen(uint64_t(seed) + 17);
        nn::trunc_normal_(model->classifier->weight, 0, 0.02, head_gen);
        nn::zeros_(model->classifier->bias);
    }
    const nn::MomentStorage moments = examples::optimizer_moments(optim, method_name, device.is_cuda());
    const bool bf16_autocast = examples::bf16_autocast_requested("vit finetune", precision, device.is_cuda());
    if (examples::bf16_base_requested("vit finetune", base_dtype, method_name, device.is_cuda())) {
        const int cast = nn::cast_linears_to_bf16(*model, [](const std::string& name) { return name == "classifier"; });
        std::cout << "bf16 base: " << cast << " Linears in bf16\n";
    }
    double before = accuracy(*model, test_set, 500, device);

    RunDir run_dir("vit finetune", out);
    examples::FinetuneJob job;
    job.model = model, job.model_type = "vit", job.method = method_name, job.rank = rank;
    job.modules_to_save = {"classifier"}, job.steps = steps, job.lr = lr, job.seed = uint64_t(seed);
    job.out = out, job.unit = "img", job.on_cuda = device.is_cuda(), job.rngs = {model->rng};
    job.moments = moments;
    job.bf16_autocast = bf16_autocast;
    int64_t n = train_set.images.size(0);
    auto batch_fn = [&](int64_t step, int64_t micro) {
        Generator g(uint64_t(seed) * 7919u + uint64_t(step) * 131u + uint64_t(micro));
        Tensor idx = randint(0, n, {batch}, g);
        Tensor x = standardize(index_select(train_set.images, 0, idx)).to(device);
        Tensor y = index_select(train_set.labels, 0, idx).to(device);
        return nn::MicroBatch{cross_entropy(model->forward(x), y), batch};
    };
    examples::FinetuneResult r = examples::run_finetune(
        job, batch_fn, [&] { return accuracy(*model, test_set, 500, device); },
        [&](const std::string& dir) { model->save_pretrained(dir); });
    r.task = "vit/classes-" + classes, r.metric = "test_acc", r.before = before;
    std::cout << "test accuracy on classes " << classes << ": " << 100 * r.before << "% before, " << 100 * r.after
              << "% after " << steps << " steps of " << method_name << "\n";
    if (!results.empty()) examples::append_result(results, r);
    return 0;
}
}  // namespace

int main(int argc, char** argv) {
    std::string command = argc > 1 ? argv[1] : "--help";
    try {
        if (command == "train") return train(argc, argv);
        if (command == "eval") return eval(argc, argv);
        if (command == "finetune") return finetune(argc, argv);
        if (command == "methods") {  // the --method names, one a line (scripts/peft_results.sh reads them)
            for (const std::string& m : examples::finetune_methods()) std::cout << m << "\n";
            return 0;
        }
        const char* usage = "usage: vit train|eval|finetune|methods [flags]   (vit <command> --help lists the flags)\n";
        if (command == "--help" || command == "-h") return std::cout << usage, 0;
        std::cerr << "vit: unknown command '" << command << "'; the commands are train, eval, finetune and methods\n"
                  << usage;
        return 2;
    } catch (const std::exception& e) {
        std::string message = e.what();  // most already start with the command's name
        std::cerr << (message.rfind("vit", 0) == 0 ? "" : "vit: ") << message << "\n";
        return 1;
    }
}
