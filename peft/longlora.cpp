// LongLoRA: LoRA on q, k, v, o, the embeddings and norms trained in place, S2-Attn in training.
// See longlora.h.
#include "peft/longlora.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "nn/atomic_file.h"
#include "nn/attention.h"
#include "nn/safetensors.h"
#include "peft/config_json.h"
#include "peft/methods.h"

namespace ember {
namespace peft {

namespace fs = std::filesystem;
using json = nlohmann::json;

static const char* const TRAINABLE_FILE = "trainable_params.safetensors";
static const std::string SAVED_PREFIX = "base_model.model.";  // peft's key prefix

std::string LongLoraConfig::to_json() const {
    json j = json::parse(LoraConfig::to_json());
    j["peft_type"] = peft_type();
    j["trainable_params"] = "embed,norm";  // fine-tune.py's option, the only value Ember implements
    j["use_s2_attn"] = use_s2_attn;
    j["group_size_ratio"] = group_size_ratio;
    j["shift_roll"] = shift_roll;
    return j.dump(2);
}

LongLoraConfig LongLoraConfig::from_json(const std::string& text) {
    json j = parse_config(text, "LONGLORA");
    std::string trained = j.value("trainable_params", std::string("embed,norm"));
    EMBER_CHECK(trained == "embed,norm", "adapter_config.json: LongLoRA trainable_params \"", trained,
                "\" is not one Ember implements (\"embed,norm\")");
    j["peft_type"] = "LORA";
    LongLoraConfig c;
    static_cast<LoraConfig&>(c) = LoraConfig::from_json(j.dump());
    c.use_s2_attn = j.value("use_s2_attn", true);
    c.group_size_ratio = j.value("group_size_ratio", 0.25);
    c.shift_roll = j.value("shift_roll", false);
    return c;
}

void LongLoraConfig::fill_defaults(const std::string& model_type) {
    if (!target_modules.is_set) {
        if (model_type == "llama") target_modules = ModuleSelector{"q_proj", "k_proj", "v_proj", "o_proj"};
        if (model_type == "gpt2") target_modules = ModuleSelector{"c_attn", "attn.c_proj"};
    }
    EMBER_CHECK(group_size_ratio > 0 && group_size_ratio <= 1, "LongLoraConfig: group_size_ratio must lie in "
                "(0, 1], got ", group_size_ratio, " (LongLoRA uses 1/4)");
}

static bool holds(const std::string& name, const char* part) { return name.find(part) != std::string::npos; }

bool LongLoraConfig::trains_base_parameter(const std::string& name, const nn::Module& owner, bool in_target) const {
    if (LoraConfig::trains_base_parameter(name, owner, in_target)) return true;
    if (in_target) return false;  // the wrapped Linears' own weights stay frozen
    const std::string kind = owner.type_name();
    return holds(name, "embed") || holds(name, "norm") || kind == "Embedding" || kind == "LayerNorm" ||
           kind == "RMSNorm";
}

std::shared_ptr<Controller> LongLoraConfig::make_controller(PeftModel& pm, const std::string& /*adapter*/,
                                                            uint64_t /*seed*/) const {
    if (use_s2_attn && !inference_mode) set_shifted_sparse_attention(pm.model(), group_size_ratio, shift_roll);
    return nullptr;
}

LoraConfig LongLoraConfig::lora_part() const { return static_cast<const LoraConfig&>(*this); }

int64_t set_shifted_sparse_attention(nn::Module& model, double ratio, bool roll) {
    EMBER_CHECK(ratio >= 0 && ratio <= 1, "set_shifted_sparse_attention: ratio must lie in [0, 1] (0 = off), got ",
                ratio);
    int64_t changed = 0;
    for (auto& [name, m] : model.named_modules()) {
        auto* attn = dynamic_cast<nn::MultiHeadAttention*>(m.get());
        if (!attn) continue;
        EMBER_CHECK(ratio == 0 || attn->config.heads % 2 == 0, "set_shifted_sparse_attention: ", name, " has ",
                    attn->config.heads, " heads; S2-Attn shifts half of them, so it needs an even number");
        attn->config.shifted_group_ratio = ratio;
        attn->config.shifted_roll = roll;
        ++changed;
    }
    return changed;
}

// ---- LongLoRA's files ----

static const LongLoraConfig& longlora_config(const PeftModel& pm, const std::string& adapter, const char* op) {
    auto* c = dynamic_cast<const LongLoraConfig*>(&pm.config(adapter));
    EMBER_CHECK(c, op, ": adapter '", adapter, "' is ", pm.config(adapter).peft_type(),
                ", not LONGLORA; use PeftModel::save_pretrained for other methods");
    return *c;
}

void save_longlora(const PeftModel& pm, const std::string& dir, const std::string& adapter) {
    const LongLoraConfig& cfg = longlora_config(pm, adapter, "save_longlora");
    std::set<std::string> tuned;
    for (const std::string& n : pm.tuned_base_parameters(adapter)) tuned.insert(SAVED_PREFIX + n);
    nn::StateDict lora, trained;
    for (auto& [key, t] : pm.adapter_state_dict(adapter)) {
        if (tuned.count(key)) trained[key.substr(SAVED_PREFIX.size())] = t;
        else lora[key] = t;
    }
    nn::make_folders(dir, "save_longlora");
    nn::save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), lora, {{"format", "pt"}});
    nn::save_safetensors((fs::path(dir) / TRAINABLE_FILE).string(), trained, {{"format", "pt"}});
    LoraConfig saved = cfg.lora_part();
    saved.inference_mode = true;
    nn::write_file_atomically((fs::path(dir) / "adapter_config.json").string(), saved.to_json() + "\n");
}

