// Optimizers over parameter groups (SGD with momentum/Nesterov, AdamW), gradient clipping and the
// decay / no-decay split.
//
// A training step is the caller's loop:
//
//     opt.zero_grad();
//     for (micro-batch in batch) {           // gradient accumulation: .grad sums across
//         Tensor loss = model(...) / n_micro;  // backward calls until zero_grad()
//         loss.backward();
//     }
//     clip_grad_norm(params, 1.0);
//     opt.set_lr_factor(schedule.factor(opt.step_count));
//     opt.step();
//
// Parameters without a .grad (frozen ones, or ones the loss did not reach) are skipped and get no
// state. The optimizer holds the parameter tensors themselves: create it after module.to(...).
// state() names every tensor "<group>.<index>.<name>" (exp_avg, exp_avg_sq, momentum_buffer,
// step; 8-bit AdamW: exp_avg_codes, exp_avg_absmax, exp_avg_sq_codes, exp_avg_sq_absmax) plus
// "step_count", so a checkpoint can store it and load_state() resumes bit for bit.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace ember {
namespace nn {

struct ParamGroup {
    std::vector<Tensor> params;
    double lr = 1e-3, weight_decay = 0;
};

class Optimizer {
public:
    explicit Optimizer(std::vector<ParamGroup> groups);
    virtual ~Optimizer() = default;
    virtual std::string name() const = 0;

    virtual void step() = 0;  // one update of every parameter that has a .grad; step_count += 1
    void zero_grad();         // drops every parameter's .grad
    std::vector<ParamGroup>& groups() { return groups_; }
    // Sets each group's lr to its initial lr times factor (for schedules).
    void set_lr_factor(double factor);

    virtual StateDict state() const;  // copies: later steps do not change them
    virtual void load_state(const StateDict& state);

    int64_t step_count = 0;

protected:
    struct ParamState {
        std::map<std::string, Tensor> tensors;  // exp_avg, ...
        int64_t step = 0;                       // updates this parameter has had
    };
    // State of parameter i of group g, made on first use.
    ParamState& state_of(size_t g, size_t i) { return state_[{g, i}]; }

    std::vector<ParamGroup> groups_;
    std::vector<double> initial_lrs_;
    std::map<std::pair<size_t, size_t>, ParamState> state_;

    // The shape and dtype that load_state expects of state tensor `name` of parameter p: p's own
    // unless an optimizer stores its state in another form.
    virtual std::pair<Shape, DType> state_layout(const std::string& /*name*/, const Tensor& p) const {
        return {p.shape(), p.dtype()};
    }
};

// torch.optim.SGD: d = g + wd p; buf = momentum buf + (1 - dampening) d (buf = d at first);
// d = nesterov ? d + momentum buf : buf; p -= lr d.
struct SGDOptions {
    double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
    bool nesterov = false;
};

class SGD : public Optimizer {
public:
    // Group lr / weight_decay are used as given; options supply momentum, dampening, nesterov.
    SGD(std::vector<ParamGroup> groups, const SGDOptions& options = {});
    SGD(const std::vector<Tensor>& params, const SGDOptions& options = {});
    std::string name() const override { return "SGD"; }
    void step() override;

    SGDOptions options;
};

// torch.optim.AdamW, decoupled weight decay, through the fused raw::adamw_ kernel.
struct AdamWOptions {
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

// Where AdamW keeps its two moments: bitsandbytes' family of AdamW, PagedAdamW, AdamW8bit and
// PagedAdamW8bit is one update with the state stored four ways.
//   paged  the moments of every parameter of at least min_paged_numel elements live in paged
//          memory (nn/paged_memory.h): on the CPU a file-backed mapping the OS may write back and
//          drop, on CUDA managed memory kept on the host and prefetched to the GPU before each
//          update (bitsandbytes pages parameters of 1e5 elements or more:
//          bitsandbytes/optim/optimizer.py get_state_buffer).
//   bits   32: f32 moments like the parameter. 8: every f32 parameter of at least min_8bit_numel
//          elements keeps its moments as one byte each plus an f32 absmax per block of 256
//          (raw::adamw_8bit_multi_, tensor/ops.h; CPU only), a quarter of the memory; smaller ones
//          keep f32 moments (bitsandbytes' min_8bit_size, 4096).
struct MomentStorage {
    bool paged = false;
    int64_t min_paged_numel = 100000;
    int bits = 32;
    int64_t min_8bit_numel = 4096;
};

class AdamW : public Optimizer {
public:
    // Group lr / weight_decay are used as given; options supply betas and eps.
    AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options = {}, const MomentStorage& moments = {});
    AdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {}, const MomentStorage& moments = {});
    std::string name() const override;  // AdamW, PagedAdamW, AdamW8bit or PagedAdamW8bit
    void step() override;
    // Loads a state() of an optimizer with the same MomentStorage (the moments' form must match).
    void load_state(const StateDict& state) override;

    // Bytes of state in paged memory, and in ordinary memory.
    int64_t paged_bytes() const;
    int64_t resident_bytes() const;

    AdamWOptions options;
    const MomentStorage moments;

protected:
    std::pair<Shape, DType> state_layout(const std::string& name, const Tensor& p) const override;

private:
    bool pages(const Tensor& p) const { return moments.paged && p.numel() >= moments.min_paged_numel; }
    bool eight_bit(const Tensor& p) const {
        return moments.bits == 8 && p.dtype() == DType::F32 && p.numel() >= moments.min_8bit_numel;
    }
    std::vector<std::string> state_names(const Tensor& p) const;
    void init_state(ParamState& st, const Tensor& p) const;
    bool in_paged_memory(const Tensor& p, const std::string& state_name) const;
    int64_t state_bytes(bool paged) const;
};

// AdamW with its state paged (bitsandbytes' paged_adamw_32bit, as qlora.py trains with): the same
// update, bit for bit. Loading a state copies it into paged memory too.
class PagedAdamW : public AdamW {
public:
    PagedAdamW(std::vector<ParamGroup> groups, const AdamWOptions& options = {}, int64_t min_paged_numel = 100000);
    PagedAdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {}, int64_t min_paged_numel = 100000);
};

// AdamW with 8-bit block-wise moments (bitsandbytes' AdamW8bit; paged: PagedAdamW8bit).
class AdamW8bit : public AdamW {
public:
    AdamW8bit(std::vector<ParamGroup> groups, const AdamWOptions& options = {}, bool paged = false);
    AdamW8bit(const std::vector<Tensor>& params, const AdamWOptions& options = {}, bool paged = false);
};

// Scales every .grad by max_norm / total when the total L2 norm over all of them exceeds
// max_norm (out of place: the scaled gradient replaces .grad). Returns the total norm before
// clipping. Parameters without a .grad are ignored.
// The sum of squares of every element of every tensor, in f64: on the GPU one fused reduction
// over all of them and one host sync (tensor/cuda/reduce.cu), else one sum per tensor.
double sum_of_squares(const std::vector<Tensor>& tensors);
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Two groups over the trainable parameters of `module`: {decayed, not decayed}. Biases, norm
// weights and every other 1-D parameter go to the second group (weight_decay 0).
std::vector<ParamGroup> decay_groups(const Module& module, double lr, double weight_decay);

}  // namespace nn
}  // namespace ember
