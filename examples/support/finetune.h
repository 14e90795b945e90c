// The fine-tuning half of the examples: one place turns --method into a peft config, and one
// CSV row per run feeds the results table (scripts/peft_results.sh).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/trainer.h"
#include "peft/config.h"

namespace ember::examples {

// The methods `gpt finetune` and `vit finetune` offer: every row of the PEFT method table
// (peft/methods.h), then "full", which trains every weight.
std::vector<std::string> finetune_methods();
// "lora, dora, ... or full", for --help.
std::string finetune_methods_help();

struct FinetuneMethod {
    std::string name;
    std::shared_ptr<peft::PeftConfig> config;  // null for "full"
    double default_lr = 1e-3;
};

// The table row's preset (peft/methods.h): `rank` is r of the low-rank methods; model_type picks
// targets where peft has no default (ViT); steps is the run's length (AdaLoRA's schedule).
// modules_to_save lists modules trained in full beside the adapter (ViT's new classifier).
FinetuneMethod finetune_method(const std::string& method, int64_t rank, const std::string& model_type,
                               const std::vector<std::string>& modules_to_save, int64_t steps);

struct FinetuneResult {
    std::string task, method, metric;
    int64_t trainable = 0, all = 0, steps = 0;
    double before = 0, after = 0;
    double ms_per_step = 0;
    double train_memory_mb = 0;  // peak tensor memory while training, above what was alive before
};

// One fine-tuning run, after the base model is loaded and its metric measured: applies the
// method (or trains everything, for "full"), trains `steps` steps on batch(), timing them and
// measuring their memory, calls evaluate() while the adapter is in place, saves the adapter in
// peft's format under out/adapter (or calls save_full(out)), and prints the summary. The caller
// fills task, metric and before.
struct FinetuneJob {
    std::shared_ptr<nn::Module> model;
    std::string model_type;                    // "gpt2", "llama", "vit"
    std::string method;
    int64_t rank = 8;
    std::vector<std::string> modules_to_save;  // trained in full beside the adapter
    int64_t steps = 200;
    double lr = 0;                             // 0: the method's default
    uint64_t seed = 1;
    std::string out, unit;                     // unit: "tok" or "img" in the progress line
    bool on_cuda = false;
    std::vector<std::shared_ptr<Generator>> rngs;  // dropout streams of the model
    nn::MomentStorage moments;                 // AdamW's state (optimizer_moments)
    bool bf16_autocast = false;                // --precision bf16 (bf16_autocast_requested)
};
// --optim: how AdamW keeps its moments, by the names qlora.py and Hugging Face's Trainer use.
// optimizer_moments refuses an unknown name and 8-bit moments on the GPU; call it before making
// any folder.
std::string optimizer_help(bool finetune);
nn::MomentStorage optimizer_moments(const std::string& optim, const std::string& method, bool on_cuda);
FinetuneResult run_finetune(const FinetuneJob& job, const std::function<nn::MicroBatch(int64_t, int64_t)>& batch,
                            const std::function<double()>& evaluate,
                            const std::function<void(const std::string&)>& save_full);

// --base-dtype: true for "bf16" (the frozen Linears' products in bf16, nn/bf16_linear.h), false
// for "f32"; refuses anything else, bf16 with --method full (it trains those weights) or qlora /
// qalora (they quantize the f32 weights), and bf16 on the GPU (a CPU path). `program` names the
// command in the errors ("gpt finetune").
bool bf16_base_requested(const std::string& program, const std::string& base_dtype, const std::string& method,
                         bool on_cuda);
// --precision f32|bf16 of `gpt` and `vit`, train and finetune: true for bf16, the run's products under
// bf16 autocast (nn/bf16_autocast.h), which it prints. Refuses anything else, and bf16 on the GPU
// (a CPU path).
std::string precision_help();
bool bf16_autocast_requested(const std::string& program, const std::string& precision, bool on_cuda);

// Appends a row (writing the header first when the file is new).
void append_result(const std::string& csv_path, const FinetuneResult& r);

}  // namespace ember::examples

namespace ember::examples {

// Tensor memory on `device`: mark the start of a measured region, then read the peak above it.
void memory_mark(bool cuda);
double memory_peak_above_mark_mb(bool cuda);

}  // namespace ember::examples