static std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    EMBER_CHECK(f, "load_longlora: cannot open ", path, " (is this a folder written by save_longlora?)");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::unique_ptr<PeftModel> load_longlora(std::shared_ptr<nn::Module> model, const std::string& dir,
                                         bool is_trainable, const std::string& model_type) {
    EMBER_CHECK(model, "load_longlora: the model is null");
    LongLoraConfig cfg;
    static_cast<LoraConfig&>(cfg) = LoraConfig::from_json(read_text((fs::path(dir) / "adapter_config.json").string()));
    cfg.inference_mode = !is_trainable;
    nn::StateDict sd = nn::load_safetensors((fs::path(dir) / "adapter_model.safetensors").string()).tensors;
    const std::string trained_path = (fs::path(dir) / TRAINABLE_FILE).string();
    EMBER_CHECK(fs::exists(trained_path), "load_longlora: ", trained_path, " is missing; a LongLoRA folder holds "
                "the LoRA adapter and the trained embeddings and norms beside it (save_longlora writes both)");
    for (auto& [name, t] : nn::load_safetensors(trained_path).tensors) sd[SAVED_PREFIX + name] = t;
    auto pm = std::make_unique<PeftModel>(model, cfg, "default", 0, model_type);
    pm->load_adapter_state_dict(sd, "default");  // checks every name and shape against the model
    return pm;
}

std::shared_ptr<nn::Module> merge_longlora(std::shared_ptr<nn::Module> model, const std::string& dir) {
    return load_longlora(std::move(model), dir)->merge_and_unload();
}

// ---- the method table's row ----

std::shared_ptr<PeftConfig> longlora_from_json(const std::string& text) {
    return std::make_shared<LongLoraConfig>(LongLoraConfig::from_json(text));
}

// LongLoRA's defaults (r 8, alpha 16) at the examples' rank, alpha = 2 r.
std::shared_ptr<PeftConfig> longlora_preset(const PresetOptions& o) {
    auto c = std::make_shared<LongLoraConfig>();
    c->r = o.rank, c->lora_alpha = 2.0 * double(o.rank);
    if (o.model_type == "vit") {  // no causal long sequences to group: LoRA + embeddings + norms only
        c->target_modules = ModuleSelector{"query", "key", "value", "attention.output.dense"};
        c->use_s2_attn = false;
    }
    return c;
}

}  // namespace peft
}  // namespace ember
