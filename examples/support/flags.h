// Command-line flags for the example programs: `--name value` or `--name=value`, each declared
// once with a default and a line of help, so that `--help` lists them all.
//
//     Flags flags("gpt train", "Trains a small GPT on a text file.");
//     int64_t steps = flags.integer("steps", 600, "optimizer steps");
//     std::string data = flags.text("data", "/usr/share/games/fortunes", "a text file or a folder");
//     flags.parse(argc, argv);   // fills the values above; --help prints and returns false
//
// A number flag may carry a Range (Range::positive(), Range::at_least(0), ...): a value outside it
// is refused when parsed, with the flag, the value and the range in the message. Real flags
// never accept nan or inf.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/check.h"

namespace ember::examples {

// An interval of allowed values, each end open or closed.
struct Range {
    double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
    bool lo_open = false, hi_open = false;

    static Range any() { return {}; }
    static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
    static Range positive() { return {0, std::numeric_limits<double>::infinity(), true, false}; }
    static Range between(double lo, double hi) { return {lo, hi, false, false}; }
    static Range above_up_to(double lo, double hi) { return {lo, hi, true, false}; }  // (lo, hi]
    static Range from_below(double lo, double hi) { return {lo, hi, false, true}; }   // [lo, hi)

    bool contains(double v) const {
        return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    }
    std::string describe() const {
        std::ostringstream os;
        bool low = std::isfinite(lo), high = std::isfinite(hi);
        if (low && !high && lo == 0 && lo_open) os << "positive";
        else if (low && !high) os << (lo_open ? "above " : "at least ") << lo;
        else if (!low && high) os << (hi_open ? "below " : "at most ") << hi;
        else if (low && high) os << "in " << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
        else os << "a number";
        return os.str();
    }
};

class Flags {
public:
    Flags(std::string command, std::string summary)
        : command_(std::move(command)), summary_(std::move(summary)) {}

    // Each declaration returns a reference that parse() later fills.
    int64_t& integer(const std::string& name, int64_t value, const std::string& help, Range range = Range::any()) {
        int64_t& slot = declare<int64_t>(name, value, help, [](const std::string& s, int64_t& out) {
            size_t used = 0;
            out = std::stoll(s, &used);
            return used == s.size();
        });
        flags_.back().range = range;
        flags_.back().number = [&slot] { return double(slot); };
        return slot;
    }
    double& real(const std::string& name, double value, const std::string& help, Range range = Range::any()) {
        double& slot = declare<double>(name, value, help, [](const std::string& s, double& out) {
            size_t used = 0;
            out = std::stod(s, &used);
            return used == s.size() && std::isfinite(out);
        });
        flags_.back().range = range;
        flags_.back().number = [&slot] { return slot; };
        return slot;
    }
    std::string& text(const std::string& name, std::string value, const std::string& help) {
        return declare<std::string>(name, std::move(value), help, [](const std::string& s, std::string& out) {
            out = s;
            return true;
        });
    }
    // A switch: `--name` sets it, `--name=false` clears it.
    bool& boolean(const std::string& name, bool value, const std::string& help) {
        bool& slot = declare<bool>(name, value, help, [](const std::string& s, bool& out) {
            if (s == "true" || s == "1" || s.empty()) return out = true, true;
            if (s == "false" || s == "0") return out = false, true;
            return false;
        });
        flags_.back().is_switch = true;
        return slot;
    }

    // Returns false after printing help (`--help`); throws on an unknown flag or a bad value.
    bool parse(int argc, char** argv, int first = 1) {
        for (int i = first; i < argc; ++i) {
            std::string arg = argv[i];
            if (arg == "--help" || arg == "-h") {
                print_help(std::cout);
                return false;
            }
            EMBER_CHECK(arg.rfind("--", 0) == 0, command_, ": unexpected argument '", arg,
                        "'; flags look like --name value (see --help)");
            std::string name = arg.substr(2), value;
            bool has_value = false;
            if (size_t eq = name.find('='); eq != std::string::npos) {
                value = name.substr(eq + 1), name = name.substr(0, eq), has_value = true;
            }
            Flag* flag = find(name);
            EMBER_CHECK(flag, command_, ": unknown flag --", name, " (see --help)");
            if (!has_value && !flag->is_switch) {
                EMBER_CHECK(i + 1 < argc, command_, ": --", name, " needs a value");
                value = argv[++i];
            }
            bool ok = false;
            try {
                ok = flag->set(value);
            } catch (const std::exception&) {
                ok = false;
            }
            EMBER_CHECK(ok, command_, ": --", name, " cannot be '", value, "' (", flag->help, ")");
            EMBER_CHECK(!flag->number || flag->range.contains(flag->number()), command_, ": --", name, " must be ",
                        flag->range.describe(), ", not ", value, " (", flag->help, ")");
            flag->given = true;
        }
        return true;
    }

    bool given(const std::string& name) const {
        for (const auto& f : flags_)
            if (f.name == name) return f.given;
        return false;
    }

    void print_help(std::ostream& os) const {
        os << "usage: " << command_ << " [flags]\n" << summary_ << "\n\nflags:\n";
        for (const auto& f : flags_)
            os << "  --" << f.name << std::string(f.name.size() < 16 ? 16 - f.name.size() : 1, ' ')
               << f.help << " (default: " << f.default_text
               << (f.number && f.range.describe() != "a number" ? "; " + f.range.describe() : std::string()) << ")\n";
    }

private:
    struct Flag {
        std::string name, help, default_text;
        std::function<bool(const std::string&)> set;
        bool is_switch = false, given = false;
        Range range = Range::any();               // number flags: the values allowed
        std::function<double()> number = nullptr; // number flags: the value now
    };

    template <typename T, typename Parse>
    T& declare(const std::string& name, T value, const std::string& help, Parse parse) {
        auto slot = std::make_shared<T>(std::move(value));
        std::ostringstream shown;
        shown << std::boolalpha << *slot;
        storage_.push_back(slot);
        flags_.push_back({name, help, shown.str(), [slot, parse](const std::string& s) { return parse(s, *slot); }});
        return *slot;
    }

    Flag* find(const std::string& name) {
        for (auto& f : flags_)
            if (f.name == name) return &f;
        return nullptr;
    }

    std::string command_, summary_;
    std::vector<Flag> flags_;
    std::vector<std::shared_ptr<void>> storage_;  // owns the values the references point at
};

}  // namespace ember::examples
