// Raw ops, part 2: joining, splitting, indexing, embeddings and triangle masks. Forward values
// against hand-computed numbers (PyTorch's documented examples where there are some), strided
// inputs, determinism across thread counts, and error messages.
#include <limits>

#include "tensor/parallel.h"
#include "tests/raw_test_helpers.h"

using namespace ember;
using namespace ember::testing;

static Tensor i64(std::vector<int64_t> values, const Shape& shape) {
    return from_vector(values, shape);
}

TEST_CASE("raw cat and stack along any dim, with strided inputs") {
    Tensor a = tensor({1, 2, 3, 4}, {2, 2}), b = tensor({5, 6}, {2, 1}), c = tensor({7, 8}, {1, 2});
    Tensor ab = raw::cat({a, b}, 1);
    CHECK(ab.shape() == Shape{2, 3});
    check_values(ab, {1, 2, 5, 3, 4, 6});
    check_values(raw::cat({a, b}, -1), {1, 2, 5, 3, 4, 6});
    check_values(raw::cat({c, a, c}, 0), {7, 8, 1, 2, 3, 4, 7, 8});
    check_values(raw::cat({raw::transpose(a, 0, 1), b}, 1), {1, 3, 5, 2, 4, 6});
    check_values(raw::cat({a, zeros({0, 2})}, 0), {1, 2, 3, 4});

    Tensor s0 = raw::stack({tensor({1, 2}), tensor({3, 4})}, 0);
    CHECK(s0.shape() == Shape{2, 2});
    check_values(s0, {1, 2, 3, 4});
    Tensor s1 = raw::stack({tensor({1, 2}), tensor({3, 4})}, -1);
    check_values(s1, {1, 3, 2, 4});

    check_error([&] { raw::cat({a, ones({3, 3})}, 0); }, {"cat", "(3, 3)", "(2, 2)", "dim 0"});
    check_error([&] { raw::cat({a, ones({2, 2}, DType::F64)}, 0); }, {"cat", "dtypes differ"});
    check_error([&] { raw::stack({a, b}, 0); }, {"stack", "(2, 1)", "(2, 2)"});
    check_error([] { raw::cat({}, 0); }, {"cat", "at least one"});
}

TEST_CASE("raw split and chunk return views") {
    Tensor x = arange(0, 10);
    std::vector<Tensor> parts = raw::split(x, {2, 3, 5}, 0);
    REQUIRE(parts.size() == 3);
    CHECK(parts[1].same_storage(x));
    check_values(parts[1], {2, 3, 4});
    check_values(parts[2], {5, 6, 7, 8, 9});
    std::vector<Tensor> chunks = raw::chunk(raw::reshape(x, {2, 5}), 2, -1);  // sizes 3 and 2
    REQUIRE(chunks.size() == 2);
    check_values(chunks[0], {0, 1, 2, 5, 6, 7});
    check_values(chunks[1], {3, 4, 8, 9});
    CHECK(raw::chunk(x, 4, 0).size() == 4);  // 3, 3, 3, 1
    check_error([&] { raw::split(x, {2, 3}, 0); }, {"split", "5", "(10,)"});
}

