// What the CPU benchmarks share: the median time of a call, and the machine's load (figures from a
// loaded machine are recorded with it).
#pragma once

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

// Median seconds per call of fn, after one warm-up call, over enough calls to fill about `budget`
// seconds (at least 3, at most 100).
template <typename Fn>
double median_seconds(Fn&& fn, double budget = 0.5) {
    using clock = std::chrono::steady_clock;
    fn();
    std::vector<double> times;
    double spent = 0;
    while ((spent < budget && times.size() < 100) || times.size() < 3) {
        auto t0 = clock::now();
        fn();
        double s = std::chrono::duration<double>(clock::now() - t0).count();
        times.push_back(s);
        spent += s;
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

// /proc/loadavg's 1, 5 and 15 minute averages, or "" where there is none.
inline std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string one, five, fifteen;
    f >> one >> five >> fifteen;
    return f ? one + " " + five + " " + fifteen : std::string();
}
