// nn::Module: the registry (dotted names, typed child slots, null slots), moving between dtypes,
// freezing, and state_dict save / load with strict errors that list every bad key.
#include "nn/containers.h"
#include "nn/layers.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;
using nn::Module;

namespace {

// A small tree: a typed Linear slot, an untyped slot, an empty adapter slot, a nested module
// and buffers.
struct Inner : Module {
    Tensor scale;
    Tensor counter;
    Inner() {
        scale = ones({3});
        counter = zeros({1}, DType::I64);
        register_parameter("scale", scale);
        register_buffer("counter", counter);
    }
    std::string type_name() const override { return "Inner"; }
    Tensor forward(const Tensor& x) override { return x * scale; }
};

struct Toy : Module {
    std::shared_ptr<nn::Linear> fc;
    std::shared_ptr<Module> act;
    std::shared_ptr<Module> adapter;  // null until set
    std::shared_ptr<Inner> inner;
    Tensor running, scratch;
    explicit Toy(uint64_t seed = 1) {
        Generator gen(seed);
        fc = std::make_shared<nn::Linear>(4, 3, true, gen);
        act = std::make_shared<nn::ReLU>();
        inner = std::make_shared<Inner>();
        running = full({3}, 2.0);
        scratch = zeros({3});
        register_module("fc", fc);
        register_module("act", act);
        register_module("adapter", adapter);
        register_module("inner", inner);
        register_buffer("running", running);
        register_buffer("scratch", scratch, /*persistent=*/false);
    }
    std::string type_name() const override { return "Toy"; }
    Tensor forward(const Tensor& x) override {
        Tensor h = act->forward(fc->forward(x));
        if (adapter) h = adapter->forward(h);
        return inner->forward(h) + running;
    }
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
    std::vector<std::string> out;
    for (auto& [n, t] : named) out.push_back(n);
    return out;
}

}  // namespace

TEST_CASE("nn::Module: dotted names in registration order, depth-first") {
    auto toy = std::make_shared<Toy>();
    CHECK(names_of(toy->named_parameters()) ==
          std::vector<std::string>{"fc.weight", "fc.bias", "inner.scale"});
    CHECK(names_of(toy->named_buffers()) == std::vector<std::string>{"running", "inner.counter"});
    std::vector<std::string> modules;
    for (auto& [n, m] : toy->named_modules()) modules.push_back(n + ":" + m->type_name());
    CHECK(modules == std::vector<std::string>{":Toy", "fc:Linear", "act:ReLU", "inner:Inner"});
    CHECK(toy->named_children().size() == 3);  // the null adapter slot is skipped
    CHECK(toy->num_parameters() == 4 * 3 + 3 + 3);
    CHECK(toy->get_submodule("fc").get() == toy->fc.get());
    CHECK(toy->parameter("fc.weight").same_storage(toy->fc->weight));
    for (auto& [n, p] : toy->named_parameters()) CHECK(p.requires_grad());
}

TEST_CASE("nn::Module: lookup errors name the missing part") {
    auto toy = std::make_shared<Toy>();
    std::string e = error_of([&] { toy->get_submodule("inner.nope"); });
    CHECK(contains(e, "'nope'"));
    CHECK(contains(e, "Inner"));
    e = error_of([&] { toy->get_submodule("adapter"); });
    CHECK(contains(e, "empty"));
    e = error_of([&] { toy->parameter("fc.gamma"); });
    CHECK(contains(e, "gamma"));
    // A module without a one-argument forward says which module it is.
    struct NoForward : Module {
        std::string type_name() const override { return "NoForward"; }
    } bare;
    CHECK(contains(error_of([&] { bare.forward(zeros({1})); }), "NoForward"));
    // named_modules needs the module to be owned by a shared_ptr
    CHECK(contains(error_of([&] { bare.named_modules(); }), "shared_ptr"));
}

TEST_CASE("nn::Module: replace_submodule checks the slot's C++ type; null slots fill in") {
    auto toy = std::make_shared<Toy>();
    Generator gen(3);
    // The typed Linear slot refuses a ReLU, and the error names both types.
    std::string e = error_of([&] { toy->replace_submodule("fc", std::make_shared<nn::ReLU>()); });
    CHECK(contains(e, "Linear"));
    CHECK(contains(e, "ReLU"));
    CHECK(toy->fc);  // unchanged
    // A Linear fits it, and forward sees the new one at once.
    auto fresh = std::make_shared<nn::Linear>(4, 3, true, gen);
    toy->replace_submodule("fc", fresh);
    CHECK(toy->fc.get() == fresh.get());
    // The untyped slot takes any module.
    toy->replace_submodule("act", std::make_shared<nn::Identity>());
    CHECK(toy->act->type_name() == "Identity");
    CHECK(contains(error_of([&] { toy->replace_submodule("nope", fresh); }), "nope"));

    // Filling the null adapter slot adds its parameters and changes forward.
    Tensor x = randn({2, 4}, gen);
    Tensor before = toy->forward(x);
    auto adapter = std::make_shared<nn::Linear>(3, 3, false, gen);
    toy->replace_submodule("adapter", adapter);
    CHECK(toy->get_submodule("adapter").get() == adapter.get());
    CHECK(names_of(toy->named_parameters()) ==
          std::vector<std::string>{"fc.weight", "fc.bias", "adapter.weight", "inner.scale"});
    CHECK(max_abs_diff(before, toy->forward(x)) > 1e-3);
    toy->replace_submodule("adapter", nullptr);
    CHECK(max_abs_diff(before, toy->forward(x)) == 0);
}

