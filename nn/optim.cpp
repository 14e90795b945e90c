// Optimizers. Updates run under NoGradGuard with raw in-place ops on the parameter tensors; the
// AdamW arithmetic is one fused kernel (raw::adamw_, tensor/cpu/optim.cpp).
#include "nn/optim.h"

#include <cmath>

#include "nn/paged_memory.h"
#include "tensor/cuda/cuda.h"

namespace ember {
namespace nn {

// ---- the base: groups and state ----

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
    for (size_t g = 0; g < groups_.size(); ++g) {
        initial_lrs_.push_back(groups_[g].lr);
        for (size_t i = 0; i < groups_[g].params.size(); ++i) {
            const Tensor& p = groups_[g].params[i];
            EMBER_CHECK(p.defined() && is_floating(p.dtype()), "Optimizer: parameter ", i, " of group ",
                        g, " is undefined or not floating-point");
        }
    }
}

void Optimizer::zero_grad() {
    for (auto& group : groups_)
        for (auto& p : group.params) p.zero_grad();
}

void Optimizer::set_lr_factor(double factor) {
    for (size_t g = 0; g < groups_.size(); ++g) groups_[g].lr = initial_lrs_[g] * factor;
}

StateDict Optimizer::state() const {
    StateDict out;
    out["step_count"] = scalar_tensor(double(step_count), DType::I64);
    for (const auto& [key, st] : state_) {
        const std::string prefix = std::to_string(key.first) + "." + std::to_string(key.second) + ".";
        out[prefix + "step"] = scalar_tensor(double(st.step), DType::I64);
        for (const auto& [name, t] : st.tensors) out[prefix + name] = raw::clone(t);
    }
    return out;
}

void Optimizer::load_state(const StateDict& state) {
    std::map<std::pair<size_t, size_t>, ParamState> loaded;
    int64_t count = 0;
    for (const auto& [key, t] : state) {
        if (key == "step_count") {
            count = t.item<int64_t>();
            continue;
        }
        size_t d1 = key.find('.'), d2 = d1 == std::string::npos ? d1 : key.find('.', d1 + 1);
        auto is_index = [](const std::string& t) {
            return !t.empty() && t.size() < 10 && t.find_first_not_of("0123456789") == std::string::npos;
        };
        EMBER_CHECK(d2 != std::string::npos && is_index(key.substr(0, d1)) &&
                        is_index(key.substr(d1 + 1, d2 - d1 - 1)),
                    name(), "::load_state: key '", key, "' is not \"<group>.<index>.<name>\"");
        size_t g = std::stoul(key.substr(0, d1)), i = std::stoul(key.substr(d1 + 1, d2 - d1 - 1));
        const std::string what = key.substr(d2 + 1);
        EMBER_CHECK(g < groups_.size() && i < groups_[g].params.size(), name(), "::load_state: key '",
                    key, "' names a parameter this optimizer does not have (", groups_.size(),
                    " groups); build the optimizer over the same parameters as the saved one");
        const Tensor& p = groups_[g].params[i];
        if (what == "step") {
            loaded[{g, i}].step = t.item<int64_t>();
            continue;
        }
        const auto [shape, dtype] = state_layout(what, p);
        EMBER_CHECK(t.shape() == shape, name(), "::load_state: '", key, "' has shape ", t.shape(),
                    " but this optimizer keeps it as ", shape, " for a parameter of shape ", p.shape());
        EMBER_CHECK(is_floating(t.dtype()) == is_floating(dtype), name(), "::load_state: '", key,
                    "' is ", dtype_name(t.dtype()), " but this optimizer keeps it as ", dtype_name(dtype));
        loaded[{g, i}].tensors[what] =
            raw::contiguous(raw::clone(raw::to_dtype(raw::to_device(t, p.device()), dtype)));
    }
    state_ = std::move(loaded);
    step_count = count;
}

// ---- SGD ----

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& o) : Optimizer(std::move(groups)), options(o) {
    EMBER_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: Nesterov momentum needs "
                "momentum > 0 and dampening 0");
}

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& o)
    : SGD(std::vector<ParamGroup>{ParamGroup{params, o.lr, o.weight_decay}}, o) {}

void SGD::step() {
    NoGradGuard no_grad;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        for (size_t i = 0; i < group.params.size(); ++i) {
            const Tensor& p = group.params[i];
            Tensor d = p.grad();
            if (!d.defined()) continue;
            if (group.weight_decay != 0) d = raw::add(d, raw::mul_scalar(p, group.weight_decay));
            ParamState& st = state_of(g, i);
            st.step++;
            if (options.momentum != 0) {
                auto it = st.tensors.find("momentum_buffer");
                if (it == st.tensors.end()) {
                    it = st.tensors.emplace("momentum_buffer", raw::contiguous(raw::clone(d))).first;
                } else {
                    raw::mul_(it->second, options.momentum);
                    raw::add_(it->second, d, 1 - options.dampening);
                }
                const Tensor& buf = it->second;
                d = options.nesterov ? raw::add(d, raw::mul_scalar(buf, options.momentum)) : buf;
            }
            raw::add_(p, d, -group.lr);
        }
    }
    step_count++;
}

