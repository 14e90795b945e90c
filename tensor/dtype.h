// Element types. f32 trains, f64 checks gradients and serves as a reference, i32/i64 hold ids and
// labels. bf16/f16 will join as GPU storage types; 4-bit weights are a quantized type of their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>

#include "tensor/check.h"

namespace ember {

enum class DType { F32, F64, I32, I64 };

inline size_t dtype_size(DType t) {
    switch (t) {
        case DType::F32: return 4;
        case DType::F64: return 8;
        case DType::I32: return 4;
        case DType::I64: return 8;
    }
    return 0;
}

inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "f32";
        case DType::F64: return "f64";
        case DType::I32: return "i32";
        case DType::I64: return "i64";
    }
    return "?";
}

inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64; }

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

// The C++ type that holds one element of each dtype, and back.
template <typename T> struct TypeTag { using type = T; };
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }

// dispatch_float(dtype, "op", [&](auto tag) { using T = typename decltype(tag)::type; ... })
// runs the lambda with T = float or double, and names the op when given an integer dtype.
template <typename Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
    switch (t) {
        case DType::F32: return fn(TypeTag<float>{});
        case DType::F64: return fn(TypeTag<double>{});
        default: break;
    }
    throw Error(make_message(op, ": needs a floating-point tensor (f32 or f64), got ", t,
                             "; convert it with .to(DType::F32)"));
}

// dispatch_all: the same over every dtype.
template <typename Fn>
decltype(auto) dispatch_all(DType t, Fn&& fn) {
    switch (t) {
        case DType::F32: return fn(TypeTag<float>{});
        case DType::F64: return fn(TypeTag<double>{});
        case DType::I32: return fn(TypeTag<int32_t>{});
        case DType::I64: return fn(TypeTag<int64_t>{});
    }
    return fn(TypeTag<float>{});
}

// dispatch_index: index tensors are i32 or i64.
template <typename Fn>
decltype(auto) dispatch_index(DType t, const char* op, Fn&& fn) {
    switch (t) {
        case DType::I32: return fn(TypeTag<int32_t>{});
        case DType::I64: return fn(TypeTag<int64_t>{});
        default: break;
    }
    throw Error(make_message(op, ": indices must be i32 or i64, got ", t,
                             "; convert them with .to(DType::I64)"));
}

}  // namespace ember