TEST_CASE("nn::Module: parameter() is the slot; to(dtype) keeps requires_grad; freezing") {
    auto toy = std::make_shared<Toy>();
    toy->parameter("inner.scale") = full({3}, 3.0).set_requires_grad();
    CHECK(toy->inner->scale.to_vector<double>() == std::vector<double>{3, 3, 3});

    toy->fc->bias.set_requires_grad(false);
    toy->to(DType::F64);
    for (auto& [n, p] : toy->named_parameters()) CHECK(p.dtype() == DType::F64);
    CHECK(toy->running.dtype() == DType::F64);
    CHECK(toy->inner->counter.dtype() == DType::I64);  // integers stay integers
    CHECK(toy->fc->weight.requires_grad());
    CHECK_FALSE(toy->fc->bias.requires_grad());
    CHECK(toy->num_parameters(true) == 12 + 3);
    Tensor y = toy->forward(randn({2, 4}, *std::make_unique<Generator>(2), DType::F64));
    CHECK(y.dtype() == DType::F64);

    toy->requires_grad_(false);
    CHECK(toy->num_parameters(true) == 0);
    toy->inner->requires_grad_(true);
    CHECK(toy->num_parameters(true) == 3);
    Generator gen(4);
    sum(toy->forward(randn({2, 4}, gen, DType::F64))).backward();
    CHECK_FALSE(toy->fc->weight.grad().defined());
    CHECK(toy->inner->scale.grad().defined());
    toy->zero_grad();
    CHECK_FALSE(toy->inner->scale.grad().defined());

    toy->eval();
    CHECK_FALSE(toy->is_training());
    CHECK_FALSE(toy->fc->is_training());
    toy->train();
    CHECK(toy->inner->is_training());
}

TEST_CASE("nn::Module: state_dict round trip reproduces the outputs") {
    auto a = std::make_shared<Toy>(1), b = std::make_shared<Toy>(2);
    Generator gen(5);
    Tensor x = randn({3, 4}, gen);
    raw::fill_(a->running, 0.25);
    nn::StateDict sd = a->state_dict();
    CHECK(sd.size() == 5);  // 3 parameters + 2 persistent buffers, not the scratch buffer
    CHECK(sd.count("scratch") == 0);
    CHECK(max_abs_diff(a->forward(x), b->forward(x)) > 1e-3);
    b->load_state_dict(sd);
    CHECK(max_abs_diff(a->forward(x), b->forward(x)) == 0);
    // values were copied into b's own slots, not shared
    CHECK_FALSE(b->fc->weight.same_storage(a->fc->weight));
    CHECK(b->fc->weight.requires_grad());
}

TEST_CASE("nn::Module: strict load lists every missing, unexpected and misshapen key") {
    auto a = std::make_shared<Toy>(1), b = std::make_shared<Toy>(2);
    nn::StateDict sd = a->state_dict();
    sd.erase("fc.bias");
    sd.erase("running");
    sd["extra.weight"] = zeros({2});
    sd["inner.scale"] = zeros({5});
    Tensor before = b->fc->weight.clone();
    std::string e = error_of([&] { b->load_state_dict(sd); });
    CHECK(contains(e, "missing keys (2)"));
    CHECK(contains(e, "fc.bias"));
    CHECK(contains(e, "running"));
    CHECK(contains(e, "unexpected keys (1)"));
    CHECK(contains(e, "extra.weight"));
    CHECK(contains(e, "inner.scale (checkpoint (5,), model (3,))"));
    CHECK(max_abs_diff(before, b->fc->weight) == 0);  // nothing was copied

    // Non-strict: matching keys load, missing / unexpected are ignored, a wrong shape still throws.
    sd["inner.scale"] = full({3}, 7.0);
    b->load_state_dict(sd, /*strict=*/false);
    CHECK(max_abs_diff(b->fc->weight, a->fc->weight) == 0);
    CHECK(b->inner->scale.to_vector<double>() == std::vector<double>{7, 7, 7});
    sd["inner.scale"] = zeros({4});
    CHECK(contains(error_of([&] { b->load_state_dict(sd, false); }), "inner.scale"));
}

