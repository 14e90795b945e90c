// BitFit: exactly the biases train (LayerNorm biases included, LayerNorm weights not), in place;
// the file holds them under their own names; exclude_modules keeps a module's bias frozen.
#include <filesystem>

#include <unistd.h>

#include "nn/safetensors.h"
#include "peft/bitfit.h"
#include "tests/shape_twins.h"
#include "tests/test_peft_helpers.h"

using namespace ember;
using namespace ember::testing;
using peft::BitFitConfig;
using peft::PeftModel;

TEST_CASE("BitFit: every bias of GPT-2 small trains, nothing else: 102,144") {
    auto gpt = gpt2_twin(50257, 1024, 768, 12);
    PeftModel pm(gpt, BitFitConfig(), "default", 0, "gpt2");
    CHECK(pm.count_parameters().trainable == 102144);
    CHECK(pm.count_parameters().all == 124439808);  // nothing added
    for (auto& [n, t] : gpt->named_parameters()) {
        const bool bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
        CHECK_MESSAGE(t.requires_grad() == bias, n);
    }
}

TEST_CASE("BitFit: ViT-B/16's biases incl. the patch projection and final norm: 102,912 without the head") {
    BitFitConfig c;
    c.exclude_modules = peft::ModuleSelector{"classifier"};
    PeftModel pm(vit_twin(224, 16, 3, 768, 12, 101), c, "default", 0, "vit");
    CHECK(pm.count_parameters().trainable == 102912);
    PeftModel with_head(vit_twin(224, 16, 3, 768, 12, 101), BitFitConfig(), "default", 0, "vit");
    CHECK(with_head.count_parameters().trainable == 102912 + 101);
}

TEST_CASE("BitFit: trains in place; the file holds the biases under their own names") {
    auto gpt = tiny_gpt2();
    Tensor ids = tiny_ids();
    Tensor bias_slot = gpt->parameter("transformer.h.0.attn.c_attn.bias");
    PeftModel pm(gpt, BitFitConfig());
    train_gpt_steps(*gpt, 3);
    // No copy: the model's own bias tensor moved.
    CHECK(gpt->parameter("transformer.h.0.attn.c_attn.bias").impl_ptr() == bias_slot.impl_ptr());
    CHECK(bias_slot.to_vector<double>() != std::vector<double>(size_t(bias_slot.numel()), 0.0));
    nn::StateDict sd = pm.adapter_state_dict();
    int64_t biases = 0;
    for (auto& [n, t] : gpt->named_parameters())
        if (n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0) {
            ++biases;
            CHECK_MESSAGE(sd.count("base_model.model." + n), n);
        }
    CHECK(int64_t(sd.size()) == biases);
    std::string dir = (std::filesystem::temp_directory_path() / ("ember_bitfit_" + std::to_string(::getpid()))).string();
    pm.save_pretrained(dir);
    CHECK(peft::config_from_json(pm.config().to_json())->peft_type() == "BITFIT");
    auto fresh = tiny_gpt2();
    PeftModel::from_pretrained(fresh, dir);
    CHECK(bit_equal(fresh->forward_ids(ids), gpt->forward_ids(ids)));
    std::filesystem::remove_all(dir);
}
