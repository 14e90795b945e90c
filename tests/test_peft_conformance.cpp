// The PEFT conformance table: one row per method of peft/methods.h, each checked for every
// invariant that applies to it (the acceptance checks published PEFT code suggests):
//   no-op at init      the model computes the base exactly, where the method starts as a no-op
//   gradcheck          float64 gradients of the forward w.r.t. every trainable tensor
//   merge              merged == unmerged (f32, rtol 1e-5) and unmerge restores the weights bit
//                      for bit, where the method is mergeable; refused with a clear error where not
//   frozen base        after 10 AdamW steps every frozen tensor is bit-identical and has no .grad
//   save -> load       the adapter files load into a fresh base with bit-identical logits
//   resume             10 steps + checkpoint + 10 resumed steps == 20 steps, bit for bit, with
//                      the method's controller (DyLoRA's draws, AdaLoRA's scores and masks)
//   counts             trainable parameters on the GPT-2 small / ViT-B/16 / LLaMA-7B shape twins
// Every row runs on the tests' tiny GPT-2, or on the tiny ViT for a method only a ViT takes (VPT).
// QLoRA and QA-LoRA run on the tiny model quantized by their prepare step (NF4; INT4 groups of 8),
// so every check above is of LoRA over a 4-bit base: the gradcheck sees the base as its f64
// dequantized values, and merging is lossless (QLoRA into the dequantized f32 weight, QA-LoRA
// into the zero points with the codes kept).
// A method of the table without a row fails the first test.
#include <filesystem>
#include <functional>

#include <unistd.h>

#include "autograd/gradcheck.h"
#include "nn/trainer.h"
#include "peft/adalora.h"
#include "peft/bitfit.h"
#include "peft/dylora.h"
#include "peft/houlsby.h"
#include "peft/ia3.h"
#include "peft/longlora.h"
#include "peft/lora.h"
#include "peft/methods.h"
#include "peft/prefix_tuning.h"
#include "peft/prompt_tuning.h"
#include "peft/qalora.h"
#include "peft/qlora.h"
#include "peft/vera.h"
#include "peft/vpt.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::PeftConfig;
using peft::PeftModel;

