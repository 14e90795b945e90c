// VeRA (Kopiczko et al., ICLR 2024) on a Linear, as peft's tuners/vera/layer.py.
//
// One pair of frozen random matrices is shared by every adapted layer of an adapter:
//   vera_A (r, in_max), vera_B (out_max, r)   in_max / out_max: the largest in / out over the targets
// and each layer slices them to its own size and learns two vectors:
//   h = W0 x + b + lambda_b * ( B[:out, :] ( lambda_d * ( A[:, :in] dropout(x) ) ) )
//   vera_lambda_d (r) starts at d_initial (0.1), vera_lambda_b (out) at zero: a no-op at init.
// Merge: W <- W + diag(lambda_b) B_s diag(lambda_d) A_s.
//
// A and B are kaiming-uniform with a = 0 (bound sqrt(6 / fan_in); A's fan_in is in_max, B's is r),
// A drawn before B from a generator seeded with projection_prng_key. Choice: Ember's generator is
// its Philox stream, not torch's CPU Mersenne Twister, so the numbers differ from peft's for the
// same key; an Ember-saved adapter regenerates its own projections exactly, and with
// save_projection (the default) the file carries them ("base_model.vera_A", "base_model.vera_B"),
// so a peft file loads with peft's matrices.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/config.h"
#include "peft/tuner.h"

namespace ember {
namespace peft {

// VeRA's options, peft's VeraConfig (tuners/vera/config.py).
class VeraConfig : public PeftConfig {
public:
    std::string peft_type() const override { return "VERA"; }
    std::shared_ptr<PeftConfig> clone() const override { return std::make_shared<VeraConfig>(*this); }
    std::string to_json() const override;
    std::shared_ptr<TunerLayer> make_layer(std::shared_ptr<nn::LinearBase> base) const override;
    std::string layer_type() const override;
    static VeraConfig from_json(const std::string& text);

    int64_t r = 256;
    double vera_dropout = 0;
    double d_initial = 0.1;
    uint64_t projection_prng_key = 0;
    bool save_projection = true;
    std::string bias = "none";
    void fill_defaults(const std::string& model_type) override;
};

class VeraLayer : public TunerLayer {
public:
    explicit VeraLayer(std::shared_ptr<nn::LinearBase> base);
    std::string type_name() const override { return "VeraLinear"; }

    void add_adapter(const std::string& name, const PeftConfig& config, const std::string& key,
                     AdapterContext& ctx) override;
    void delete_adapter(const std::string& name) override;

    // This layer's slices of the shared projections: A[:, :in] (r, in), B[:out, :] (out, r).
    Tensor sliced_A(const std::string& name) const;
    Tensor sliced_B(const std::string& name) const;
    Tensor delta_weight(const std::string& name) const;  // diag(b) B_s diag(d) A_s (out, in)

    void add_to_state_dict(const std::string& adapter, const std::string& key, nn::StateDict& sd) const override;

    std::shared_ptr<ParameterDict> vera_lambda_b, vera_lambda_d;
    // The adapter's whole shared projections (frozen buffers; every layer of the adapter holds
    // the same two tensors).
    std::shared_ptr<BufferDict> vera_A, vera_B;
    std::shared_ptr<Generator> rng;

protected:
    Tensor forward_adapters(const Tensor& x) override;
    void merge_into(const std::string& name, Tensor& W, Tensor& b) const override;

private:
    struct Settings {
        double dropout = 0;
        bool save_projection = true;
    };
    std::map<std::string, Settings> settings_;
};

// The method table's row functions (peft/methods.h).
struct PresetOptions;
std::shared_ptr<PeftConfig> vera_from_json(const std::string& text);
std::shared_ptr<PeftConfig> vera_preset(const PresetOptions& options);

}  // namespace peft
}  // namespace ember
