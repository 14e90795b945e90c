// parallel_for over a persistent pool of worker threads.
//
// Starting a thread costs tens of microseconds, which is as much as many of the ops it would
// speed up, so the workers are started once (on first use) and then sleep on a condition
// variable between jobs. A job is a range cut into `chunks` pieces; the caller and the workers
// take pieces from an atomic counter until none are left, and the caller waits for the last one.
// A parallel_for issued from inside a job runs inline, so nested calls cannot deadlock.
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "tensor/check.h"

namespace ember {

static std::atomic<int> g_threads{0};  // 0: not chosen yet
static thread_local bool t_inside_job = false;

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

namespace {

class ThreadPool {
public:
    // Runs run_chunk(c) for c in [0, chunks) on the caller and up to chunks - 1 workers.
    void run(int64_t chunks, const std::function<void(int64_t)>& run_chunk) {
        std::lock_guard<std::mutex> one_job_at_a_time(job_mutex_);
        grow_to(int(chunks) - 1);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &run_chunk;
            chunks_.store(chunks);
            next_chunk_.store(0);  // last: whoever sees 0 also sees the job and its size
            unfinished_ = chunks;
            ++generation_;
        }
        wake_.notify_all();
        take_chunks();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return unfinished_ == 0; });
        next_chunk_.store(NO_CHUNKS);  // a worker waking late finds nothing to take
        job_ = nullptr;
    }

    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }

private:
    void grow_to(int n) {
        while (int(workers_.size()) < n) workers_.emplace_back([this] { worker_loop(); });
    }

    void worker_loop() {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
                if (stopping_) return;
                seen = generation_;
            }
            take_chunks();
        }
    }

    // Takes pieces of the current job until none are left.
    void take_chunks() {
        t_inside_job = true;
        for (;;) {
            int64_t c = next_chunk_.fetch_add(1);
            if (c >= chunks_.load()) break;
            (*job_)(c);
            std::lock_guard<std::mutex> lock(mutex_);
            if (--unfinished_ == 0) done_.notify_all();
        }
        t_inside_job = false;
    }

    std::mutex job_mutex_;  // one parallel_for at a time from different user threads
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* job_ = nullptr;
    static constexpr int64_t NO_CHUNKS = int64_t(1) << 62;
    std::atomic<int64_t> chunks_{0};
    std::atomic<int64_t> next_chunk_{NO_CHUNKS};
    int64_t unfinished_ = 0;
    uint64_t generation_ = 0;
    bool stopping_ = false;
};

ThreadPool& pool() {
    static ThreadPool the_pool;
    return the_pool;
}

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
    if (chunks <= 1 || t_inside_job) {
        fn(0, n);
        return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    pool().run(chunks, [&](int64_t c) {
        try {
            fn(n * c / chunks, n * (c + 1) / chunks);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    });
    if (error) std::rethrow_exception(error);
}

}  // namespace ember