TEST_CASE("nn::Module: tied weights are listed once, saved under both names, and stay tied") {
    struct Tied : Module {
        std::shared_ptr<nn::Embedding> wte;
        std::shared_ptr<nn::Linear> head;
        Tied() {
            Generator gen(1);
            wte = std::make_shared<nn::Embedding>(5, 3, gen);
            head = std::make_shared<nn::Linear>(3, 5, false, gen);
            head->weight = wte->weight;  // one tensor in two slots
            register_module("wte", wte);
            register_module("head", head);
        }
        std::string type_name() const override { return "Tied"; }
    };
    auto m = std::make_shared<Tied>();
    CHECK(names_of(m->named_parameters()) == std::vector<std::string>{"wte.weight"});
    CHECK(m->num_parameters() == 15);
    CHECK(m->state_dict().size() == 2);
    m->to(DType::F64);
    CHECK(m->head->weight.dtype() == DType::F64);
    CHECK(m->head->weight.same_storage(m->wte->weight));
    CHECK(m->wte->weight.requires_grad());
}

TEST_CASE("nn::ModuleList and Sequential: numbered names, typed slots, chained forward") {
    Generator gen(3);
    auto list = std::make_shared<nn::ModuleList<nn::Linear>>();
    for (int i = 0; i < 3; ++i) list->push_back(std::make_shared<nn::Linear>(2, 2, false, gen));
    CHECK(names_of(list->named_parameters()) ==
          std::vector<std::string>{"0.weight", "1.weight", "2.weight"});
    CHECK(list->size() == 3);
    CHECK(contains(error_of([&] { list->replace_submodule("1", std::make_shared<nn::ReLU>()); }),
                   "Linear"));
    auto swap_in = std::make_shared<nn::Linear>(2, 2, false, gen);
    list->replace_submodule("1", swap_in);
    CHECK((*list)[1].get() == swap_in.get());
    CHECK(contains(error_of([&] { (*list)[7]; }), "out of range"));

    auto seq = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<Module>>{
        (*list)[0], std::make_shared<nn::ReLU>(), (*list)[2]});
    Tensor x = randn({4, 2}, gen);
    Tensor expect = (*list)[2]->forward(relu((*list)[0]->forward(x)));
    CHECK(max_abs_diff(seq->forward(x), expect) == 0);
    CHECK(names_of(seq->named_parameters()) == std::vector<std::string>{"0.weight", "2.weight"});
}

namespace {

// Hugging Face-style nesting without containers: a child named by a dotted path, and an inlined
// child (empty name) whose own children join this module's names.
struct Pair : Module {
    std::shared_ptr<nn::Linear> first, second;
    explicit Pair(Generator& gen) {
        first = std::make_shared<nn::Linear>(2, 2, false, gen);
        second = std::make_shared<nn::Linear>(2, 2, false, gen);
        register_module("intermediate.dense", first);
        register_module("output.dense", second);
    }
    std::string type_name() const override { return "Pair"; }
};

struct Mapped : Module {
    std::shared_ptr<nn::Linear> query;
    std::shared_ptr<Pair> mlp;
    std::shared_ptr<Inner> inner;
    Mapped() {
        Generator gen(3);
        query = std::make_shared<nn::Linear>(2, 2, true, gen);
        mlp = std::make_shared<Pair>(gen);
        inner = std::make_shared<Inner>();
        register_module("attention.attention.query", query);
        register_module("", mlp);
        register_module("", inner);
    }
    std::string type_name() const override { return "Mapped"; }
};

}  // namespace

TEST_CASE("nn::Module: dotted and inlined child names are a name map every walk follows") {
    auto m = std::make_shared<Mapped>();
    std::vector<std::string> names;
    for (auto& [n, t] : m->named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{"attention.attention.query.weight", "attention.attention.query.bias",
                                            "intermediate.dense.weight", "output.dense.weight", "scale"});
    std::vector<std::string> modules;
    for (auto& [n, sub] : m->named_modules()) modules.push_back(n);
    // The inlined Pair and Inner are not listed under the root's own (empty) name.
    CHECK(modules == std::vector<std::string>{"", "attention.attention.query", "intermediate.dense", "output.dense"});
    CHECK(m->get_submodule("output.dense") == m->mlp->second);
    CHECK(&m->parameter("scale") == &m->inner->scale);
    CHECK(&m->parameter("attention.attention.query.bias") == &m->query->bias);

    Generator gen(9);
    auto fresh = std::make_shared<nn::Linear>(2, 2, false, gen);
    m->replace_submodule("intermediate.dense", fresh);
    CHECK(m->mlp->first == fresh);  // the slot inside the inlined child
    CHECK(m->state_dict().count("intermediate.dense.weight") == 1);

    CHECK_THROWS_WITH(m->get_submodule("attention.attention.key"),
                      doctest::Contains("has no child at 'attention.attention.key'"));
    CHECK_THROWS_WITH(m->get_submodule("attention"), doctest::Contains("has no child at 'attention'"));
}