TEST_CASE("raw gather and scatter_add follow torch.gather / torch.Tensor.scatter_add") {
    Tensor t = tensor({1, 2, 3, 4}, {2, 2});
    check_values(raw::gather(t, 1, i64({0, 0, 1, 0}, {2, 2})), {1, 1, 4, 3});
    check_values(raw::gather(t, 0, i64({1, 0}, {1, 2})), {3, 2});
    check_values(raw::gather(raw::transpose(t, 0, 1), -1, i64({1, 1, 0, 1}, {2, 2})), {3, 3, 2, 4});
    Tensor idx32 = from_vector<int32_t>({2, 0}, {1, 2});
    check_values(raw::gather(tensor({1, 2, 3, 4, 5, 6}, {2, 3}), 1, idx32), {3, 1});

    Tensor src = ones({2, 5});
    Tensor index = i64({0, 1, 2, 0, 0, 0, 1, 2, 2, 2}, {2, 5});
    Tensor out = raw::scatter_add(zeros({3, 5}), 0, index, src);
    check_values(out, {2, 0, 0, 1, 1, 0, 2, 0, 0, 0, 0, 0, 2, 1, 1});
    Tensor first_row = raw::slice(index, 0, 0, 1);  // (1, 5): only part of src is used
    check_values(raw::scatter_add(zeros({3, 5}), 0, first_row, src),
                 {1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0});
    Tensor base = tensor({10, 20, 30, 40}, {2, 2});
    Tensor src4 = tensor({1, 2, 3, 4}, {2, 2});
    Tensor added = raw::scatter_add(base, 1, i64({1, 1, 0, 1}, {2, 2}), src4);
    check_values(added, {10, 23, 33, 44});
    check_values(base, {10, 20, 30, 40});  // a new tensor; x is untouched

    check_error([&] { raw::gather(t, 1, i64({2, 0, 0, 0}, {2, 2})); },
                {"gather", "index 2", "size 2"});
    check_error([&] { raw::gather(t, 1, i64({0, 0}, {2})); }, {"gather", "(2,)", "(2, 2)"});
    check_error([&] { raw::gather(t, 1, tensor({0, 0, 0, 0}, {2, 2})); },
                {"gather", "i32 or i64", "f32"});
    check_error([&] { raw::scatter_add(zeros({2, 2}), 0, i64({5}, {1, 1}), ones({1, 1})); },
                {"scatter_add", "index 5", "size 2"});
}

TEST_CASE("raw index_select and index_add along a dim") {
    Tensor x = raw::reshape(arange(0, 6), {2, 3});
    check_values(raw::index_select(x, 1, i64({2, 0, 2}, {3})), {2, 0, 2, 5, 3, 5});
    check_values(raw::index_select(x, 0, from_vector<int32_t>({1}, {1})), {3, 4, 5});
    check_values(raw::index_select(raw::transpose(x, 0, 1), 0, i64({2, 0}, {2})), {2, 5, 0, 3});
    Tensor every_other = raw::slice(i64({0, 9, 1, 9}, {4}), 0, 0, 4, 2);  // a strided index
    check_values(raw::index_select(x, -1, every_other), {0, 1, 3, 4});

    Tensor src = tensor({1, 2, 3, 4, 5, 6}, {3, 2});
    Tensor acc = raw::index_add(zeros({3, 2}), 0, i64({0, 2, 0}, {3}), src);
    check_values(acc, {6, 8, 0, 0, 3, 4});  // rows 0 and 2 of src both land in row 0
    Tensor src23 = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
    check_values(raw::index_add(ones({2, 2}), 1, i64({1, 1, 0}, {3}), src23), {4, 4, 7, 10});
    Tensor src_t = raw::transpose(tensor({1, 2, 3, 4}, {2, 2}), 0, 1);  // [[1, 3], [2, 4]]
    check_values(raw::index_add(zeros({2, 3}), 1, i64({0, 2}, {2}), src_t), {1, 0, 3, 2, 0, 4});

    check_error([&] { raw::index_select(x, 0, i64({0, 1}, {1, 2})); },
                {"index_select", "1-D", "(1, 2)"});
    check_error([&] { raw::index_select(x, 0, i64({2}, {1})); },
                {"index_select", "index 2", "size 2"});
    check_error([&] { raw::index_add(zeros({3, 2}), 0, i64({0}, {1}), src); },
                {"index_add", "(3, 2)", "(1, 2)"});
}

