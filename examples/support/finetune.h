// The fine-tuning half of the examples: one place turns --method into a peft config, and one
// CSV row per run feeds the results table (scripts/peft_results.sh).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/config.h"

namespace ember::examples {

// The methods `gpt finetune` and `vit finetune` offer; "full" trains every weight.
const std::vector<std::string>& finetune_methods();

struct FinetuneMethod {
    std::string name;
    std::shared_ptr<peft::PeftConfig> config;  // null for "full"
    double default_lr = 1e-3;
};

// `rank` is r for the low-rank methods (VeRA keeps its own default of 256 when rank <= 0).
// modules_to_save lists modules trained in full beside the adapter (ViT's new classifier).
// model_type "gpt2"/"llama" use peft's default targets; "vit", for which peft has none, targets
// query and value (keys, values and the MLP's output for IA3).
FinetuneMethod finetune_method(const std::string& method, int64_t rank, const std::string& model_type,
                               const std::vector<std::string>& modules_to_save);

struct FinetuneResult {
    std::string task, method, metric;
    int64_t trainable = 0, all = 0, steps = 0;
    double before = 0, after = 0;
    double ms_per_step = 0;
    double train_memory_mb = 0;  // peak tensor memory while training, above what was alive before
};

// Appends a row (writing the header first when the file is new).
void append_result(const std::string& csv_path, const FinetuneResult& r);

}  // namespace ember::examples

namespace ember::examples {

// Tensor memory on `device`: mark the start of a measured region, then read the peak above it.
void memory_mark(bool cuda);
double memory_peak_above_mark_mb(bool cuda);

}  // namespace ember::examples
