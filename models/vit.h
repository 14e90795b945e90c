// ViT: an image classifier that cuts the image into patches, embeds each patch with one matrix
// product, prepends a learned [CLS] token, adds learned positions, runs pre-norm transformer
// layers and classifies the final [CLS] vector.
//
// Parameters are named as Hugging Face's ViTForImageClassification, so its checkpoints load
// and PEFT targets ("query", "value", ...) match peft's: vit.embeddings.cls_token,
// vit.embeddings.position_embeddings, vit.embeddings.patch_embeddings.projection.{weight,bias},
// vit.encoder.layer.N.{layernorm_before, attention.attention.{query,key,value},
// attention.output.dense, layernorm_after, intermediate.dense, output.dense}, vit.layernorm,
// classifier.
#pragma once

#include <memory>
#include <string>

#include "nn/attention.h"
#include "nn/containers.h"
#include "nn/forward_inputs.h"
#include "nn/layers.h"
#include "nn/transformer.h"

namespace ember {
namespace models {

struct ViTConfig {
    int64_t image_size = 28, patch = 7, channels = 1;
    int64_t dim = 64, layers = 4, heads = 4;
    int64_t hidden = 0;  // MLP width; 0: 4 * dim
    int64_t num_labels = 10;
    double dropout = 0;
    double norm_eps = 1e-12;  // Hugging Face ViT's layer_norm_eps

    int64_t num_patches() const { return (image_size / patch) * (image_size / patch); }
    int64_t mlp_hidden() const { return hidden > 0 ? hidden : 4 * dim; }
    static ViTConfig from_hf_json(const std::string& json_text);
    std::string to_hf_json() const;
    // Throws an ember::Error naming the field and the fix unless every size is positive, the
    // patch divides the image and heads divide the width. The constructor calls it.
    void validate() const;
    double parameter_count() const;  // what the constructor will allocate, in parameters
};

// One encoder layer is an nn::TransformerBlock (the block GPT uses, so every adapter site and
// attention option exists once) under Hugging Face's names: layernorm_before,
// attention.attention.{query,key,value}, attention.output.dense, layernorm_after,
// intermediate.dense, output.dense (nn/module.h's dotted and inlined child names). Bidirectional
// attention, exact (erf) GELU, hidden and attention-probability dropout both config.dropout.
nn::BlockConfig vit_block_config(const ViTConfig& c);

// Per-forward inputs (nn/forward_inputs.h): a module in the slot prompt_encoder may supply layer
// prefixes (prefix tuning), and virtual tokens (placed after [CLS], without position embeddings)
// with optional deep prompts for every later layer (VPT, peft/vpt.h).
class ViT : public nn::Module, public nn::TakesForwardInputs {
public:
    ViT(const ViTConfig& config, uint64_t seed);
    std::string type_name() const override { return "ViT"; }

    Tensor forward(const Tensor& images) override;  // (B, C, H, W) or (B, H, W) -> logits (B, labels)
    // A folder with model.safetensors and config.json, as Hugging Face writes them.
    void save_pretrained(const std::string& dir) const;
    static std::shared_ptr<ViT> from_pretrained(const std::string& dir, uint64_t seed = 0);
    Tensor features(const Tensor& images);          // the final normed [CLS] vectors (B, C)
    // (B, C, H, W) -> (B, N, C * P * P), patches in row-major order, each flattened as (C, P, P)
    // to match the projection weight's (dim, C, P, P) layout (a stride-P convolution's).
    Tensor patchify(const Tensor& images) const;
    nn::TransformerBlock& layer(size_t i) const { return *(*layers)[i]; }
    size_t num_layers() const { return layers->size(); }
    nn::ForwardShape forward_shape() const override;

    ViTConfig config;
    std::shared_ptr<nn::ForwardInputs> prompt_encoder;  // null: no per-forward inputs
    std::shared_ptr<Generator> rng;
    std::shared_ptr<nn::Linear> classifier;

private:
    class Embeddings;
    class Encoder;
    class Body;
    std::shared_ptr<Body> body;
    std::shared_ptr<nn::ModuleList<nn::TransformerBlock>> layers;
};

}  // namespace models
}  // namespace ember
