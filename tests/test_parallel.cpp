// parallel_for: every item visited once, nested calls, errors carried back to the caller.
#include <atomic>
#include <stdexcept>
#include <vector>

#include "tests/helpers.h"
#include "tensor/parallel.h"

using namespace ember;

TEST_CASE("parallel_for: covers the range exactly once, many times over") {
    int saved = num_threads();
    set_num_threads(4);  // more chunks than this machine may have cores
    for (int64_t n : {1, 3, 4, 5, 1000, 4097}) {
        for (int repeat = 0; repeat < 50; ++repeat) {
            std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
            parallel_for(n, 1, [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) hits[size_t(i)]++;
            });
            int64_t wrong = 0;
            for (int64_t i = 0; i < n; ++i) wrong += hits[size_t(i)].load() != 1;
            REQUIRE(wrong == 0);
        }
    }
    set_num_threads(saved);
}

TEST_CASE("parallel_for: a nested call runs inline and still covers its range") {
    int saved = num_threads();
    set_num_threads(3);
    std::atomic<int64_t> total{0};
    parallel_for(6, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
            parallel_for(100, 1, [&](int64_t b, int64_t e) { total += e - b; });
    });
    CHECK(total.load() == 600);
    set_num_threads(saved);
}

TEST_CASE("parallel_for: an exception in any chunk reaches the caller, and the pool goes on") {
    int saved = num_threads();
    set_num_threads(4);
    CHECK_THROWS_WITH_AS(parallel_for(8, 1,
                                      [&](int64_t begin, int64_t) {
                                          if (begin >= 4) throw std::runtime_error("chunk failed");
                                      }),
                         "chunk failed", std::runtime_error);
    std::atomic<int64_t> total{0};
    parallel_for(8, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
    CHECK(total.load() == 8);
    set_num_threads(saved);
}
