// What a training run shows and leaves behind: a progress bar on a terminal (plain lines when
// the output is a file or a pipe), a CSV of every logged step, and a loss-curve PNG drawn by
// gnuplot when it is installed.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/atomic_file.h"

namespace ember::examples {

class TrainLog {
public:
    // `unit` names what is counted per second ("tok", "img"). Nothing is written until the first
    // row, so a run that fails to start leaves an existing CSV as it was. Then the CSV is started
    // afresh, or with `append` (a resumed run) cut to the rows before that first row's step (a
    // run resumed from step s keeps rows 1..s and drops those logged after its checkpoint).
    // Each row is appended with one write(2): a killed run loses no logged row.
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
    void open_csv(int64_t first_step);

    std::string csv_path_;
    bool append_;
    std::unique_ptr<nn::AppendFile> csv_;
    int64_t total_steps_;
    std::string unit_;
    bool terminal_;
    std::chrono::steady_clock::time_point start_, last_;
    int64_t first_step_ = -1;
    double smoothed_loss_ = 0, items_per_s_ = 0;
    bool line_open_ = false;
};

}  // namespace ember::examples
