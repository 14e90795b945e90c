// Shape: a small fixed-capacity list of dimension sizes (or strides), a plain value type that can
// be copied into a CUDA kernel's arguments. Row-major: dim 0 is the outermost.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <vector>

#include "tensor/check.h"

namespace ember {

constexpr int MAX_DIMS = 8;

struct Shape {
    int64_t dims[MAX_DIMS] = {};
    int rank = 0;

    Shape() = default;
    Shape(std::initializer_list<int64_t> list) { assign(list.begin(), list.end()); }
    Shape(const std::vector<int64_t>& v) { assign(v.begin(), v.end()); }

    template <typename It>
    void assign(It first, It last) {
        rank = 0;
        for (; first != last; ++first) push_back(*first);
    }
    void push_back(int64_t d) {
        EMBER_CHECK(rank < MAX_DIMS, "Shape: at most ", MAX_DIMS, " dimensions are supported");
        dims[rank++] = d;
    }
    void insert(int at, int64_t d) {
        push_back(0);
        for (int i = rank - 1; i > at; --i) dims[i] = dims[i - 1];
        dims[at] = d;
    }
    void erase(int at) {
        for (int i = at; i + 1 < rank; ++i) dims[i] = dims[i + 1];
        --rank;
    }

    int size() const { return rank; }
    int64_t operator[](int i) const { return dims[i]; }
    int64_t& operator[](int i) { return dims[i]; }
    const int64_t* begin() const { return dims; }
    const int64_t* end() const { return dims + rank; }
    int64_t back() const { return dims[rank - 1]; }

    int64_t numel() const {
        int64_t n = 1;
        for (int i = 0; i < rank; ++i) n *= dims[i];
        return n;
    }
    std::vector<int64_t> vec() const { return std::vector<int64_t>(begin(), end()); }

    bool operator==(const Shape& o) const {
        if (rank != o.rank) return false;
        for (int i = 0; i < rank; ++i)
            if (dims[i] != o.dims[i]) return false;
        return true;
    }
    bool operator!=(const Shape& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << "(";
    for (int i = 0; i < s.rank; ++i) os << (i ? ", " : "") << s[i];
    if (s.rank == 1) os << ",";
    return os << ")";
}

// Row-major strides of a contiguous tensor of this shape.
inline Shape contiguous_strides(const Shape& shape) {
    Shape strides;
    strides.rank = shape.rank;
    int64_t s = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
        strides[i] = s;
        s *= shape[i];
    }
    return strides;
}

// Turns a possibly negative dim into 0..rank-1, naming the op when it is out of range.
inline int wrap_dim(int dim, int rank, const char* op) {
    int d = dim < 0 ? dim + rank : dim;
    EMBER_CHECK(d >= 0 && d < rank, op, ": dim ", dim, " is out of range for a tensor of rank ", rank);
    return d;
}

// The shape two shapes broadcast to (numpy rules), or an error naming both.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    Shape out;
    int rank = a.rank > b.rank ? a.rank : b.rank;
    out.rank = rank;
    for (int i = 0; i < rank; ++i) {
        int ia = i - (rank - a.rank), ib = i - (rank - b.rank);
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        EMBER_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
              " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

}  // namespace ember
