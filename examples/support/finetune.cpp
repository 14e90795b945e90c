#include "examples/support/finetune.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "examples/support/train_log.h"
#include "nn/atomic_file.h"
#include "peft/adalora.h"
#include "peft/dylora.h"
#include "peft/peft_model.h"

#include "tensor/check.h"

namespace ember::examples {

const std::vector<std::string>& finetune_methods() {
    static const std::vector<std::string> methods = {"lora", "dylora", "adalora", "dora", "ia3", "vera", "full"};
    return methods;
}

FinetuneMethod finetune_method(const std::string& method, int64_t rank, const std::string& model_type,
                               const std::vector<std::string>& modules_to_save, int64_t steps) {
    FinetuneMethod m;
    m.name = method;
    if (method == "lora" || method == "dora") {
        auto c = std::make_shared<peft::LoraConfig>();
        c->r = rank, c->lora_alpha = 2.0 * double(rank);
        c->use_dora = method == "dora";
        m.config = c, m.default_lr = 3e-3;
    } else if (method == "dylora") {
        auto c = std::make_shared<peft::DyLoraConfig>();
        c->r = rank, c->lora_alpha = 2.0 * double(rank);
        m.config = c, m.default_lr = 3e-3;
    } else if (method == "adalora") {
        // Starts at rank 1.5 r and prunes to r on average: budget falls between 10% and 70% of
        // the run, re-allocated every 10 steps.
        auto c = std::make_shared<peft::AdaLoraConfig>();
        c->init_r = rank + rank / 2, c->target_r = rank, c->lora_alpha = 2.0 * double(rank);
        c->total_step = steps, c->tinit = steps / 10, c->tfinal = steps * 3 / 10, c->deltaT = 10;
        m.config = c, m.default_lr = 1e-2;  // E starts at zero and A, B small: a higher rate
    } else if (method == "ia3") {
        m.config = std::make_shared<peft::IA3Config>(), m.default_lr = 1e-2;
    } else if (method == "vera") {
        auto c = std::make_shared<peft::VeraConfig>();
        if (rank > 0 && rank != 8) c->r = rank;
        m.config = c, m.default_lr = 1e-2;
    } else if (method == "full") {
        m.default_lr = 5e-4;
    } else {
        std::string known;
        for (const auto& name : finetune_methods()) known += " " + name;
        throw Error(make_message("finetune: unknown --method '", method, "'; choose one of:", known));
    }
    if (m.config) m.config->modules_to_save = modules_to_save;
    if (m.config && model_type == "vit") {
        if (method == "ia3") {
            auto& c = static_cast<peft::IA3Config&>(*m.config);
            c.target_modules = peft::ModuleSelector(R"(.*\.(key|value)|.*layer\.\d+\.output\.dense)");
            c.feedforward_modules = peft::ModuleSelector(R"(.*layer\.\d+\.output\.dense)");
        } else {
            m.config->target_modules = peft::ModuleSelector{"query", "value"};
        }
    }
    return m;
}

FinetuneResult run_finetune(const FinetuneJob& job, const std::function<nn::MicroBatch(int64_t, int64_t)>& batch,
                            const std::function<double()>& evaluate,
                            const std::function<void(const std::string&)>& save_full) {
    FinetuneMethod m = finetune_method(job.method, job.rank, job.model_type, job.modules_to_save, job.steps);
    FinetuneResult r;
    r.method = job.method, r.steps = job.steps;
    std::unique_ptr<peft::PeftModel> peft_model;
    if (m.config) {
        peft_model = std::make_unique<peft::PeftModel>(job.model, *m.config, "default", job.seed, job.model_type);
        peft_model->print_trainable_parameters();
        auto counts = peft_model->count_parameters();
        r.trainable = counts.trainable, r.all = counts.all;
    } else {
        job.model->requires_grad_(true);
        r.trainable = r.all = job.model->num_parameters();
        std::cout << "full fine-tuning: all " << r.all << " parameters train\n";
    }

    // The two methods that steer their own training: DyLoRA draws a rank per step; AdaLoRA adds
    // its orthogonality penalty to the loss and re-allocates ranks after each optimizer step.
    std::unique_ptr<peft::DyLoraRankSampler> dylora;
    std::unique_ptr<peft::RankAllocator> adalora;
    std::vector<std::shared_ptr<Generator>> rngs = job.rngs;
    std::function<nn::MicroBatch(int64_t, int64_t)> step_batch = batch;
    if (job.method == "dylora") {
        dylora = std::make_unique<peft::DyLoraRankSampler>(*peft_model, job.seed);
        rngs.push_back(dylora->generator());
        step_batch = [&](int64_t step, int64_t micro) {
            if (micro == 0) dylora->sample();
            return batch(step, micro);
        };
    } else if (job.method == "adalora") {
        adalora = std::make_unique<peft::RankAllocator>(*peft_model);
        step_batch = [&](int64_t step, int64_t micro) {
            nn::MicroBatch mb = batch(step, micro);
            mb.loss = mb.loss + peft::adalora_orth_regularization(*peft_model);
            return mb;
        };
    }

    nn::TrainerOptions o;
    o.steps = job.steps, o.lr = job.lr > 0 ? job.lr : m.default_lr, o.warmup = job.steps / 10;
    o.weight_decay = 0;
    nn::Trainer trainer(*job.model, o, rngs);
    if (adalora) trainer.after_optimizer_step = [&](int64_t step) { adalora->update_and_allocate(step); };
    std::filesystem::create_directories(job.out);
    TrainLog log(job.out + "/metrics.csv", job.steps, job.unit, false);
    memory_mark(job.on_cuda);
    auto start = std::chrono::steady_clock::now();
    trainer.run(step_batch, nullptr, [&](int64_t step, double loss, int64_t items, double lr) { log.step(step, loss, items, lr); });
    log.finish();
    r.ms_per_step = 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(job.steps);
    r.train_memory_mb = memory_peak_above_mark_mb(job.on_cuda);
    if (dylora) {
        // One training run serves every rank up to r.
        for (int64_t b = 1; b < dylora->max_rank(); b *= 2) {
            peft::set_dylora_rank(*peft_model, b);
            std::cout << "DyLoRA evaluated at rank " << b << ": " << evaluate() << "\n";
        }
        peft::set_dylora_rank(*peft_model, dylora->max_rank());
    }
    if (adalora) {
        std::cout << "AdaLoRA kept " << adalora->total_rank() << " of " << adalora->initial_budget()
                  << " singular values (target " << adalora->target_budget() << "):";
        for (const auto& [module, rank] : adalora->rank_allocation()) std::cout << " " << module << "=" << rank;
        std::cout << "\n";
    }
    r.after = evaluate();

    if (peft_model) {
        peft_model->save_pretrained(job.out + "/adapter");
        std::cout << "adapter saved in " << job.out << "/adapter (peft format)\n";
    } else {
        save_full(job.out);
        std::cout << "model saved in " << job.out << "\n";
    }
    std::cout << job.method << ": " << r.ms_per_step << " ms/step, " << r.train_memory_mb << " MB of training memory\n";
    return r;
}

void append_result(const std::string& csv_path, const FinetuneResult& r) {
    bool is_new = !std::ifstream(csv_path).good();
    std::ostringstream out;
    if (is_new) out << "task,method,trainable,all,steps,metric,before,after,ms_per_step,train_memory_mb\n";
    out << r.task << "," << r.method << "," << r.trainable << "," << r.all << "," << r.steps << "," << r.metric << ","
        << r.before << "," << r.after << "," << r.ms_per_step << "," << r.train_memory_mb << "\n";
    nn::AppendFile(csv_path, false).append(out.str());  // one checked write: a whole row or an error
}

}  // namespace ember::examples

#include "tensor/cuda/cuda.h"
#include "tensor/storage.h"

namespace ember::examples {

static int64_t g_mark = 0;

void memory_mark(bool cuda) {
    if (cuda) {
        cuda::reset_peak();
        g_mark = cuda::allocator_stats().bytes_in_use;
    } else {
        reset_cpu_peak();
        g_mark = cpu_memory_stats().bytes_in_use;
    }
}

double memory_peak_above_mark_mb(bool cuda) {
    int64_t peak = cuda ? int64_t(cuda::allocator_stats().peak_bytes_in_use) : cpu_memory_stats().peak_bytes_in_use;
    return double(peak - g_mark) / 1e6;
}

}  // namespace ember::examples
