#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "tensor/check.h"

namespace ember {

static std::atomic<int> g_threads{0};  // 0: not chosen yet

int num_threads() {
    int n = g_threads.load();
    if (n > 0) return n;
    n = int(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("EMBER_NUM_THREADS")) n = std::atoi(env);
    n = std::max(1, n);
    g_threads.store(n);
    return n;
}

void set_num_threads(int n) {
    EMBER_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got ", n);
    g_threads.store(n);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    int64_t chunks = std::min<int64_t>(num_threads(), (n + std::max<int64_t>(grain, 1) - 1) /
                                                          std::max<int64_t>(grain, 1));
    if (chunks <= 1) {
        fn(0, n);
        return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&](int64_t c) {
        int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
        try {
            fn(begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> workers;
    for (int64_t c = 1; c < chunks; ++c) workers.emplace_back(run, c);
    run(0);
    for (auto& w : workers) w.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace ember
