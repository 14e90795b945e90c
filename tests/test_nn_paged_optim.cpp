// PagedAdamW (nn/optim.h) and paged tensors (nn/paged_memory.h): the same bits as AdamW, its
// large state in a file-backed mapping on the CPU, checkpoints through it.
#include <fstream>
#include <sstream>

#include "nn/optim.h"
#include "nn/paged_memory.h"
#include "tensor/cuda/cuda.h"
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

namespace {

// The /proc/self/maps line of the mapping that holds `p`.
std::string mapping_of(const void* p) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    const auto addr = reinterpret_cast<uintptr_t>(p);
    while (std::getline(maps, line)) {
        std::istringstream ss(line);
        std::string range;
        ss >> range;
        uintptr_t lo = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
        uintptr_t hi = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
        if (addr >= lo && addr < hi) return line;
    }
    return "";
}

std::vector<Tensor> params_like(uint64_t seed) {
    Generator gen(seed);
    std::vector<Tensor> out = {randn({300, 400}, gen), randn({50}, gen)};  // one paged, one not
    for (Tensor& t : out) t.set_requires_grad(true);
    return out;
}

void set_grads(std::vector<Tensor>& ps, uint64_t seed) {
    Generator gen(seed);
    for (Tensor& p : ps) p.set_grad(randn(p.shape(), gen));
}

}  // namespace

TEST_CASE("paged_zeros: zeros in a shared mapping of a deleted file, usable by every op") {
    Tensor t = nn::paged_zeros({1000, 300}, DType::F32, Device::cpu());
    CHECK(t.is_contiguous());
    CHECK(raw::sum(raw::mul(t, t)).item<float>() == 0.0f);
    const int64_t before = cpu_memory_stats().bytes_in_use;
    raw::copy_(t, raw::add_scalar(t, 2.0));
    CHECK(raw::sum(t).item<float>() == 600000.0f);
    CHECK(cpu_memory_stats().bytes_in_use == before);  // not the allocator's
    std::string line = mapping_of(t.storage()->data());
    INFO(line);
    CHECK(contains(line, "rw-s"));       // shared: written back to its file, not to swap
    CHECK(contains(line, "(deleted)"));  // the file has no name
}

TEST_CASE("PagedAdamW: bit for bit AdamW, its large state paged, through a checkpoint") {
    nn::AdamWOptions o;
    o.lr = 1e-2, o.weight_decay = 0.1;
    std::vector<Tensor> a = params_like(1), b = params_like(1);
    nn::AdamW plain(a, o);
    nn::PagedAdamW paged(b, o);
    for (int s = 0; s < 5; ++s) {
        set_grads(a, 10 + s), set_grads(b, 10 + s);
        plain.step(), paged.step();
    }
    for (size_t i = 0; i < a.size(); ++i) CHECK(bit_equal(a[i], b[i]));
    nn::StateDict sa = plain.state(), sb = paged.state();
    REQUIRE(sa.size() == sb.size());
    for (auto& [k, t] : sa) CHECK_MESSAGE(bit_equal(t, sb.at(k)), k);
    CHECK(paged.paged_bytes() == 2 * 300 * 400 * 4);  // exp_avg and exp_avg_sq of the large one
    CHECK(paged.resident_bytes() == 2 * 50 * 4);

    // Resume from the state: the next steps match an uninterrupted run, the state paged again.
    std::vector<Tensor> c = params_like(1);
    for (size_t i = 0; i < c.size(); ++i) {
        NoGradGuard g;
        raw::copy_(c[i], b[i]);
    }
    nn::PagedAdamW resumed(c, o);
    resumed.load_state(sb);
    CHECK(resumed.paged_bytes() == paged.paged_bytes());
    for (int s = 5; s < 8; ++s) {
        set_grads(a, 10 + s), set_grads(c, 10 + s);
        plain.step(), resumed.step();
    }
    for (size_t i = 0; i < a.size(); ++i) CHECK(bit_equal(a[i], c[i]));
}

// Never run here (no GPU on the machine this was written on): managed memory on the host,
// prefetched before each update, the same bits as AdamW on the GPU.
TEST_CASE("cuda: PagedAdamW in managed memory gives AdamW's bits" * doctest::skip(!cuda_is_available())) {
    nn::AdamWOptions o;
    o.lr = 1e-2;
    auto on_gpu = [](std::vector<Tensor> ps) {
        for (Tensor& p : ps) {
            p = p.detach().to(Device::cuda());
            p.set_requires_grad(true);
        }
        return ps;
    };
    std::vector<Tensor> a = on_gpu(params_like(2)), b = on_gpu(params_like(2));
    nn::AdamW plain(a, o);
    nn::PagedAdamW paged(b, o);
    for (int s = 0; s < 3; ++s) {
        Generator gen(20 + s);
        for (size_t i = 0; i < a.size(); ++i) {
            Tensor g = randn(a[i].shape(), gen).to(Device::cuda());
            a[i].set_grad(g), b[i].set_grad(g);
        }
        plain.step(), paged.step();
    }
    for (size_t i = 0; i < a.size(); ++i) CHECK(bit_equal(a[i].to(Device::cpu()), b[i].to(Device::cpu())));
    CHECK(paged.paged_bytes() == 2 * 300 * 400 * 4);
}
