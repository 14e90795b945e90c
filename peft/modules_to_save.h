// modules_to_save (peft's utils/other.py ModulesToSaveWrapper): modules that train in full, with
// a frozen original and one trainable copy per adapter. peft wraps each such module; Ember's slots
// are typed (ViT's classifier is an nn::Linear), so the module stays in its slot and its
// parameter slots are switched instead: PeftModel puts the active adapter's copy in each slot
// (the original when adapters are disabled or none has a copy).
//
// The originals and copies live here, in the model's own tree as its child "modules_to_save"
// (nn::Module::add_module), so Module::to converts them, state_dict() and training checkpoints
// hold them, and the tensor in a parameter slot stays tied to its entry here. Names, for the
// parameter "classifier.weight":
//   modules_to_save.original_module.classifier.weight   the frozen original
//   modules_to_save.<adapter>.classifier.weight         the adapter's copy
// Adapter files save a copy under the original's name ("base_model.model.classifier.weight"),
// as peft does.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace ember {
namespace peft {

class ModulesToSave : public nn::Module {
public:
    static constexpr const char* kOriginal = "original_module";
    std::string type_name() const override { return "ModulesToSave"; }

    // Keeps `original` (the tensor now in the slot `param`) frozen, if not kept yet, and gives
    // `adapter` a trainable copy of it.
    void add(const std::string& adapter, const std::string& param, const Tensor& original);
    std::vector<std::string> parameter_names() const;  // every parameter kept here
    Tensor original(const std::string& param) const;
    Tensor copy(const std::string& adapter, const std::string& param) const;  // undefined if none
    std::vector<std::string> adapters_of(const std::string& param) const;
    // Drops the adapter's copies; a parameter left with none is dropped too (its original is
    // returned, for the model's slot). Empty afterwards: no parameter is kept.
    std::map<std::string, Tensor> remove_adapter(const std::string& adapter);
    bool empty() const { return parameter_names().empty(); }

private:
    // One owner module's parameters for one group (an adapter's copies, or the originals),
    // registered under the owner's dotted path, e.g. "default.classifier".
    class Group : public nn::Module {
    public:
        std::string type_name() const override { return "ModulesToSaveGroup"; }
        void add(const std::string& leaf, const Tensor& t);
        Tensor get(const std::string& leaf) const;

    private:
        std::deque<Tensor> slots_;
        std::map<std::string, Tensor*> by_name_;
    };
    Group& group(const std::string& name);  // made on first use
    Tensor find(const std::string& group, const std::string& param) const;

    std::map<std::string, std::shared_ptr<Group>> groups_;  // map nodes never move
    std::map<std::string, std::vector<std::string>> copies_;  // param -> adapters, in order added
};

}  // namespace peft
}  // namespace ember
