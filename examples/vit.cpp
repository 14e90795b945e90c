// vit: train a small Vision Transformer on Fashion-MNIST (or any IDX image set) and evaluate it.
//
//   vit train [--data DIR] [--out DIR] [--steps N] ...   trains, checkpoints, plots, tests
//   vit eval  [--data DIR] [--out DIR]                   test accuracy of a trained model
//   vit finetune [--base DIR] [--method lora|...|full]    adapts it to other classes, new head
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "examples/support/finetune.h"
#include "examples/support/device.h"
#include "examples/support/flags.h"
#include "examples/support/train_log.h"
#include "models/datasets.h"
#include "models/vit.h"
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

// "all", or "lo-hi": the examples with labels in [lo, hi], relabelled lo -> 0.
ImageSet select_classes(const ImageSet& set, const std::string& classes) {
    if (classes == "all") return set;
    size_t dash = classes.find('-');
    EMBER_CHECK(dash != std::string::npos, "vit: --classes must be 'all' or 'lo-hi', not '", classes, "'");
    int64_t lo = std::stoll(classes.substr(0, dash)), hi = std::stoll(classes.substr(dash + 1));
    EMBER_CHECK(0 <= lo && lo <= hi, "vit: --classes ", classes, " is not a range lo-hi");
    return filter_classes(set, lo, hi, true);
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

void save_model(models::ViT& model, const std::string& out) {
    nn::save_safetensors(out + "/model.safetensors", model.state_dict(), {{"format", "pt"}});
    std::ofstream(out + "/config.json") << model.config.to_hf_json() << "\n";
}

std::shared_ptr<models::ViT> load_model(const std::string& out, Device d) {
    std::ifstream in(out + "/config.json");
    EMBER_CHECK(in.good(), "vit: cannot open ", out, "/config.json; train a model first (vit train --out ", out, ")");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto model = std::make_shared<models::ViT>(models::ViTConfig::from_hf_json(text), 0);
    model->load_state_dict(nn::load_safetensors(out + "/model.safetensors").tensors);
    model->to(d);
    return model;
}

int train(int argc, char** argv) {
    Flags f("vit train", "Trains a ViT classifier on an IDX image set and reports test accuracy.");
    std::string& data = f.text("data", FASHION_MNIST_DIR, "folder with train-/t10k- images and labels (IDX, .gz ok)");
    std::string& out = f.text("out", "runs/vit", "folder for the model, checkpoint, metrics.csv and loss.png");
    std::string& device_name = f.text("device", "auto", "cpu, cuda, or auto (the GPU when there is one)");
    int64_t& layers = f.integer("layers", 4, "transformer layers");
    int64_t& dim = f.integer("dim", 64, "model width");
    int64_t& heads = f.integer("heads", 4, "attention heads");
    int64_t& patch = f.integer("patch", 7, "patch size in pixels");
    int64_t& batch = f.integer("batch", 128, "images per step");
    int64_t& steps = f.integer("steps", 1000, "optimizer steps");
    int64_t& stop_at = f.integer("stop-at", 0, "stop after this step as if interrupted (then --resume)");
    double& lr = f.real("lr", 2e-3, "peak learning rate (AdamW, cosine schedule)");
    int64_t& warmup = f.integer("warmup", 50, "warmup steps");
    double& weight_decay = f.real("weight-decay", 0.05, "AdamW weight decay (not on biases and norms)");
    int64_t& eval_every = f.integer("eval-every", 250, "test accuracy on 2,000 test images every N steps");
    int64_t& save_every = f.integer("save-every", 250, "checkpoint every N steps");
    bool& resume = f.boolean("resume", false, "continue from --out/checkpoint.safetensors");
    int64_t& seed = f.integer("seed", 1, "seed for weights and batches");
    int64_t& threads = f.integer("threads", 0, "CPU threads (0: all cores)");
    std::string& classes = f.text("classes", "all", "train on labels lo-hi only, relabelled from 0 (e.g. 0-4)");
    bool& tf32 = f.boolean("tf32", true, "TF32 tensor cores for f32 matmuls on CUDA (--tf32=false: full f32)");
    if (!f.parse(argc, argv, 2)) return 0;
    if (threads > 0) set_num_threads(int(threads));

    Device device = pick_device(device_name);
    cuda::set_allow_tf32(tf32 && device.is_cuda());
    ImageSet train_set = select_classes(read_idx_set(data, "train"), classes);
    ImageSet test_set = select_classes(read_idx_set(data, "t10k"), classes);
    models::ViTConfig c;
    c.image_size = train_set.images.size(1), c.patch = patch, c.channels = 1;
    c.dim = dim, c.layers = layers, c.heads = heads;
    c.num_labels = int64_t(max(train_set.labels.to(DType::F64)).item<double>()) + 1;
    std::filesystem::create_directories(out);
    auto model = std::make_shared<models::ViT>(c, uint64_t(seed));
    model->to(device);
    std::cout << "data: " << data << ", " << train_set.images.size(0) << " train and " << test_set.images.size(0)
              << " test images of " << c.image_size << "x" << c.image_size << ", " << c.num_labels << " classes\n"
              << "model: ViT, " << layers << " layers, width " << dim << ", patch " << patch << ", "
              << model->num_parameters() << " parameters, on " << device << "\n";

    nn::TrainerOptions o;
    o.steps = steps, o.stop_at = stop_at, o.lr = lr, o.warmup = warmup, o.weight_decay = weight_decay;
    o.eval_every = eval_every, o.save_every = save_every, o.min_lr_ratio = 0.05;
    o.checkpoint = out + "/checkpoint.safetensors", o.resume = resume;
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
    save_model(*model, out);
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
    std::string& method_name = f.text("method", "lora", "lora, dylora, adalora, dora, ia3, vera or full");
    int64_t& rank = f.integer("rank", 8, "rank r of the low-rank methods (VeRA: 0 keeps its default 256)");
    std::string& device_name = f.text("device", "auto", "cpu, cuda or auto");
    int64_t& steps = f.integer("steps", 300, "optimizer steps");
    double& lr = f.real("lr", 0, "peak learning rate (0: the method's default)");
    int64_t& batch = f.integer("batch", 128, "images per step");
    int64_t& seed = f.integer("seed", 1, "seed for the adapter, the head and the batches");
    std::string& results = f.text("results", "", "append a row to this CSV (for the results table)");
    if (!f.parse(argc, argv, 2)) return 0;

    Device device = pick_device(device_name);
    auto model = load_model(base, device);
    ImageSet train_set = select_classes(read_idx_set(data, "train"), classes);
    ImageSet test_set = select_classes(read_idx_set(data, "t10k"), classes);
    int64_t labels = int64_t(max(train_set.labels.to(DType::F64)).item<double>()) + 1;
    EMBER_CHECK(labels == model->config.num_labels, "vit finetune: the base model has ", model->config.num_labels,
                " outputs but --classes ", classes, " has ", labels, " labels");
    // A new head: the old one scores the old classes. Freshly initialised like the base's was.
    {
        Generator head_gen(uint64_t(seed) + 17);
        nn::trunc_normal_(model->classifier->weight, 0, 0.02, head_gen);
        nn::zeros_(model->classifier->bias);
    }
    double before = accuracy(*model, test_set, 500, device);

    examples::FinetuneJob job;
    job.model = model, job.model_type = "vit", job.method = method_name, job.rank = rank;
    job.modules_to_save = {"classifier"}, job.steps = steps, job.lr = lr, job.seed = uint64_t(seed);
    job.out = out, job.unit = "img", job.on_cuda = device.is_cuda(), job.rngs = {model->rng};
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
        [&](const std::string& dir) { save_model(*model, dir); });
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
        std::cout << "usage: vit train|eval|finetune [flags]   (vit <command> --help lists the flags)\n";
        return command == "--help" || command == "-h" ? 0 : 2;
    } catch (const std::exception& e) {
        std::cerr << "vit: " << e.what() << "\n";
        return 1;
    }
}
