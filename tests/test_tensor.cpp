// Tensors: factories, views without copies, host access, printing, random fills, error messages.
#include "tests/helpers.h"

using namespace ember;
using namespace ember::testing;

TEST_CASE("tensor: factories give the expected values and metadata") {
    Tensor z = zeros({2, 3});
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.strides() == Shape{3, 1});
    CHECK(z.dtype() == DType::F32);
    CHECK(z.numel() == 6);
    CHECK(z.to_vector<float>() == std::vector<float>(6, 0.f));
    CHECK(ones({2}, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
    CHECK(full({3}, 2.5, DType::F64).to_vector<double>() == std::vector<double>{2.5, 2.5, 2.5});
    CHECK(arange(0, 5).to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4});
    CHECK(arange(1, 2, 0.25, DType::F64).to_vector<double>() == std::vector<double>{1, 1.25, 1.5, 1.75});
    CHECK(eye(3).to_vector<float>() == std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1});
    CHECK(tensor({1, 2, 3, 4}, {2, 2}).shape() == Shape{2, 2});
    CHECK(from_vector<int32_t>({5, 6}, {2}).dtype() == DType::I32);
    CHECK(scalar_tensor(4).dim() == 0);
    CHECK(scalar_tensor(4).item<float>() == 4.f);
}

TEST_CASE("tensor: views share storage and never copy") {
    Tensor a = arange(0, 24).reshape({2, 3, 4});
    Tensor t = a.transpose(0, 2);
    CHECK(t.same_storage(a));
    CHECK(t.shape() == Shape{4, 3, 2});
    CHECK(t.strides() == Shape{1, 4, 12});
    CHECK_FALSE(t.is_contiguous());
    CHECK(t.contiguous().to_vector<float>()[1] == 12.f);  // t[0][0][1] = a[1][0][0]

    Tensor p = a.permute({1, 2, 0});
    CHECK(p.shape() == Shape{3, 4, 2});
    CHECK(p.same_storage(a));

    Tensor s = a.slice(2, 1, 4, 2);  // columns 1 and 3
    CHECK(s.shape() == Shape{2, 3, 2});
    CHECK(s.same_storage(a));
    CHECK(s.contiguous().to_vector<float>() ==
          std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});

    Tensor row = a.select(1, 2);
    CHECK(row.shape() == Shape{2, 4});
    CHECK(row.contiguous().to_vector<float>() == std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23});

    Tensor e = arange(0, 3).reshape({3, 1}).expand({3, 4});
    CHECK(e.strides() == Shape{1, 0});
    CHECK(e.contiguous().to_vector<float>()[5] == 1.f);

    CHECK(a.unsqueeze(0).shape() == Shape{1, 2, 3, 4});
    CHECK(a.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
    CHECK(a.unsqueeze(0).squeeze(0).shape() == Shape{2, 3, 4});
    CHECK(a.flatten().shape() == Shape{24});
    CHECK(a.flatten(1).shape() == Shape{2, 12});
    CHECK(a.reshape({-1, 4}).shape() == Shape{6, 4});
    CHECK(a.reshape({4, -1}).same_storage(a));
    CHECK(a.narrow(0, 1, 1).offset() == 12);
}

TEST_CASE("tensor: reshape of a non-viewable layout copies, view refuses") {
    Tensor a = arange(0, 6).reshape({2, 3});
    Tensor t = a.t();
    Tensor r = t.reshape({6});
    CHECK_FALSE(r.same_storage(a));
    CHECK(r.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
    std::string msg = error_of([&] { t.view({6}); });
    CHECK(contains(msg, "view"));
    CHECK(contains(msg, "contiguous"));
    // A transpose of a size-1 dim is still viewable.
    Tensor one_row = arange(0, 3).reshape({1, 3});
    CHECK(one_row.t().view({3}).same_storage(one_row));
}

TEST_CASE("tensor: clone and to(dtype) copy; item and printing") {
    Tensor a = tensor({1.5, -2, 3}, {3});
    Tensor c = a.clone();
    CHECK_FALSE(c.same_storage(a));
    CHECK(a.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3});
    CHECK(a.to(DType::F64).dtype() == DType::F64);
    CHECK(a.to(DType::F32).same_storage(a));  // no-op conversion
    std::string printed = a.to_string();
    CHECK(contains(printed, "shape=(3,)"));
    CHECK(contains(printed, "f32"));
    CHECK(contains(printed, "1.5"));
    CHECK(contains(arange(0, 100).to_string(), "..."));
    CHECK(contains(error_of([&] { a.item<float>(); }), "one element"));
}

