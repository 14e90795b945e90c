// CPU threading: one helper, parallel_for, splits a range of work into contiguous chunks.
// The thread count defaults to the machine's cores (or EMBER_NUM_THREADS) and can be set.
#pragma once

#include <cstdint>
#include <functional>

namespace ember {

int num_threads();
void set_num_threads(int n);  // n >= 1

// Runs fn(begin, end) over [0, n) in at most num_threads() chunks of at least `grain` items each.
// Small ranges run inline on the calling thread. fn must be safe to run concurrently on disjoint
// ranges. An exception in any chunk is rethrown on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ember
