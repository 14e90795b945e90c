// The harness behind the CUDA op table (tests/test_cuda.cpp): each case runs its op on the CPU
// and on a second device, compares the forward values and the input gradients, and reports on
// its own line (its name, the largest absolute and relative errors, the first bad element). A
// case that mismatches or throws is recorded and the table goes on, so one run shows every
// failure, not only the first.
#pragma once

#include <cmath>
#include <exception>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace ember {
namespace testing {

using OpInputs = const std::vector<Tensor>&;
using OpFn = std::function<Tensor(OpInputs)>;

struct OpCase {
    std::string name;
    std::vector<Tensor> inputs;  // on the CPU; every floating one gets a gradient
    OpFn fn;
    double tol = 0;  // 0: the dtype's default
};

// Where two tensors differ beyond |a - b| <= tol * (scale + |a|) + floor, scale being the largest
// finite |a| of the CPU tensor; NaN must meet NaN and infinities must match.
struct Diff {
    double max_abs = 0, max_rel = 0;
    int64_t first_bad = -1;  // row-major index, -1 when every element is within tolerance
    double cpu_value = 0, other_value = 0;
};

inline Diff compare_values(const Tensor& cpu, const Tensor& other, double tol) {
    std::vector<double> a = cpu.to_vector<double>(), b = other.to_vector<double>();
    double scale = 0;
    for (double v : a)
        if (std::isfinite(v)) scale = std::max(scale, std::fabs(v));
    const double floor = cpu.dtype() == DType::F64 ? 1e-13 : 1e-7;
    Diff d;
    for (size_t i = 0; i < a.size(); ++i) {
        bool ok;
        if (std::isnan(a[i]) || std::isnan(b[i])) {
            ok = std::isnan(a[i]) && std::isnan(b[i]);
        } else if (std::isinf(a[i]) || std::isinf(b[i])) {
            ok = a[i] == b[i];
        } else {
            const double err = std::fabs(a[i] - b[i]);
            d.max_abs = std::max(d.max_abs, err);
            if (a[i] != 0) d.max_rel = std::max(d.max_rel, err / std::fabs(a[i]));
            ok = err <= tol * (scale + std::fabs(a[i])) + floor;
        }
        if (!ok && d.first_bad < 0) {
            d.first_bad = int64_t(i);
            d.cpu_value = a[i];
            d.other_value = b[i];
        }
    }
    return d;
}

// One case's outcome: `problems` is empty when it passed.
struct CaseReport {
    std::string name;
    double max_abs = 0, max_rel = 0;  // over the forward output and every gradient
    std::vector<std::string> problems;
    bool ok() const { return problems.empty(); }
};

// Compares one output (`what`: "forward", "gradient of input 1") into the report.
inline void compare_into(CaseReport& r, const std::string& what, const Tensor& cpu,
                         const Tensor& other, const Device& device, double tol) {
    if (cpu.defined() != other.defined()) {
        r.problems.push_back(what + ": defined on one device only");
        return;
    }
    if (!cpu.defined()) return;
    std::ostringstream os;
    if (!(other.device() == device)) os << "on " << other.device() << ", not " << device << "; ";
    if (cpu.shape() != other.shape() || cpu.dtype() != other.dtype()) {
        os << "shape " << other.shape() << " " << other.dtype() << " where the CPU gives "
           << cpu.shape() << " " << cpu.dtype();
        r.problems.push_back(what + ": " + os.str());
        return;
    }
    const Diff d = compare_values(cpu, other, tol);
    r.max_abs = std::max(r.max_abs, d.max_abs);
    r.max_rel = std::max(r.max_rel, d.max_rel);
    if (d.first_bad >= 0)
        os << "first bad element (row-major) " << d.first_bad << " of shape " << cpu.shape()
           << ": cpu " << d.cpu_value << ", " << device << " " << d.other_value << " (max abs error "
           << d.max_abs << ", max rel error " << d.max_rel << ")";
    if (!os.str().empty()) r.problems.push_back(what + ": " + os.str());
}

// Runs the case on the CPU and on `device`, compares the outputs and, when the output has a
// gradient, the gradients of every input after backward with the same upstream gradient. Never
// throws: an exception becomes a problem of the case.
inline CaseReport run_op_case(const OpCase& c, const Device& device) {
    CaseReport r;
    r.name = c.name;
    std::string stage = "setup";
    try {
        std::vector<Tensor> cpu_in, dev_in;
        for (const Tensor& x : c.inputs) {
            Tensor a = raw::clone(x), b = raw::to_device(x, device);
            if (is_floating(x.dtype())) {
                a.set_requires_grad();
                b.set_requires_grad();
            }
            cpu_in.push_back(a);
            dev_in.push_back(b);
        }
        stage = "forward on the CPU";
        Tensor y_cpu = c.fn(cpu_in);
        stage = "forward on the device";
        Tensor y_dev = c.fn(dev_in);
        stage = "forward comparison";
        const double tol = c.tol > 0 ? c.tol : (y_cpu.dtype() == DType::F64 ? 1e-10 : 1e-5);
        compare_into(r, "forward", y_cpu, y_dev, device, tol);
        if (!y_cpu.requires_grad()) return r;
        if (!y_dev.requires_grad()) {
            r.problems.push_back("forward: the device output has no gradient, the CPU's has");
            return r;
        }
        Generator gen(99);
        Tensor upstream = randn(y_cpu.shape(), gen, y_cpu.dtype());
        stage = "backward on the CPU";
        y_cpu.backward(upstream);
        stage = "backward on the device";
        y_dev.backward(raw::to_device(upstream, device));
        stage = "gradient comparison";
        for (size_t i = 0; i < cpu_in.size(); ++i) {
            if (!cpu_in[i].requires_grad()) continue;
            compare_into(r, "gradient of input " + std::to_string(i), cpu_in[i].grad(),
                         dev_in[i].grad(), device, tol);
        }
    } catch (const std::exception& e) {
        r.problems.push_back("threw during " + stage + ": " + e.what());
    } catch (...) {
        r.problems.push_back("threw a non-standard exception during " + stage);
    }
    return r;
}

// Runs every case (none stops the others), prints one line per case to `out` and a last line
// with the counts, and returns the reports.
inline std::vector<CaseReport> run_op_table(const std::vector<OpCase>& cases, const Device& device,
                                            std::ostream& out = std::cout) {
    std::vector<CaseReport> reports;
    int failed = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
        CaseReport r = run_op_case(cases[i], device);
        std::ostringstream line;
        line.precision(3);
        line << "op " << (i + 1) << "/" << cases.size() << (r.ok() ? " PASS " : " FAIL ") << r.name
             << "  (max abs " << r.max_abs << ", max rel " << r.max_rel << ")";
        out << line.str() << "\n";
        for (const std::string& p : r.problems) out << "    " << p << "\n";
        failed += r.ok() ? 0 : 1;
        reports.push_back(std::move(r));
    }
    out << "op table: " << cases.size() - failed << " of " << cases.size() << " cases passed, "
        << failed << " failed" << std::endl;
    return reports;
}

// The failed cases' names and problems, one per line (for a test's failure message).
inline std::string failure_list(const std::vector<CaseReport>& reports) {
    std::string s;
    for (const CaseReport& r : reports)
        for (const std::string& p : r.problems) s += r.name + ": " + p + "\n";
    return s;
}

}  // namespace testing
}  // namespace ember