TEST_CASE("raw embedding, its backward, and determinism across thread counts") {
    Tensor weight = raw::reshape(arange(0, 12, 1, DType::F64), {4, 3});
    Tensor ids = i64({0, 3, 3, 1}, {2, 2});
    Tensor e = raw::embedding(weight, ids);
    CHECK(e.shape() == Shape{2, 2, 3});
    check_values(e, {0, 1, 2, 9, 10, 11, 9, 10, 11, 3, 4, 5});
    CHECK(raw::embedding(weight, from_vector<int32_t>({2}, {})).shape() == Shape{3});

    Tensor grad = raw::reshape(arange(1, 13, 1, DType::F64), {2, 2, 3});
    Tensor dw = raw::embedding_backward(grad, ids, 4);
    CHECK(dw.shape() == Shape{4, 3});
    check_values(dw, {1, 2, 3, 10, 11, 12, 0, 0, 0, 4 + 7, 5 + 8, 6 + 9});

    check_error([&] { raw::embedding(weight, i64({0, 4}, {2})); }, {"embedding", "id 4", "4 rows"});
    check_error([&] { raw::embedding(weight, i64({-1}, {1})); }, {"embedding", "id -1"});
    check_error([&] { raw::embedding_backward(grad, i64({0, 1}, {2}), 4); },
                {"embedding_backward", "(2, 2, 3)", "(2,)"});

    // Many repeated ids: the f32 sums must not depend on how the work is split.
    int saved = num_threads();
    Generator gen(21);
    Tensor many_ids = randint(0, 50, {4000}, gen);
    Tensor g = randn({4000, 64}, gen);
    set_num_threads(1);
    std::vector<float> one = raw::embedding_backward(g, many_ids, 50).to_vector<float>();
    for (int threads : {2, 3, 8}) {
        set_num_threads(threads);
        CHECK(raw::embedding_backward(g, many_ids, 50).to_vector<float>() == one);
    }
    set_num_threads(saved);
}

TEST_CASE("raw one_hot, triu, tril and causal_mask") {
    Tensor oh = raw::one_hot(i64({2, 0}, {2}), 3);
    CHECK(oh.shape() == Shape{2, 3});
    CHECK(oh.dtype() == DType::F32);
    check_values(oh, {0, 0, 1, 1, 0, 0});
    Tensor oh2 = raw::one_hot(from_vector<int32_t>({1, 0}, {2, 1}), 2, DType::I64);
    CHECK(oh2.shape() == Shape{2, 1, 2});
    CHECK(oh2.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1, 0});
    check_error([] { raw::one_hot(i64({3, 0}, {2}), 3); }, {"one_hot", "class 3", "3 classes"});

    Tensor x = raw::reshape(arange(1, 10), {3, 3});
    check_values(raw::triu(x), {1, 2, 3, 0, 5, 6, 0, 0, 9});
    check_values(raw::triu(x, 1), {0, 2, 3, 0, 0, 6, 0, 0, 0});
    check_values(raw::tril(x), {1, 0, 0, 4, 5, 0, 7, 8, 9});
    check_values(raw::tril(x, -1), {0, 0, 0, 4, 0, 0, 7, 8, 0});
    check_values(raw::tril(raw::transpose(x, 0, 1)), {1, 0, 0, 2, 5, 0, 3, 6, 9});
    Tensor batch = raw::reshape(arange(0, 12), {2, 2, 3});  // two 2x3 matrices
    check_values(raw::triu(batch, -1), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    check_values(raw::tril(batch, 1), {0, 1, 0, 3, 4, 5, 6, 7, 0, 9, 10, 11});
    check_error([] { raw::triu(ones({3})); }, {"triu", "2 dims", "(3,)"});

    const double inf = std::numeric_limits<double>::infinity();
    Tensor mask = raw::causal_mask(3);
    CHECK(mask.shape() == Shape{3, 3});
    check_values(mask, {0, -inf, -inf, 0, 0, -inf, 0, 0, 0});
    CHECK(raw::causal_mask(2, DType::F64).dtype() == DType::F64);
    check_error([] { raw::causal_mask(2, DType::I64); }, {"causal_mask", "floating-point"});
}
