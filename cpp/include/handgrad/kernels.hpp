// The compiled-kernel side of every op: the same signatures as functional/, written for speed
// (threads over the batch, contiguous inner loops, one big matrix product instead of one per
// sample), each tested equal to its reference in tests/test_kernels.cpp (mirrors
// src/handgrad/kernels/). This is the one place that chooses between them:
//
//     kernels::enabled()                       true unless HANDGRAD_KERNELS=reference (or 0, off, ...)
//     { kernels::Reference r; ... }            the readable references inside this scope (tests)
//
// Threads: the kernels split the batch between a small pool (kernels/parallel.hpp), sized by
// HANDGRAD_NUM_THREADS or OMP_NUM_THREADS; each chunk's matrix product runs in Eigen on its thread.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace handgrad::kernels {

namespace detail {
inline bool env_enabled() {
    const char* v = std::getenv("HANDGRAD_KERNELS");
    std::string s = v ? v : "";
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return !(s == "0" || s == "off" || s == "false" || s == "no" || s == "reference");
}
inline int& forced() {  // > 0: inside a Reference scope
    static int depth = 0;
    return depth;
}
}  // namespace detail

inline bool enabled() {
    static const bool from_env = detail::env_enabled();
    return from_env && detail::forced() == 0;
}

// Run the references while this object lives (as Python's `with kernels.reference():`).
struct Reference {
    Reference() { ++detail::forced(); }
    ~Reference() { --detail::forced(); }
    Reference(const Reference&) = delete;
    Reference& operator=(const Reference&) = delete;
};

// A loop of this much work or less runs on one thread: waking a second costs more than it saves.
constexpr int64_t kMinParallelWork = 32768;

}  // namespace handgrad::kernels
