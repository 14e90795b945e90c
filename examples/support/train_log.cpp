#include "examples/support/train_log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace ember::examples {

TrainLog::TrainLog(const std::string& csv_path, int64_t total_steps, const std::string& unit, bool append)
    : csv_path_(csv_path), append_(append), total_steps_(total_steps), unit_(unit), terminal_(isatty(STDOUT_FILENO)) {
    start_ = last_ = std::chrono::steady_clock::now();
}

static const char* const CSV_HEADER = "step,metric,value\n";

void TrainLog::open_csv(int64_t first_step) {
    std::string kept = CSV_HEADER;
    if (append_) {
        std::ifstream in(csv_path_);
        std::string line;
        for (bool header = true; std::getline(in, line); header = false) {
            if (header && line + "\n" == CSV_HEADER) continue;
            long long step = 0;
            if (std::sscanf(line.c_str(), "%lld,", &step) == 1 && step < first_step) kept += line + "\n";
        }
    }
    nn::write_file_atomically(csv_path_, kept);
    csv_ = std::make_unique<nn::AppendFile>(csv_path_, false);
}

static std::string duration(double seconds) {
    int s = int(std::lround(std::max(0.0, seconds)));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
    return buf;
}

void TrainLog::step(int64_t step, double loss, int64_t items, double lr) {
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    if (first_step_ < 0) {
        first_step_ = step, smoothed_loss_ = loss;
    } else {
        smoothed_loss_ = 0.9 * smoothed_loss_ + 0.1 * loss;
    }
    double rate = dt > 0 ? double(items) / dt : 0;
    items_per_s_ = items_per_s_ == 0 ? rate : 0.9 * items_per_s_ + 0.1 * rate;
    write_row(step, "train_loss", loss);
    write_row(step, "lr", lr);

    double elapsed = std::chrono::duration<double>(now - start_).count();
    int64_t done = step - first_step_ + 1, left = total_steps_ - step;
    double eta = done > 0 ? elapsed / double(done) * double(left) : 0;
    char line[200];
    std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  %.0f %s/s  lr %.2e  elapsed %s  eta %s",
                  (long long)step, (long long)total_steps_, smoothed_loss_, items_per_s_, unit_.c_str(), lr,
                  duration(elapsed).c_str(), duration(eta).c_str());
    if (terminal_) {
        const int width = 24;
        int filled = int(double(width) * double(step) / double(std::max<int64_t>(total_steps_, 1)));
        std::cout << "\r[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), '.')
                  << "] " << line << "\033[K" << std::flush;
        line_open_ = true;
    } else if (step % 50 == 0 || step == total_steps_ || step == first_step_) {
        std::cout << line << "\n" << std::flush;
    }
}

void TrainLog::metric(int64_t step, const std::string& name, double value) {
    write_row(step, name, value);
    if (line_open_) std::cout << "\n", line_open_ = false;
    std::cout << "step " << step << "  " << name << " " << value << "\n" << std::flush;
}

void TrainLog::finish() {
    if (line_open_) std::cout << "\n" << std::flush, line_open_ = false;
    if (csv_) csv_->sync();
}

void TrainLog::write_row(int64_t step, const std::string& name, double value) {
    if (!csv_) open_csv(step);
    std::ostringstream row;
    row << step << "," << name << "," << value << "\n";
    csv_->append(row.str());
}

bool TrainLog::plot(const std::string& csv_path, const std::string& png_path, const std::string& title) {
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
        std::cout << "(no loss curve: install gnuplot, e.g. `apt-get install gnuplot-nox`, to get " << png_path
                  << ")\n";
        return false;
    }
    // Each metric is picked out of the long CSV by a filter in the plot command. The script
    // goes through a file, so no shell quoting stands between it and gnuplot.
    std::string script_path = png_path + ".gp";
    std::string safe_title = title;  // a quote would end gnuplot's string
    for (char& c : safe_title)
        if (c == '\'' || c == '"') c = ' ';
    {
        std::ostringstream script;
        script << "set terminal png size 900,500\nset output '" << png_path << "'\n"
               << "set datafile separator ','\nset title '" << safe_title << "'\n"
               << "set xlabel 'step'\nset ylabel 'loss'\nset key top right\n"
               << "plot '" << csv_path << "' using 1:(stringcolumn(2) eq 'train_loss' ? $3 : 1/0) "
               << "with points pt 7 ps 0.3 title 'train', '' using 1:(stringcolumn(2) eq 'val_loss' ? $3 : 1/0) "
               << "with linespoints title 'val'\n";
        nn::write_file_atomically(script_path, script.str());
    }
    int rc = std::system(("gnuplot '" + script_path + "' 2>/dev/null").c_str());
    std::remove(script_path.c_str());
    if (rc != 0) {
        std::cout << "(gnuplot failed to draw " << png_path << ")\n";
        return false;
    }
    std::cout << "loss curve: " << png_path << "\n";
    return true;
}

}  // namespace ember::examples
