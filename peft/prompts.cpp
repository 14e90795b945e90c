// PromptAdapters: the per-adapter prompt modules of a model and which of them speak.
#include "peft/prompts.h"

#include "peft/config_json.h"

namespace ember {
namespace peft {

void PromptLearningConfig::fill_from_model(const nn::ForwardShape& shape) {
    EMBER_CHECK(num_virtual_tokens > 0, peft_type(), ": num_virtual_tokens must be set (> 0), got ", num_virtual_tokens);
    if (token_dim == 0) token_dim = shape.dim;
    if (num_layers == 0) num_layers = shape.layers;
    if (num_attention_heads == 0) num_attention_heads = shape.heads;
    EMBER_CHECK(token_dim == shape.dim && num_layers == shape.layers, peft_type(), ": the config's token_dim ",
                token_dim, " and num_layers ", num_layers, " do not fit this model (", shape.dim, ", ", shape.layers,
                " layers); was the adapter made for another model?");
}

nlohmann::json PromptLearningConfig::prompt_learning_json() const {
    nlohmann::json j;
    j["peft_type"] = peft_type();
    j["task_type"] = str_or_null(task_type);
    j["auto_mapping"] = nullptr;
    j["peft_version"] = "0.20.1.dev0";
    j["base_model_name_or_path"] = str_or_null(base_model_name_or_path);
    j["revision"] = str_or_null(revision);
    j["inference_mode"] = inference_mode;
    j["num_virtual_tokens"] = num_virtual_tokens;
    j["token_dim"] = token_dim;
    j["num_transformer_submodules"] = num_transformer_submodules;
    j["num_attention_heads"] = num_attention_heads;
    j["num_layers"] = num_layers;
    j["modules_to_save"] = modules_to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(modules_to_save);
    return j;
}

void PromptLearningConfig::read_prompt_learning(const nlohmann::json& j) {
    read_common(j, *this);
    auto integer = [&](const char* k, int64_t fallback) {
        return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : fallback;
    };
    num_virtual_tokens = integer("num_virtual_tokens", 0);
    token_dim = integer("token_dim", 0);
    num_transformer_submodules = integer("num_transformer_submodules", 1);
    num_attention_heads = integer("num_attention_heads", 0);
    num_layers = integer("num_layers", 0);
}

void PromptAdapters::set(const std::string& adapter, std::shared_ptr<PromptModule> m) {
    auto it = slots_.find(adapter);
    if (it == slots_.end()) {
        if (!m) return;
        it = slots_.emplace(adapter, nullptr).first;
        register_module(adapter, it->second);
    }
    it->second = std::move(m);
}

std::shared_ptr<PromptModule> PromptAdapters::get(const std::string& adapter) const {
    auto it = slots_.find(adapter);
    return it == slots_.end() ? nullptr : std::static_pointer_cast<PromptModule>(it->second);
}

std::vector<std::string> PromptAdapters::adapter_names() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : slots_)
        if (m) out.push_back(name);
    return out;
}

void PromptAdapters::supply(nn::ForwardContext& ctx) {
    if (disabled_) return;
    for (const std::string& a : active_)
        if (auto m = get(a)) m->supply(ctx);
}

int64_t PromptAdapters::virtual_token_count() const {
    if (disabled_) return 0;
    int64_t n = 0;
    for (const std::string& a : active_)
        if (auto m = get(a)) n += m->virtual_token_count();
    return n;
}

}  // namespace peft
}  // namespace ember
