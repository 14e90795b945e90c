// Module: a named tree of parameters, buffers and child modules, like torch.nn.Module.
//
// A subclass keeps its tensors and children as ordinary members ("slots") and registers each slot
// once in its constructor. The registry stores pointers to the slots, not copies, so replacing a
// slot (loading a checkpoint, moving to a device, PEFT swapping a Linear for a LoRA wrapper) is
// seen by forward() at once, and forward() reads plain members with no lookups.
//
// Names are dotted paths, depth-first, each module's own entries (in registration order) before its
// children's, as PyTorch orders them: "h.0.attn.c_attn.weight". The tree
// is what PEFT walks to find target modules, what state_dict() saves and what optimizers collect.
// Modules are held by std::shared_ptr and are neither copyable nor movable (the registry points
// into them).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "autograd/functions.h"

namespace ember {
namespace nn {

using StateDict = std::map<std::string, Tensor>;  // dotted name -> tensor

class Module : public std::enable_shared_from_this<Module> {
public:
    Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;
    virtual ~Module() = default;

    virtual std::string type_name() const = 0;  // "Linear"
    // Unary modules override this; the default throws, naming type_name().
    virtual Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }

    // ---- the tree ----
    // Dotted, depth-first. A tensor held by two slots (tied weights, e.g. GPT-2's lm_head and
    // wte) is listed once, under its first name, so optimizers update it once; state_dict() keeps
    // both names, as PyTorch does.
    std::vector<std::pair<std::string, Tensor>> named_parameters() const;
    std::vector<Tensor> parameters() const;
    std::vector<std::pair<std::string, Tensor>> named_buffers() const;  // persistent ones only
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules();  // "" is self
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
    // The module at a dotted path; the error names the part that is missing.
    std::shared_ptr<Module> get_submodule(const std::string& dotted) const;
    // Puts m in the child slot at `dotted`; an error if the slot's C++ type does not accept m.
    void replace_submodule(const std::string& dotted, std::shared_ptr<Module> m);
    // Adds a child slot after construction, owned by this module (torch's add_module): what a
    // wrapper puts into a model it did not build (PEFT's modules_to_save copies), so that every
    // walk -- Module::to, state_dict, optimizers -- sees it. Empty it with replace_submodule(name,
    // nullptr); adding the name again refills that slot.
    void add_module(const std::string& name, std::shared_ptr<Module> m);
    // The parameter slot itself: assigning to it replaces the tensor forward() uses.
    Tensor& parameter(const std::string& dotted);
    int64_t num_parameters(bool trainable_only = false) const;

    // ---- mode, placement, training ----
    void train(bool on = true);  // recursive
    void eval() { train(false); }
    bool is_training() const { return training_; }
    // Replace every parameter and buffer slot by a converted copy, keeping requires_grad (and
    // keeping tied slots tied).
    // to(dtype) converts floating-point tensors only (ids and counters keep their integer type).
    void to(Device device);
    void to(DType dtype);
    void requires_grad_(bool on);  // recursive freeze (false) / unfreeze (true)
    void zero_grad();              // drops every parameter's .grad

    // ---- checkpoints ----
    StateDict state_dict() const;  // parameters + persistent buffers, detached, sharing data
    // Copies values into the existing slots (converting dtype and device to the slot's). strict:
    // every missing, unexpected or wrongly shaped key is listed in one error, and nothing is
    // copied. Non-strict: matching keys are copied, others ignored (a wrong shape still throws).
    void load_state_dict(const StateDict& sd, bool strict = true);

protected:
    // The slot must already hold its initial value; this marks it requires_grad.
    void register_parameter(const std::string& name, Tensor& slot);
    void register_buffer(const std::string& name, Tensor& slot, bool persistent = true);
    // replace_submodule accepts a module for this slot only if dynamic_pointer_cast<M> succeeds.
    // A null slot is allowed (an empty adapter site): iteration skips it until it is set.
    //
    // A child's name may be a dotted path or empty: the name map that lets one class take another
    // model's names without container modules. Hugging Face's ViT nests its query projection at
    // "attention.attention.query" and puts the MLP's two Linears beside the attention
    // ("intermediate.dense", "output.dense"); nn::TransformerBlock reaches those names by
    // registering its attention as "attention" with projections named "attention.query" and
    // "output.dense", and its MLP under the empty name, which inlines the MLP's children into
    // the block. Every walk (names, state_dict, get/replace_submodule) follows such names; an
    // inlined child is not listed by named_modules() itself, only its descendants.
    template <class M>
    void register_module(const std::string& name, std::shared_ptr<M>& slot) {
        ChildSlot child;
        child.name = name;
        child.slot_type = demangled_type_name(typeid(M).name());
        child.get = [&slot]() -> std::shared_ptr<Module> { return slot; };
        child.set = [&slot](const std::shared_ptr<Module>& m) -> bool {
            if (!m) {
                slot = nullptr;
                return true;
            }
            std::shared_ptr<M> typed = std::dynamic_pointer_cast<M>(m);
            if (!typed) return false;
            slot = std::move(typed);
            return true;
        };
        add_child(std::move(child));
    }

private:
    struct ParamSlot {
        std::string name;
        Tensor* slot;
    };
    struct BufferSlot {
        std::string name;
        Tensor* slot;
        bool persistent;
    };
    struct ChildSlot {
        std::string name;
        std::string slot_type;  // the C++ type the slot holds, for error messages
        std::function<std::shared_ptr<Module>()> get;
        std::function<bool(const std::shared_ptr<Module>&)> set;  // false: wrong type
    };

    static std::string demangled_type_name(const char* mangled);
    void check_new_name(const std::string& name, const char* what) const;
    void add_child(ChildSlot child);
    const ChildSlot* find_child(const std::string& name) const;
    // The child slot at a dotted path below this module (through dotted and inlined child
    // names); the error names where the path breaks. *owner: the module holding the slot.
    const ChildSlot* locate_slot(const std::string& dotted, const char* op, const Module** owner) const;
    static const ChildSlot* locate(const Module& at, const std::vector<std::string>& parts, size_t i,
                                   const Module** owner);
    static std::string join_parts(const std::vector<std::string>& parts);
    // Calls fn(prefix, module) for this module and every non-null descendant, depth-first.
    void visit(const std::string& prefix,
               const std::function<void(const std::string&, const Module&)>& fn) const;
    // Every (dotted name, slot) of parameters (each tensor once when `unique`), and of buffers
    // (persistent only unless `all`).
    std::vector<std::pair<std::string, Tensor*>> parameter_slots(bool unique = true) const;
    std::vector<std::pair<std::string, Tensor*>> buffer_slots(bool all) const;

    std::vector<ParamSlot> params_;
    std::vector<BufferSlot> buffers_;
    std::vector<ChildSlot> children_;
    std::deque<std::shared_ptr<Module>> added_;  // the slots add_module made (a deque never moves them)
    bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace nn
}  // namespace ember