namespace {

using ConfigFn = std::function<std::shared_ptr<PeftConfig>()>;

struct Count {
    std::string twin;  // "gpt2" (GPT-2 small), "vit" (ViT-B/16, 101 labels) or "llama7b"
    ConfigFn config;
    int64_t trainable;
};

struct Row {
    std::string method;  // the table's name
    ConfigFn tiny;       // a config for tests' tiny GPT-2 (dim 16)
    bool noop_at_init;   // bit-exact
    bool mergeable;
    std::vector<Count> counts;
    // Before the gradcheck: switches a deliberate gradient shortcut off, so that the check is of
    // the forward's true derivative (DoRA's detached norm).
    std::function<void(PeftModel&)> exact_gradients = nullptr;
    // The base as the method's prepare step leaves it (QLoRA's and QA-LoRA's 4-bit model): what
    // the no-op at init is compared with, and what the adapter file is loaded onto (QLoRA's file
    // is a plain LoRA adapter, so its 4-bit base is quantized by hand).
    std::function<void(nn::Module&)> quantized_base = nullptr;
    bool vit = false;  // runs on the tiny ViT (the method needs image patches)
};

template <class C>
std::shared_ptr<C> with_targets(std::shared_ptr<C> c, peft::ModuleSelector t) {
    c->target_modules = std::move(t);
    return c;
}

std::shared_ptr<peft::LoraConfig> lora(int64_t r, peft::ModuleSelector t, bool dora = false) {
    auto c = std::make_shared<peft::LoraConfig>();
    c->r = r, c->lora_alpha = 2.0 * double(r), c->use_dora = dora;
    return with_targets(c, std::move(t));
}

std::shared_ptr<peft::AdaLoraConfig> adalora(int64_t init_r, peft::ModuleSelector t, int64_t total) {
    auto c = std::make_shared<peft::AdaLoraConfig>();
    c->init_r = init_r, c->target_r = init_r > 1 ? init_r / 2 : 1, c->total_step = total;
    c->tinit = 2, c->tfinal = total / 4, c->deltaT = 2;
    c->orth_reg_weight = 0.1;
    return with_targets(c, std::move(t));
}

std::shared_ptr<peft::DyLoraConfig> dylora(int64_t r, peft::ModuleSelector t) {
    auto c = std::make_shared<peft::DyLoraConfig>();
    c->r = r;
    return with_targets(c, std::move(t));
}

std::shared_ptr<peft::VeraConfig> vera(int64_t r, peft::ModuleSelector t) {
    auto c = std::make_shared<peft::VeraConfig>();
    c->r = r;
    return with_targets(c, std::move(t));
}

std::shared_ptr<peft::PromptTuningConfig> prompt(int64_t n) {
    auto c = std::make_shared<peft::PromptTuningConfig>();
    c->num_virtual_tokens = n;
    return c;
}

std::shared_ptr<peft::PrefixTuningConfig> prefix(int64_t n, bool projection = false, int64_t m = 0) {
    auto c = std::make_shared<peft::PrefixTuningConfig>();
    c->num_virtual_tokens = n, c->prefix_projection = projection, c->encoder_hidden_size = m;
    return c;
}

std::shared_ptr<peft::QLoraConfig> qlora(int64_t r, bool quantize = true) {
    auto c = std::make_shared<peft::QLoraConfig>();
    c->r = r, c->quantize_base = quantize;
    return c;
}

std::shared_ptr<peft::QALoraConfig> qalora(int64_t r, int64_t L, bool quantize = true) {
    auto c = std::make_shared<peft::QALoraConfig>();
    c->r = r, c->qalora_group_size = L, c->quantize_base = quantize;
    return c;
}

std::shared_ptr<peft::VptConfig> vpt(int64_t n, bool deep, double dropout = 0) {
    auto c = std::make_shared<peft::VptConfig>();
    c->num_virtual_tokens = n, c->deep = deep, c->prompt_dropout = dropout;
    return c;
}

std::shared_ptr<peft::LongLoraConfig> longlora_tiny() {
    auto c = std::make_shared<peft::LongLoraConfig>();
    c->r = 2, c->lora_alpha = 4, c->group_size_ratio = 0.5;
    return with_targets(c, {"c_attn", "attn.c_proj"});
}

std::shared_ptr<peft::LongLoraConfig> longlora_llama() {  // LongLoRA's defaults: r 8, alpha 16
    return with_targets(std::make_shared<peft::LongLoraConfig>(), {"q_proj", "k_proj", "v_proj", "o_proj"});
}

// m = 64, LayerNorms frozen: the adapters alone.
std::shared_ptr<peft::HoulsbyConfig> houlsby_counted() {
    auto c = std::make_shared<peft::HoulsbyConfig>();
    c->train_layernorms = false;
    return c;
}

const std::vector<Row>& rows() {
    static const std::vector<Row> table = {
        {"lora", [] { return lora(2, {"c_attn", "mlp.c_proj"}); }, true, true,
         {{"gpt2", [] { return lora(8, {"c_attn"}); }, 294912},
          {"vit", [] { return lora(8, {"query", "value"}); }, 294912}}},
        {"dora", [] { return lora(2, {"c_attn"}, true); }, true, true,
         {{"gpt2", [] { return lora(8, {"c_attn"}, true); }, 322560}},
         [](PeftModel& pm) {  // peft takes no gradient through the norm; the true one flows through it
             for (auto& [key, tl] : pm.tuner_layers()) std::dynamic_pointer_cast<peft::LoraLayer>(tl)->dora_detach_norm = false;
         }},
        // DyLoRA holds LoRA's A and B at the largest rank: LoRA's count.
        {"dylora", [] { return dylora(3, {"c_attn", "c_fc"}); }, true, true,
         {{"gpt2", [] { return dylora(8, {"c_attn"}); }, 294912}}},
        {"adalora", [] { return adalora(3, {"c_attn", "c_fc"}, 20); }, true, true,
         {{"gpt2", [] { return adalora(12, {"c_attn"}, 100); }, 442512},
          {"vit", [] { return adalora(12, {"query", "value"}, 100); }, 442656}}},
        {"ia3", [] { return std::make_shared<peft::IA3Config>(); }, true, true,
         {{"gpt2", [] { return std::make_shared<peft::IA3Config>(); }, 64512}}},
        {"vera", [] { return vera(4, {"c_attn", "mlp.c_proj"}); }, true, true,
         {{"gpt2", [] { return vera(256, {"c_attn"}); }, 30720}}},
        // Merging BitFit is the identity: the biases are the model's own.
        {"bitfit", [] { return std::make_shared<peft::BitFitConfig>(); }, true, true,
         {{"gpt2", [] { return std::make_shared<peft::BitFitConfig>(); }, 102144},
          {"vit", [] {
               auto c = std::make_shared<peft::BitFitConfig>();
               c->exclude_modules = peft::ModuleSelector{"classifier"};  // the task head's bias
               return c;
           }, 102912}}},
        // Near the identity at init (W ~ N(0, 1e-3^2)), not exactly; nonlinear, so not mergeable.
        {"houlsby", [] {
             auto c = std::make_shared<peft::HoulsbyConfig>();
             c->adapter_size = 4;
             return c;
         }, false, false,
         {{"gpt2", [] { return houlsby_counted(); }, 2379264}, {"vit", [] { return houlsby_counted(); }, 2379264}}},
        {"prompt_tuning", [] { return prompt(3); }, false, false, {{"gpt2", [] { return prompt(20); }, 15360}}},
        // The tiny row trains through the reparameterisation MLP, so save -> load checks the folding.
        {"prefix_tuning", [] { return prefix(3, true, 8); }, false, false,
         {{"gpt2", [] { return prefix(20); }, 368640}, {"gpt2", [] { return prefix(20, true, 512); }, 9864704}}},
        // Every Linear, r 64: r (in + out) summed over c_attn, attn.c_proj, c_fc, mlp.c_proj, x 12.
        // The twins' weights are never initialised, so the counts skip the quantization.
        {"qlora", [] { return qlora(2); }, true, true, {{"gpt2", [] { return qlora(64, false); }, 9437184}},
         nullptr, [](nn::Module& m) { peft::quantize_for_qlora(m); }},
        // r (in / 32 + out): 64 (24 + 2304) + 64 (24 + 768) + 64 (24 + 3072) + 64 (96 + 768), x 12.
        {"qalora", [] { return qalora(2, 8); }, true, true, {{"gpt2", [] { return qalora(64, 32, false); }, 5437440}},
         nullptr, [](nn::Module& m) {
             nn::QuantConfig q;
             q.format = QuantFormat::INT4, q.group_size = 8;
             peft::quantize_for_qlora(m, q);
         }},
        // Deep, with prompt dropout, so resume checks the dropout draws too.
        {"vpt", [] { return vpt(3, true, 0.1); }, false, false,
         {{"vit", [] { return vpt(50, false); }, 38400}, {"vit", [] { return vpt(10, true); }, 92160},
          {"vit", [] { return vpt(50, true); }, 460800}},
         nullptr, nullptr, true},
        // Trains with S2-Attn (groups of 3 of the 6 training tokens), so in training mode it is no
        // no-op even with B = 0: the attention changes (in eval it is, bit for bit:
        // tests/test_peft_longlora.cpp). The gradcheck runs in eval, with full attention.
        // LLaMA-7B: LoRA q,k,v,o r=8 8,388,608 + embed_tokens 131,072,000 + 65 RMSNorms 266,240
        // (tests/test_peft_longlora.cpp checks the three apart).
        {"longlora", [] { return longlora_tiny(); }, false, true,
         {{"llama7b", [] { return longlora_llama(); }, 8388608 + 131072000 + 266240}}},
    };
    return table;
}

// Moves every trainable tensor off its initial value (small noise), so that an adapter which
// starts as a no-op (LoRA's B = 0, AdaLoRA's E = 0, VeRA's lambda_b = 0) has an effect to check.
void perturb(nn::Module& m, uint64_t seed = 5) {
    Generator gen(seed);
    NoGradGuard no_grad;
    for (Tensor& t : trainable(m))
        raw::copy_(t, raw::add(t, raw::mul_scalar(randn(t.shape(), gen, t.dtype(), t.device()), 0.1)));
}

std::string tmp_dir(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("ember_conformance_" + name + "_" + std::to_string(::getpid())))
        .string();
}

