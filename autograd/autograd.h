// Reverse-mode autograd, define-by-run.
//
// Every differentiable op that sees an input requiring a gradient records one Node: which inputs
// it came from and a closure that maps the gradient of its output to the gradients of its inputs.
// backward() walks the nodes from the output in reverse creation order, hands each node the sum
// of the gradients that reached it, and adds what arrives at a leaf into the leaf's .grad.
//
// The pieces:
//   AutogradMeta  per tensor: requires_grad, .grad (leaves), the Node that made it (non-leaves)
//   Node          an op's record: its inputs' metadata (not their data) and its backward closure
//   SavedTensor   a tensor kept for the backward pass, with the storage version it had then
//   GradMode      thread-local on/off switch; NoGradGuard turns it off for a scope
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ember {

struct AutogradMeta {
    bool requires_grad = false;
    Tensor grad;                    // accumulated gradient (leaves only)
    std::shared_ptr<Node> grad_fn;  // the op that produced this tensor; null for a leaf
};

// The gradients a node returns, one per input; an undefined Tensor where none is needed.
using Grads = std::vector<Tensor>;
// needs[i] is true when input i requires a gradient: a backward must not compute the others.
using Needs = std::vector<bool>;
using BackwardFn = std::function<Grads(const Tensor& grad_output, const Needs& needs)>;

class Node {
public:
    Node(const char* name, std::vector<std::shared_ptr<AutogradMeta>> inputs,
         std::vector<Shape> input_shapes, BackwardFn backward);

    const char* name() const { return name_; }
    uint64_t sequence() const { return sequence_; }
    // The metadata of each input; null for an input that needs no gradient.
    const std::vector<std::shared_ptr<AutogradMeta>>& inputs() const { return inputs_; }

    // Runs the closure and checks what it returns. Without retain_graph the closure and the
    // tensors it saved are dropped afterwards, and a second call says so.
    Grads apply(const Tensor& grad_output, bool retain_graph);

private:
    const char* name_;
    uint64_t sequence_;
    std::vector<std::shared_ptr<AutogradMeta>> inputs_;
    std::vector<Shape> input_shapes_;
    BackwardFn backward_;
    bool released_ = false;
};

// A tensor saved for backward. It holds the data (not the autograd history, which would make a
// cycle when an op saves its own output) and the storage version, so that get() can refuse a
// tensor that was modified in place after it was saved.
class SavedTensor {
public:
    SavedTensor() = default;
    SavedTensor(const Tensor& t, const char* op);
    Tensor get() const;

private:
    Tensor data_;
    uint64_t version_ = 0;
    const char* op_ = "";
};

// ---- grad mode ----
struct GradMode {
    static bool is_enabled();
    static void set_enabled(bool enabled);
};

class NoGradGuard {
public:
    NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
    ~NoGradGuard() { GradMode::set_enabled(previous_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool previous_;
};

// ---- recording ----
// True when grad mode is on and some input requires a gradient: the op must record a node.
bool needs_graph(const std::vector<Tensor>& inputs);

// Makes `output` the result of a node named `name` over `inputs`. Call only after needs_graph().
// The closure receives the gradient of `output` and returns one gradient per input.
void record(const char* name, Tensor& output, const std::vector<Tensor>& inputs, BackwardFn backward);

// Runs the backward pass from `root` with the given gradient (ones for a scalar root when
// undefined). Leaves' .grad accumulate across calls until zero_grad().
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

// A readable listing of the graph that produced `root`, one node per line, inputs indented.
std::string dump_graph(const Tensor& root);

}  // namespace ember