TEST_CASE("tensor: random fills are reproducible and depend only on (seed, offset, index)") {
    Generator g1(42), g2(42);
    Tensor a = randn({1000}, g1), b = randn({1000}, g2);
    CHECK(a.to_vector<float>() == b.to_vector<float>());
    Tensor c = randn({1000}, g1);  // next offset: different numbers
    CHECK(a.to_vector<float>() != c.to_vector<float>());
    // Element i does not depend on the fill's size.
    Generator g3(42);
    Tensor small = randn({10}, g3);
    for (int i = 0; i < 10; ++i) CHECK(small.to_vector<float>()[size_t(i)] == a.to_vector<float>()[size_t(i)]);
    // Statistics: mean ~ 0, variance ~ 1 for normal; uniform in (0, 1] with mean ~ 0.5.
    Generator g4(7);
    Tensor n = randn({100000}, g4, DType::F64);
    CHECK(std::abs(raw::mean(n).item<double>()) < 0.02);
    CHECK(std::abs(raw::var(n).item<double>() - 1.0) < 0.02);
    Tensor u = rand({100000}, g4, DType::F64);
    CHECK(raw::min(u).item<double>() > 0.0);
    CHECK(raw::max(u).item<double>() <= 1.0);
    CHECK(std::abs(raw::mean(u).item<double>() - 0.5) < 0.01);
    Tensor r = randint(3, 7, {10000}, g4);
    CHECK(r.dtype() == DType::I64);
    CHECK(raw::min(r).item<int64_t>() == 3);
    CHECK(raw::max(r).item<int64_t>() == 6);
}

TEST_CASE("errors: matmul of (2,3) and (4,5) names both shapes") {
    std::string msg = error_of([] { matmul(ones({2, 3}), ones({4, 5})); });
    CHECK(contains(msg, "matmul"));
    CHECK(contains(msg, "(2, 3)"));
    CHECK(contains(msg, "(4, 5)"));
}

TEST_CASE("errors: bad shapes, dtypes and arguments name the op and the fix") {
    CHECK(contains(error_of([] { add(ones({2, 3}), ones({4})); }), "(2, 3) and (4,)"));
    CHECK(contains(error_of([] { add(ones({2}), ones({2}, DType::F64)); }), "dtypes differ"));
    CHECK(contains(error_of([] { exp(ones({2}, DType::I64)); }), "floating-point"));
    CHECK(contains(error_of([] { matmul(ones({3}), ones({3, 2})); }), "at least 2 dims"));
    CHECK(contains(error_of([] { matmul(ones({2, 2}, DType::I32), ones({2, 2}, DType::I32)); }), "matmul"));
    CHECK(contains(error_of([] { ones({2, 3}).reshape({4}); }), "reshape"));
    CHECK(contains(error_of([] { ones({2, 3}).transpose(0, 5); }), "out of range"));
    CHECK(contains(error_of([] { ones({2, 3}).expand({3, 3}); }), "expand"));
    CHECK(contains(error_of([] { ones({2, 3}).permute({0, 0}); }), "twice"));
    CHECK(contains(error_of([] { ones({2, 3}).select(0, 2); }), "out of range"));
    CHECK(contains(error_of([] { ones({2}).to(Device::cuda()); }), built_with_cuda() ? "" : "CUDA"));
    CHECK(contains(error_of([] { Tensor().shape(); }), "undefined"));
    CHECK(contains(error_of([] { from_vector<float>({1, 2, 3}, {2, 2}); }), "(2, 2)"));
}

TEST_CASE("cpu_memory_stats: storage bytes are counted while alive, and the peak remembers") {
    reset_cpu_peak();
    CpuMemoryStats before = cpu_memory_stats();
    {
        Tensor big = zeros({1000, 1000});  // 4 MB
        CHECK(cpu_memory_stats().bytes_in_use - before.bytes_in_use == 4000000);
    }
    CpuMemoryStats after = cpu_memory_stats();
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.peak_bytes_in_use - before.bytes_in_use >= 4000000);
}