// What a row runs on: a fresh tiny model (the same base every time), its logits and a training
// loss on fixed inputs. small: the gradcheck's size (a 1-layer GPT, 4 tokens; one image).
struct Subject {
    std::shared_ptr<nn::Module> model;
    std::string model_type;
    std::shared_ptr<Generator> rng;  // the model's dropout generator, checkpointed by the Trainer
    std::function<Tensor()> forward, loss;
};

Subject subject(const Row& row, bool small = false) {
    Subject s;
    if (row.vit) {
        auto vit = tiny_vit();
        Generator gen(13);
        Tensor images = randn({small ? 1 : 2, 1, 8, 8}, gen);
        Tensor labels = from_vector(std::vector<int64_t>{2, 0}, {2});
        s.model = vit, s.model_type = "vit", s.rng = vit->rng;
        auto in_model_dtype = [vit, images] { return images.to(vit->classifier->weight.dtype()); };
        s.forward = [vit, in_model_dtype] { return vit->forward(in_model_dtype()); };
        s.loss = [vit, in_model_dtype, labels] { return cross_entropy(vit->forward(in_model_dtype()), labels); };
        return s;
    }
    auto gpt = tiny_gpt2(small ? 1 : 2);
    Tensor ids = small ? from_vector(std::vector<int64_t>{1, 5, 2, 6}, {1, 4}) : tiny_ids();
    Tensor seq = tiny_ids(11, 2, 7);
    Tensor inp = seq.slice(1, 0, 6).contiguous(), tgt = seq.slice(1, 1, 7).contiguous();
    s.model = gpt, s.model_type = "gpt2", s.rng = gpt->rng;
    s.forward = [gpt, ids] { return gpt->forward_ids(ids); };
    s.loss = [gpt, inp, tgt] { return cross_entropy(gpt->forward_ids(inp), tgt); };
    return s;
}

