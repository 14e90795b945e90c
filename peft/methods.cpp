// The method table. Each row's functions live in the method's own file.
#include "peft/methods.h"

#include "peft/adalora.h"
#include "peft/bitfit.h"
#include "peft/dylora.h"
#include "peft/houlsby.h"
#include "peft/ia3.h"
#include "peft/longlora.h"
#include "peft/lora.h"
#include "peft/prefix_tuning.h"
#include "peft/prompt_tuning.h"
#include "peft/qalora.h"
#include "peft/qlora.h"
#include "peft/vera.h"
#include "peft/vpt.h"
#include "tensor/check.h"

namespace ember {
namespace peft {

const std::vector<Method>& method_table() {
    static const std::vector<Method> table = {
        {"lora", "LORA", "low-rank update B A of the targeted weights (Hu et al., 2021)", lora_from_json,
         lora_preset, 3e-3},
        {"dora", "LORA", "LoRA with a learned per-channel magnitude (Liu et al., 2024)", lora_from_json,
         dora_preset, 3e-3},
        {"dylora", "DYLORA", "LoRA trained at every rank at once (Valipour et al., 2023)", dylora_from_json,
         dylora_preset, 3e-3},
        {"adalora", "ADALORA", "LoRA in SVD form with a pruned rank budget (Zhang et al., 2023)",
         adalora_from_json, adalora_preset, 1e-2},
        {"ia3", "IA3", "learned scales of activations (Liu et al., 2022)", ia3_from_json, ia3_preset, 1e-2},
        {"vera", "VERA", "shared frozen random projections, learned scales (Kopiczko et al., 2024)",
         vera_from_json, vera_preset, 1e-2},
        {"bitfit", "BITFIT", "every bias trains, nothing is added (Ben Zaken et al., 2022)", bitfit_from_json,
         bitfit_preset, 3e-3},
        {"houlsby", "HOULSBY", "bottleneck adapters after attention and the MLP (Houlsby et al., 2019)",
         houlsby_from_json, houlsby_preset, 3e-3},
        {"prompt_tuning", "PROMPT_TUNING", "learned virtual tokens before the input (Lester et al., 2021)",
         prompt_tuning_from_json, prompt_tuning_preset, 3e-2},
        {"prefix_tuning", "PREFIX_TUNING", "learned keys and values in every layer's attention (Li & Liang, 2021)",
         prefix_tuning_from_json, prefix_tuning_preset, 1e-2},
        // Both are peft LoRA files (peft_type LORA; QA-LoRA with use_qalora), read by lora_from_json.
        {"qlora", "LORA", "LoRA on every Linear quantized to NF4, double-quantized (Dettmers et al., 2023)",
         lora_from_json, qlora_preset, 3e-3},
        {"qalora", "LORA", "LoRA on group-pooled inputs over an INT4 base, merged into its zero points (Xu et al., 2024)",
         qalora_from_json, qalora_preset, 3e-3},
        {"vpt", "VPT", "learned prompt tokens among a ViT's patches, shallow or deep (Jia et al., 2022)", vpt_from_json,
         vpt_preset, 1e-2},
        {"longlora", "LONGLORA", "LoRA on q,k,v,o + embeddings and norms, shifted sparse attention (Chen et al., 2024)",
         longlora_from_json, longlora_preset, 3e-3},
    };
    return table;
}

const Method& find_method(const std::string& name) {
    for (const Method& m : method_table())
        if (m.name == name) return m;
    throw Error(make_message("peft: no method named '", name, "'; choose one of: ", method_names()));
}

std::string method_names(const std::string& separator) {
    std::string out;
    for (const Method& m : method_table()) out += (out.empty() ? "" : separator) + m.name;
    return out;
}

}  // namespace peft
}  // namespace ember
