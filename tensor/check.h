// Errors. Ember never calls exit() or abort(): every failed check throws ember::Error with a
// message that names the operation, what it was given and, where there is one, the fix.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ember {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
    os << first;
    append(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: make_message("matmul: ", a.shape(), " vs ", b.shape()).
template <typename... Parts>
std::string make_message(const Parts&... parts) {
    std::ostringstream os;
    detail::append(os, parts...);
    return os.str();
}

}  // namespace ember

// EMBER_CHECK(cond, pieces...): throw ember::Error(pieces...) when cond is false.
#define EMBER_CHECK(cond, ...)                                             \
    do {                                                             \
        if (!(cond)) throw ::ember::Error(::ember::make_message(__VA_ARGS__)); \
    } while (0)
