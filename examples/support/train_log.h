// What a training run shows and leaves behind: a progress bar on a terminal (plain lines when
// the output is a file or a pipe), a CSV of every logged step, and a loss-curve PNG drawn by
// gnuplot when it is installed.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace ember::examples {

class TrainLog {
public:
    // `unit` names what is counted per second ("tok", "img"). The CSV is (re)started unless
    // `append` (a resumed run adds to the file it left).
    TrainLog(const std::string& csv_path, int64_t total_steps, const std::string& unit, bool append);

    // One optimizer step done: its loss, the items it consumed and the learning rate.
    void step(int64_t step, double loss, int64_t items, double lr);
    // A metric computed now (validation loss, accuracy): printed on its own line and logged.
    void metric(int64_t step, const std::string& name, double value);
    void finish();  // ends the progress line

    // Draws the CSV's train and val loss columns into `png_path` with gnuplot; returns false
    // (and says why) when gnuplot is missing or fails.
    static bool plot(const std::string& csv_path, const std::string& png_path, const std::string& title);

private:
    void write_row(int64_t step, const std::string& name, double value);

    std::ofstream csv_;
    int64_t total_steps_;
    std::string unit_;
    bool terminal_;
    std::chrono::steady_clock::time_point start_, last_;
    int64_t first_step_ = -1;
    double smoothed_loss_ = 0, items_per_s_ = 0;
    bool line_open_ = false;
};

}  // namespace ember::examples
