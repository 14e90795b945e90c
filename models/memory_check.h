// A model too big for the machine is refused before its first tensor is allocated, with the
// size it would need, instead of growing until the kernel kills the process.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include "tensor/check.h"

namespace ember::models {

// This machine's physical memory in bytes (0 when the OS does not say).
inline double physical_memory_bytes() {
    long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? double(pages) * double(page) : 0;
}

inline std::string gigabytes(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, bytes < 1e8 ? "%.3g GB" : "%.1f GB", bytes / 1e9);
    return buf;
}

// Throws when `bytes` (what `what` needs) exceed the machine's memory; `fix` says what to shrink.
inline void check_fits_in_memory(const std::string& what, double bytes, const std::string& fix) {
    double have = physical_memory_bytes();
    EMBER_CHECK(have <= 0 || bytes <= have, what, " needs ~", gigabytes(bytes), "; the machine has ", gigabytes(have),
                ". ", fix);
}

}  // namespace ember::models
