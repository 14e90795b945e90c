// Prompt tuning: the virtual-token embeddings, their initialisations and peft's file. See prompt_tuning.h.
#include "peft/prompt_tuning.h"

#include "nn/init.h"
#include "peft/config_json.h"
#include "peft/methods.h"

namespace ember {
namespace peft {

std::string PromptTuningConfig::to_json() const {
    nlohmann::json j = prompt_learning_json();
    j["prompt_tuning_init"] = prompt_tuning_init;
    j["prompt_tuning_init_text"] = str_or_null(prompt_tuning_init_text);
    j["tokenizer_name_or_path"] = str_or_null(tokenizer_name_or_path);
    j["tokenizer_kwargs"] = nullptr;
    return j.dump(2);
}

PromptTuningConfig PromptTuningConfig::from_json(const std::string& text) {
    nlohmann::json j = parse_config(text, "PROMPT_TUNING");
    PromptTuningConfig c;
    c.read_prompt_learning(j);
    auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
    c.prompt_tuning_init = j.contains("prompt_tuning_init") && j["prompt_tuning_init"].is_string()
                               ? j["prompt_tuning_init"].get<std::string>() : "RANDOM";
    c.prompt_tuning_init_text = str("prompt_tuning_init_text");
    c.tokenizer_name_or_path = str("tokenizer_name_or_path");
    return c;
}

std::shared_ptr<PromptModule> PromptTuningConfig::make_forward_inputs(const nn::ForwardShape& shape,
                                                                       Generator& init_gen) const {
    EMBER_CHECK(shape.word_embeddings.defined(), "PromptTuningConfig: prompt tuning puts virtual tokens before "
                "the token embeddings, and this model has none (for ViT use VPT or prefix tuning)");
    EMBER_CHECK(num_virtual_tokens > 0, "PromptTuningConfig: num_virtual_tokens must be set (> 0)");
    auto m = std::make_shared<PromptEmbedding>(num_virtual_tokens, shape.dim, init_gen);
    const Tensor& words = shape.word_embeddings;  // (V, d)
    std::vector<int64_t> ids;
    if (prompt_tuning_init == "TEXT") {
        EMBER_CHECK(!init_token_ids.empty(), "PromptTuningConfig: prompt_tuning_init TEXT needs init_token_ids, the "
                    "tokenizer's ids of prompt_tuning_init_text (e.g. tokenizer.encode(text))");
        for (int64_t i = 0; i < num_virtual_tokens; ++i) ids.push_back(init_token_ids[size_t(i) % init_token_ids.size()]);
    } else if (prompt_tuning_init == "SAMPLE_VOCAB") {
        Tensor drawn = randint(0, words.size(0), {num_virtual_tokens}, init_gen);
        ids = drawn.to_vector<int64_t>();
    } else {
        EMBER_CHECK(prompt_tuning_init == "RANDOM", "PromptTuningConfig: prompt_tuning_init \"", prompt_tuning_init,
                    "\" is not one of RANDOM, TEXT, SAMPLE_VOCAB");
        return m;
    }
    for (int64_t id : ids)
        EMBER_CHECK(id >= 0 && id < words.size(0), "PromptTuningConfig: init token id ", id, " is outside the vocabulary (",
                    words.size(0), ")");
    NoGradGuard no_grad;
    Tensor index = from_vector(ids, {int64_t(ids.size())}, words.device());
    raw::copy_(m->embedding->weight, raw::to_dtype(raw::index_select(words.detach(), 0, index), m->embedding->weight.dtype()));
    return m;
}

PromptEmbedding::PromptEmbedding(int64_t n, int64_t dim, Generator& init_gen) {
    embedding = std::make_shared<nn::Embedding>(n, dim, init_gen);
    NoGradGuard no_grad;
    nn::normal_(embedding->weight, 0, 1, init_gen);  // torch's nn.Embedding default, as peft's RANDOM
    register_module("embedding", embedding);
}

void PromptEmbedding::supply(nn::ForwardContext& ctx) { ctx.add_virtual_tokens(embedding->weight.unsqueeze(0)); }

nn::StateDict PromptEmbedding::saved_tensors() const { return {{"prompt_embeddings", embedding->weight}}; }

std::shared_ptr<PeftConfig> prompt_tuning_from_json(const std::string& text) {
    return std::make_shared<PromptTuningConfig>(PromptTuningConfig::from_json(text));
}

// The examples' prompt tuning: --rank virtual tokens, random init.
std::shared_ptr<PeftConfig> prompt_tuning_preset(const PresetOptions& o) {
    auto c = std::make_shared<PromptTuningConfig>();
    c->num_virtual_tokens = o.rank > 0 ? o.rank : 8;
    return c;
}

}  // namespace peft
}  // namespace ember
