// `make bench-qlora-memory`: what QLoRA saves on the CPU. A LLaMA-style GPT of ~100M parameters
// is fine-tuned for a few AdamW steps with LoRA on every Linear but the head, once over the f32
// base and once over the NF4 base (peft/qlora.h), at qlora.py's r = 64 and at r = 8, each with
// f32 AdamW moments and with 8-bit ones (nn::AdamW8bit, bitsandbytes' AdamW8bit). Reported: the
// tensor bytes held between steps (weights + adapter + AdamW state; gradients dropped), the peak
// during a step (activations too), and the loss on one fixed batch, first and last step. Paging
// is left off: paged state would leave the allocator's count, and the question is what is held.
//
// The adapters here are a minimal LoRA wrapper (base(x) + s (x A^T) B^T, A kaiming-uniform,
// B zero) so that the f32 and the 4-bit runs differ only in their base (peft::QLoraConfig through
// PeftModel builds the same model). Each run also prints what its held bytes are made of.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "models/gpt.h"
#include "nn/init.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "peft/qlora.h"
#include "tensor/parallel.h"

using namespace ember;

namespace {

struct LoraWrap : nn::Module {
    std::shared_ptr<nn::Module> base;
    Tensor A, B;
    double scaling;
    LoraWrap(std::shared_ptr<nn::Module> b, int64_t in, int64_t out, int64_t r, double alpha, Generator& gen)
        : base(std::move(b)), A(empty({r, in})), B(zeros({out, r})), scaling(alpha / double(r)) {
        nn::kaiming_uniform_(A, std::sqrt(5.0), gen);
        register_module("base_layer", base);
        register_parameter("lora_A", A);
        register_parameter("lora_B", B);
    }
    std::string type_name() const override { return "LoraWrap"; }
    Tensor forward(const Tensor& x) override {
        return base->forward(x) + matmul(matmul(x, A.t()), B.t()) * scaling;
    }
};

double mb(int64_t bytes) { return double(bytes) / 1e6; }

std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

struct Run {
    int64_t held = 0, peak = 0;
    double first_loss = 0, last_loss = 0;
    double ms_per_step = 0;  // median over the steps after the first
    // What the held bytes are made of: f32 tensors of the frozen base (embeddings, head, norms,
    // and the Linears when not quantized), the 4-bit storage, the adapter, AdamW's two moments.
    int64_t frozen_f32 = 0, quantized = 0, adapter = 0, optimizer = 0;
};

Run finetune(bool quantized, int64_t r, int bits, int steps) {
    const int64_t base_bytes = cpu_memory_stats().bytes_in_use;
    models::GPTConfig c = models::GPTConfig::llama(8192, 128, 768, 12, 12, 12, 2048);
    c.tie_embeddings = false;
    auto gpt = std::make_shared<models::GPT>(c, 1);
    gpt->requires_grad_(false);
    if (quantized) peft::quantize_for_qlora(*gpt);
    Generator gen(2);
    std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> targets;
    for (auto& [name, m] : gpt->named_modules())
        if (name != "lm_head" && (std::dynamic_pointer_cast<nn::Linear>(m) || std::dynamic_pointer_cast<nn::QuantLinear>(m)))
            targets.emplace_back(name, m);
    for (auto& [name, m] : targets) {
        int64_t in, out;
        if (auto l = std::dynamic_pointer_cast<nn::Linear>(m)) in = l->in_features, out = l->out_features;
        else {
            auto q = std::dynamic_pointer_cast<nn::QuantLinear>(m);
            in = q->in_features, out = q->out_features;
        }
        gpt->replace_submodule(name, std::make_shared<LoraWrap>(m, in, out, r, 16.0, gen));
    }
    std::vector<Tensor> trainable;
    for (const Tensor& p : gpt->parameters())
        if (p.requires_grad()) trainable.push_back(p);
    nn::MomentStorage moments;
    moments.bits = bits;
    nn::AdamW opt(trainable, {2e-4, 0.9, 0.999, 1e-8, 0.0}, moments);

    Generator data(3);
    Tensor ids = randint(0, 8192, {2, 65}, data);
    Tensor inputs = ids.slice(1, 0, 64), labels = ids.slice(1, 1, 65).contiguous();
    Run run;
    reset_cpu_peak();
    std::vector<double> ms;
    for (int step = 0; step < steps; ++step) {
        const auto start = std::chrono::steady_clock::now();
        Tensor logits = gpt->forward(inputs);
        Tensor loss = nn::cross_entropy(logits.reshape({-1, 8192}), labels.reshape({-1}));
        loss.backward();
        opt.step();
        opt.zero_grad();
        const double l = loss.item<double>();
        if (step > 0) ms.push_back(1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        if (step == 0) run.first_loss = l;
        run.last_loss = l;
    }
    std::sort(ms.begin(), ms.end());
    run.ms_per_step = ms[ms.size() / 2];
    run.held = cpu_memory_stats().bytes_in_use - base_bytes;  // weights + adapter + AdamW state
    for (const Tensor& p : gpt->parameters())
        (p.requires_grad() ? run.adapter : run.frozen_f32) += p.numel() * 4;
    for (auto& [name, m] : gpt->named_modules())
        if (auto q = std::dynamic_pointer_cast<nn::QuantLinear>(m)) run.quantized += q->weight.storage_bytes();
    run.optimizer = opt.resident_bytes();
    run.peak = cpu_memory_stats().peak_bytes_in_use - base_bytes;
    return run;
}

}  // namespace

int main() {
    set_num_threads(2);
    const int steps = 6;
    std::printf("QLoRA memory on the CPU: LLaMA-style GPT, 97.5M parameters (dim 768, 12 layers, SwiGLU "
                "2048, vocab 8192, untied head), LoRA on all 84 Linears but the head, AdamW, %d steps "
                "on one batch of 2 x 64 tokens, moments in f32 or 8 bits (load average %s)\n\n", steps, load_average().c_str());
    std::printf("%-5s %-11s %-10s %10s %10s %9s   %s\n", "r", "base", "moments", "held MB", "peak MB", "ms/step",
                "loss first -> last");
    for (int64_t r : {64, 8}) {
        Run runs[2][2];  // [quantized][8-bit moments]
        for (int q = 0; q < 2; ++q)
            for (int b8 = 0; b8 < 2; ++b8) {
                const Run& x = runs[q][b8] = finetune(q == 1, r, b8 ? 8 : 32, steps);
                std::printf("%-5lld %-11s %-10s %10.1f %10.1f %9.0f   %.3f -> %.3f\n", (long long)r,
                            q ? "NF4 QLoRA" : "f32 LoRA", b8 ? "8-bit" : "f32", mb(x.held), mb(x.peak), x.ms_per_step,
                            x.first_loss, x.last_loss);
            }
        auto ratio = [&](int qb, int lb) { return double(runs[1][qb].held) / double(runs[0][lb].held); };
        std::printf("      held, QLoRA / f32 LoRA with f32 moments: %.3f; QLoRA with 8-bit moments / f32 LoRA with "
                    "f32 moments: %.3f; both with 8-bit moments: %.3f\n", ratio(0, 0), ratio(1, 0), ratio(1, 1));
        for (int q = 0; q < 2; ++q)
            for (int b8 = 0; b8 < 2; ++b8) {
                const Run& x = runs[q][b8];
                std::printf("      %s, %-5s moments, held: f32 base %.1f MB, 4-bit weights %.1f MB, adapter %.1f MB, "
                            "AdamW state %.1f MB\n", q ? "QLoRA" : "LoRA ", b8 ? "8-bit" : "f32", mb(x.frozen_f32),
                            mb(x.quantized), mb(x.adapter), mb(x.optimizer));
            }
    }
    std::printf("\nload average after: %s\n", load_average().c_str());
    return 0;
}
