// The generator behind initialisation and dropout (mirrors src/handgrad/_random.py).
#pragma once

#include <cstdint>
#include <random>

namespace handgrad {

// Seeded by manual_seed: a C++ mt19937_64, so the same distributions as handgrad's NumPy generator,
// not the same draws.
inline std::mt19937_64& default_generator() {
    static std::mt19937_64 generator(0);
    return generator;
}
inline void manual_seed(uint64_t seed) { default_generator().seed(seed); }

}  // namespace handgrad
