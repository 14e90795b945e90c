// <regex> for peft's name patterns. GCC 12 at -O1 with sanitizers reports a false
// -Wmaybe-uninitialized inside libstdc++'s regex automaton (std::function moved out of a
// temporary state); the warning is silenced for the header's own code only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)  // clang has no such warning
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#else
#include <regex>
#endif