// `steps` AdamW steps on the subject's loss.
void train_steps(Subject& s, int steps) {
    std::vector<Tensor> params = trainable(*s.model);
    REQUIRE(!params.empty());
    nn::AdamWOptions o;
    o.lr = 1e-2;
    nn::AdamW opt(params, o);
    s.model->train();
    for (int i = 0; i < steps; ++i) {
        opt.zero_grad();
        s.loss().backward();
        opt.step();
    }
}

// A 20-step Trainer run (or its first / second half), with the method's controller hooked in.
std::map<std::string, Tensor> trainer_run(const Row& row, int64_t stop_at, bool resume, const std::string& ckpt) {
    Subject s = subject(row);
    PeftModel pm(s.model, *row.tiny(), "default", 3, s.model_type);
    nn::TrainerOptions o;
    o.steps = 20, o.stop_at = stop_at, o.lr = 1e-2, o.checkpoint = ckpt, o.resume = resume, o.save_every = 10;
    nn::Trainer trainer(*s.model, o, {s.rng});
    trainer.add_hooks(pm.training_hooks());
    trainer.run([&](int64_t, int64_t) { return nn::MicroBatch{s.loss(), 12}; });
    return snapshot(*s.model);
}

std::shared_ptr<nn::Module> twin(const std::string& which) {
    if (which == "gpt2") return gpt2_twin(50257, 1024, 768, 12);
    if (which == "llama7b") return llama_twin(32000, 4096, 32, 11008);
    return vit_twin(224, 16, 3, 768, 12, 101);
}

}  // namespace

TEST_CASE("PEFT conformance: every method of the table has a row, and every row a method") {
    std::set<std::string> have;
    for (const Row& r : rows()) have.insert(r.method);
    for (const peft::Method& m : peft::method_table()) CHECK_MESSAGE(have.count(m.name), m.name, " has no conformance row");
    for (const Row& r : rows()) CHECK_NOTHROW(peft::find_method(r.method));
}

