#include "examples/support/finetune.h"

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "examples/support/train_log.h"
#include "nn/atomic_file.h"
#include "peft/methods.h"
#include "peft/peft_model.h"
#include "tensor/bf16.h"

#include "tensor/check.h"

namespace ember::examples {

std::vector<std::string> finetune_methods() {
    std::vector<std::string> out;
    for (const peft::Method& m : peft::method_table()) out.push_back(m.name);
    out.push_back("full");
    return out;
}

std::string finetune_methods_help() { return peft::method_names() + " or full"; }

FinetuneMethod finetune_method(const std::string& method, int64_t rank, const std::string& model_type,
                               const std::vector<std::string>& modules_to_save, int64_t steps) {
    FinetuneMethod m;
    m.name = method;
    if (method == "full") {
        m.default_lr = 5e-4;
        return m;
    }
    const peft::Method* row = nullptr;
    for (const peft::Method& r : peft::method_table())
        if (r.name == method) row = &r;
    EMBER_CHECK(row, "finetune: unknown --method '", method, "'; choose one of: ", finetune_methods_help());
    m.config = row->preset({rank, model_type, steps});
    m.config->modules_to_save = modules_to_save;
    m.default_lr = row->preset_lr;
    return m;
}

std::string optimizer_help(bool finetune) {
    std::string help = "AdamW's state: adamw (f32), paged_adamw_32bit (f32, paged out of memory when the OS needs "
                       "room), adamw_8bit or paged_adamw_8bit (8-bit block-wise moments, CPU only)";
    if (finetune) help += "; empty: paged_adamw_32bit for qlora and qalora (as qlora.py and qalora.py train), adamw "
                          "for the rest";
    return help;
}

nn::MomentStorage optimizer_moments(const std::string& name, const std::string& method, bool on_cuda) {
    struct Choice {
        const char* name;
        bool paged;
        int bits;
    };
    static const Choice choices[] = {
        {"adamw", false, 32}, {"paged_adamw_32bit", true, 32}, {"adamw_8bit", false, 8}, {"paged_adamw_8bit", true, 8}};
    const std::string n = name.empty() ? (method == "qlora" || method == "qalora" ? "paged_adamw_32bit" : "adamw") : name;
    for (const Choice& c : choices) {
        if (n != c.name) continue;
        EMBER_CHECK(!(on_cuda && c.bits == 8), "--optim ", n, ": 8-bit moments have a CPU kernel only; on the GPU "
                    "use --optim adamw or paged_adamw_32bit");
        nn::MomentStorage m;
        m.paged = c.paged, m.bits = c.bits;
        return m;
    }
    throw Error(make_message("--optim: unknown optimizer '", name, "'; use adamw, paged_adamw_32bit, adamw_8bit or "
                             "paged_adamw_8bit"));
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

    nn::TrainerOptions o;
    o.steps = job.steps, o.lr = job.lr > 0 ? job.lr : m.default_lr, o.warmup = job.steps / 10;
    o.weight_decay = 0;
    o.moments = job.moments;
    o.bf16_autocast = job.bf16_autocast;
    nn::Trainer trainer(*job.model, o, job.rngs);
    std::cout << "optimizer: " << trainer.optimizer().name() << "\n";
    // A method that steers its own training (DyLoRA's rank draws, AdaLoRA's budget) does so
    // through its controller.
    if (peft_model) trainer.add_hooks(peft_model->training_hooks());
    nn::make_folders(job.out, "finetune");
    TrainLog log(job.out + "/metrics.csv", job.steps, job.unit, false);
    memory_mark(job.on_cuda);
    auto start = std::chrono::steady_clock::now();
    trainer.run(batch, nullptr, [&](int64_t step, double loss, int64_t items, double lr) { log.step(step, loss, items, lr); });
    log.finish();
    r.ms_per_step = 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(job.steps);
    r.train_memory_mb = memory_peak_above_mark_mb(job.on_cuda);
    const nn::AdamW& opt = trainer.optimizer();
    if (opt.moments.paged || opt.moments.bits == 8)
        std::cout << opt.name() << " state: " << double(opt.resident_bytes()) / 1e6 << " MB resident, "
                  << double(opt.paged_bytes()) / 1e6 << " MB paged (paged memory is not counted in the training memory below)\n";
    if (peft_model) peft_model->report_training(std::cout, evaluate);
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

bool bf16_base_requested(const std::string& program, const std::string& base_dtype, const std::string& method,
                         bool on_cuda) {
    EMBER_CHECK(base_dtype == "f32" || base_dtype == "bf16", program, ": --base-dtype ", base_dtype,
                " is not f32 or bf16");
    if (base_dtype == "f32") return false;
    EMBER_CHECK(method != "full", program, ": --base-dtype bf16 freezes every weight in bf16, and --method full "
                "trains them; choose a PEFT method, or --base-dtype f32");
    EMBER_CHECK(!on_cuda, program, ": --base-dtype bf16 is a CPU path; add --device cpu, or keep --base-dtype f32 "
                "on the GPU");
    EMBER_CHECK(method != "qlora" && method != "qalora", program, ": --method ", method, " quantizes the f32 "
                "Linears to 4 bits, and --base-dtype bf16 leaves none; use one or the other");
    if (!cpu::cpu_has_avx512_bf16())
        std::cout << program << ": this CPU has no AVX-512 BF16, so each bf16 product widens its weight to f32 "
                     "first: slower than --base-dtype f32\n";
    return true;
}

std::string precision_help() {
    return "f32, or bf16: every Linear's products in bf16 with f32 weights (bf16 autocast; CPU only, "
           "fast where the CPU has AVX-512 BF16)";
}

bool bf16_autocast_requested(const std::string& program, const std::string& precision, bool on_cuda) {
    EMBER_CHECK(precision == "f32" || precision == "bf16", program, ": --precision ", precision,
                " is not f32 or bf16");
    if (precision == "f32") return false;
    EMBER_CHECK(!on_cuda, program, ": --precision bf16 is a CPU path (the CUDA products are f32, or TF32 with "
                "--tf32); add --device cpu, or keep --precision f32 on the GPU");
    std::cout << "precision: bf16 products, f32 weights and optimizer (bf16 autocast)\n";
    if (!cpu::cpu_has_avx512_bf16())
        std::cout << program << ": this CPU has no AVX-512 BF16, so each bf16 product widens its operands to f32 "
                     "first: slower than --precision f32\n";
    return true;
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