// ---- AdamW ----

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& o, const MomentStorage& m)
    : Optimizer(std::move(groups)), options(o), moments(m) {
    EMBER_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0,
                "AdamW: betas must lie in [0, 1) and eps >= 0, got (", o.beta1, ", ", o.beta2,
                ") and ", o.eps);
    EMBER_CHECK(m.bits == 32 || m.bits == 8, "AdamW: moments are kept in 32 or 8 bits, not ", m.bits);
    EMBER_CHECK(m.min_8bit_numel >= 1 && m.min_paged_numel >= 1, "AdamW: min_8bit_numel and "
                "min_paged_numel must be positive, got ", m.min_8bit_numel, " and ", m.min_paged_numel);
}

AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& o, const MomentStorage& m)
    : AdamW(std::vector<ParamGroup>{ParamGroup{params, o.lr, o.weight_decay}}, o, m) {}

std::string AdamW::name() const {
    return std::string(moments.paged ? "PagedAdamW" : "AdamW") + (moments.bits == 8 ? "8bit" : "");
}

// bitsandbytes pages a large parameter's moments, or their byte codes, but keeps the small absmax
// vectors resident (optimizer.py Optimizer8bit.init_state); so does this.
bool AdamW::in_paged_memory(const Tensor& p, const std::string& state_name) const {
    return pages(p) && state_name.find("absmax") == std::string::npos;
}

std::pair<Shape, DType> AdamW::state_layout(const std::string& name, const Tensor& p) const {
    const int64_t n = p.numel();
    if (name == "exp_avg_codes" || name == "exp_avg_sq_codes") return {{(n + 3) / 4}, DType::I32};
    if (name == "exp_avg_absmax" || name == "exp_avg_sq_absmax")
        return {{(n + raw::ADAMW_8BIT_BLOCK - 1) / raw::ADAMW_8BIT_BLOCK}, DType::F32};
    return Optimizer::state_layout(name, p);
}

// The names of p's state tensors, sorted (as a ParamState's map keeps them).
std::vector<std::string> AdamW::state_names(const Tensor& p) const {
    if (eight_bit(p)) return {"exp_avg_absmax", "exp_avg_codes", "exp_avg_sq_absmax", "exp_avg_sq_codes"};
    return {"exp_avg", "exp_avg_sq"};
}

void AdamW::init_state(ParamState& st, const Tensor& p) const {
    for (const std::string& name : state_names(p)) {
        const auto [shape, dtype] = state_layout(name, p);
        st.tensors[name] = in_paged_memory(p, name) ? paged_zeros(shape, dtype, p.device()) : zeros(shape, dtype, p.device());
    }
}

void AdamW::step() {
    NoGradGuard no_grad;
    // CUDA: the host-resident state of this step's parameters moves to the GPU ahead of the update.
    if (moments.paged)
        for (auto& [gi, st] : state_)
            for (auto& [n, t] : st.tensors)
                if (in_paged_memory(groups_[gi.first].params[gi.second], n)) prefetch_to_device(t);
    std::vector<raw::AdamWSlot> slots;  // every parameter with a gradient, updated in one pass
    std::vector<raw::AdamW8bitSlot> slots_8bit;
    for (size_t g = 0; g < groups_.size(); ++g) {
        const ParamGroup& group = groups_[g];
        for (size_t i = 0; i < group.params.size(); ++i) {
            const Tensor& p = group.params[i];
            Tensor grad = p.grad();
            if (!grad.defined()) continue;
            ParamState& st = state_of(g, i);
            if (st.tensors.empty()) init_state(st, p);
            st.step++;
            raw::AdamWParams hp{group.lr, options.beta1, options.beta2, options.eps,
                                group.weight_decay, st.step};
            auto& t = st.tensors;
            if (eight_bit(p))
                slots_8bit.push_back({p, raw::contiguous(grad), t["exp_avg_codes"], t["exp_avg_absmax"],
                                      t["exp_avg_sq_codes"], t["exp_avg_sq_absmax"], hp});
            else
                slots.push_back({p, raw::contiguous(grad), t["exp_avg"], t["exp_avg_sq"], hp});
        }
    }
    raw::adamw_multi_(slots);
    raw::adamw_8bit_multi_(slots_8bit);
    step_count++;
}

