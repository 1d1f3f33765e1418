// Whether layers keep what backward needs (mirrors src/handgrad/_grad_mode.py). Off while a
// NoGradGuard lives, as inside Python's `with handgrad.no_grad():` or libtorch's NoGradGuard: a
// forward then stores no cache and copies nothing for backward, which inference never calls.
#pragma once

namespace handgrad {

namespace detail {
inline bool& grad_enabled_flag() {
    thread_local bool enabled = true;  // per thread, as torch's grad mode
    return enabled;
}
}  // namespace detail

inline bool is_grad_enabled() { return detail::grad_enabled_flag(); }

// Caching for backward off from construction to destruction, then back to what it was.
class NoGradGuard {
public:
    NoGradGuard() : previous(is_grad_enabled()) { detail::grad_enabled_flag() = false; }
    ~NoGradGuard() { detail::grad_enabled_flag() = previous; }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool previous;
};

}  // namespace handgrad