TEST_CASE("PEFT conformance: no-op at init, merge, frozen base, save -> load") {
    for (const Row& row : rows()) {
        CAPTURE(row.method);
        Subject s = subject(row);
        nn::Module& model = *s.model;
        Tensor base = s.forward();
        if (row.quantized_base) {
            Subject q = subject(row);
            row.quantized_base(*q.model);
            base = q.forward();
        }
        auto frozen = snapshot(model);
        PeftModel pm(s.model, *row.tiny(), "default", 3, s.model_type);
        CHECK(pm.count_parameters().trainable > 0);
        if (row.noop_at_init) CHECK(bit_equal(s.forward(), base));

        // The frozen base: 10 AdamW steps change no frozen tensor and give none a .grad; every
        // trainable tensor moves.
        std::set<const TensorImpl*> trains;
        for (const Tensor& t : trainable(model)) trains.insert(t.impl_ptr().get());
        auto start = snapshot(model);
        train_steps(s, 10);
        for (auto& [n, t] : model.named_parameters()) {
            CAPTURE(n);
            if (trains.count(t.impl_ptr().get())) {
                CHECK_FALSE(bit_equal(t, start.at(n)));
                continue;
            }
            if (frozen.count(n)) CHECK(bit_equal(t, frozen.at(n)));
            CHECK_FALSE(t.grad().defined());
        }

        model.eval();
        Tensor trained = s.forward();
        auto weights = snapshot(model);
        if (row.mergeable) {
            pm.merge_adapter();
            CHECK(all_close(s.forward(), trained, 1e-5, 1e-6));
            pm.unmerge_adapter();
            for (auto& [n, t] : model.named_parameters()) CHECK_MESSAGE(bit_equal(t, weights.at(n)), n);
        } else {
            CHECK(error_of([&] { pm.merge_adapter(); }).find("cannot be merged") != std::string::npos);
        }
        CHECK(bit_equal(s.forward(), trained));

        std::string dir = tmp_dir(row.method);
        pm.save_pretrained(dir);
        Subject fresh = subject(row);
        if (row.quantized_base) row.quantized_base(*fresh.model);
        auto loaded = PeftModel::from_pretrained(fresh.model, dir, "default", false, fresh.model_type);
        fresh.model->eval();
        CHECK(bit_equal(fresh.forward(), trained));
        CHECK(loaded->count_parameters().trainable == 0);  // loaded for inference: frozen
        std::filesystem::remove_all(dir);
    }
}

TEST_CASE("PEFT conformance: float64 gradcheck of the forward w.r.t. every trainable tensor") {
    for (const Row& row : rows()) {
        CAPTURE(row.method);
        Subject s = subject(row, true);
        s.model->to(DType::F64);
        PeftModel pm(s.model, *row.tiny(), "default", 3, s.model_type);
        perturb(*s.model);
        if (row.exact_gradients) row.exact_gradients(pm);
        s.model->eval();
        std::vector<Tensor> params = trainable(*s.model);
        REQUIRE_FALSE(params.empty());
        expect_gradcheck([&](const std::vector<Tensor>&) { return s.forward(); }, params);
    }
}

TEST_CASE("PEFT conformance: 10 steps + checkpoint + 10 resumed steps == 20 steps, bit for bit") {
    for (const Row& row : rows()) {
        CAPTURE(row.method);
        std::string ckpt = tmp_dir(row.method) + ".ckpt";
        auto whole = trainer_run(row, 0, false, "");
        trainer_run(row, 10, false, ckpt);
        auto resumed = trainer_run(row, 0, true, ckpt);
        for (auto& [n, t] : whole) CHECK_MESSAGE(bit_equal(resumed.at(n), t), n);
        std::filesystem::remove(ckpt);
    }
}

TEST_CASE("PEFT conformance: parameter counts on the GPT-2 small and ViT-B/16 shape twins") {
    for (const Row& row : rows())
        for (const Count& c : row.counts) {
            CAPTURE(row.method);
            CAPTURE(c.twin);
            PeftModel pm(twin(c.twin), *c.config(), "default", 0, c.twin);
            CHECK(pm.count_parameters().trainable == c.trainable);
        }
}