void AdamW::load_state(const StateDict& state) {
    Optimizer::load_state(state);
    NoGradGuard no_grad;
    for (auto& [gi, st] : state_) {
        const Tensor& p = groups_[gi.first].params[gi.second];
        std::vector<std::string> found;
        for (const auto& [n, t] : st.tensors) found.push_back(n);
        auto listed = [](const std::vector<std::string>& names) {
            std::string out;
            for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
            return "{" + out + "}";
        };
        EMBER_CHECK(found == state_names(p), name(), "::load_state: the state of parameter ", gi.first, ".",
                    gi.second, " (", p.numel(), " elements) holds ", listed(found), ", but this optimizer keeps ",
                    listed(state_names(p)), "; load a state saved by an optimizer with the same MomentStorage "
                    "(in the examples: the same --optim)");
        for (auto& [n, t] : st.tensors) {
            if (!in_paged_memory(p, n)) continue;
            Tensor paged = paged_zeros(t.shape(), t.dtype(), t.device());
            raw::copy_(paged, t);
            t = paged;
        }
    }
}

int64_t AdamW::state_bytes(bool paged) const {
    int64_t total = 0;
    for (const auto& [gi, st] : state_)
        for (const auto& [n, t] : st.tensors) {
            if (in_paged_memory(groups_[gi.first].params[gi.second], n) == paged)
                total += t.numel() * int64_t(dtype_size(t.dtype()));
        }
    return total;
}

int64_t AdamW::paged_bytes() const { return state_bytes(true); }
int64_t AdamW::resident_bytes() const { return state_bytes(false); }

namespace {
MomentStorage paged_32bit(int64_t min_paged_numel) {
    MomentStorage m;
    m.paged = true, m.min_paged_numel = min_paged_numel;
    return m;
}
MomentStorage eight_bit_moments(bool paged) {
    MomentStorage m;
    m.paged = paged, m.bits = 8;
    return m;
}
}  // namespace

PagedAdamW::PagedAdamW(std::vector<ParamGroup> groups, const AdamWOptions& o, int64_t min_numel)
    : AdamW(std::move(groups), o, paged_32bit(min_numel)) {}
PagedAdamW::PagedAdamW(const std::vector<Tensor>& params, const AdamWOptions& o, int64_t min_numel)
    : AdamW(params, o, paged_32bit(min_numel)) {}

AdamW8bit::AdamW8bit(std::vector<ParamGroup> groups, const AdamWOptions& o, bool paged)
    : AdamW(std::move(groups), o, eight_bit_moments(paged)) {}
AdamW8bit::AdamW8bit(const std::vector<Tensor>& params, const AdamWOptions& o, bool paged)
    : AdamW(params, o, eight_bit_moments(paged)) {}

// ---- helpers ----

double sum_of_squares(const std::vector<Tensor>& tensors) {
    bool all_on_gpu = !tensors.empty();
    for (const Tensor& t : tensors)
        all_on_gpu = all_on_gpu && t.device().is_cuda() &&
                     (t.dtype() == DType::F32 || t.dtype() == DType::F64);
    if (all_on_gpu) {  // one fused reduction, one host sync (instead of one per tensor)
        std::vector<Tensor> contiguous;
        for (const Tensor& t : tensors) contiguous.push_back(raw::contiguous(t));
        return cuda::sum_of_squares(contiguous);
    }
    double total = 0;
    for (const Tensor& t : tensors) {
        Tensor t64 = raw::to_dtype(t, DType::F64);
        total += raw::sum(raw::mul(t64, t64)).item<double>();
    }
    return total;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
    EMBER_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
    NoGradGuard no_grad;
    std::vector<Tensor> grads;
    for (const Tensor& p : params)
        if (p.grad().defined()) grads.push_back(p.grad());
    const double total_sq = sum_of_squares(grads);
    const double total = std::sqrt(total_sq);
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1) {
        for (const Tensor& p : params) {
            Tensor g = p.grad();
            // out of place: a .grad may share storage with another tensor's gradient
            if (g.defined()) p.set_grad(raw::mul_scalar(g, coef));
        }
    }
    return total;
}

std::vector<ParamGroup> decay_groups(const Module& module, double lr, double weight_decay) {
    ParamGroup decay{{}, lr, weight_decay}, no_decay{{}, lr, 0.0};
    for (const auto& [name, p] : module.named_parameters()) {
        if (!p.requires_grad()) continue;
        const bool is_bias = name == "bias" ||
                             (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
        (is_bias || p.dim() < 2 ? no_decay : decay).params.push_back(p);
    }
    return {decay, no_decay};
}

}  // namespace nn
}  // namespace ember
