// parallel_for over a persistent pool of worker threads.
//
// Starting a thread costs tens of microseconds, which is as much as many of the ops it would
// speed up, so the workers are started once (on first use) and then sleep on a condition
// variable between jobs. A job is a range cut into `chunks` pieces; the caller and the workers
// take pieces from an atomic counter until none are left, and the caller waits for the last one.
// A parallel_for issued from inside a job runs inline, so nested calls cannot deadlock.
//
// Waking a sleeping thread through the kernel takes 10-20 us on this project's VMs, which is the
// whole time of a 64k-element add, so a worker that has just finished a job keeps polling for the
// next one for up to SPIN_MICROSECONDS before it sleeps, and the caller polls for the last chunk
// the same way before it blocks. A training step issues its ops back to back, so the workers stay
// awake through it; between steps (or when idle) they sleep as before.
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
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

constexpr int64_t SPIN_MICROSECONDS = 30;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Polls done() for up to SPIN_MICROSECONDS; true when it became true in that time.
template <typename Done>
bool spin_until(Done&& done) {
    using clock = std::chrono::steady_clock;
    const auto give_up = clock::now() + std::chrono::microseconds(SPIN_MICROSECONDS);
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            if (done()) return true;
            cpu_relax();
        }
        if (clock::now() > give_up) return false;
    }
}

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
            unfinished_.store(chunks);
            generation_.fetch_add(1);
        }
        wake_.notify_all();
        take_chunks();
        spin_until([&] { return unfinished_.load() == 0; });
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return unfinished_.load() == 0; });
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
            auto ready = [&] { return stopping_.load() || generation_.load() != seen; };
            if (!spin_until(ready)) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, ready);
            }
            if (stopping_.load()) return;
            seen = generation_.load();  // read after the job's fields were written (see run)
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
    std::atomic<int64_t> unfinished_{0};  // changed under mutex_, polled without it
    std::atomic<uint64_t> generation_{0};  // bumped last, under mutex_, once the job is set up
    std::atomic<bool> stopping_{false};
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
