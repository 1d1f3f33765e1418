// Parameter initialisation (mirrors src/handgrad/nn/init.py).
#pragma once

#include "handgrad/nn/parameter.hpp"

#include <cmath>
#include <random>

namespace handgrad::nn {

// Kaiming-uniform with a = sqrt(5), PyTorch's default for Linear and Conv2d: weight and bias both
// from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
inline void default_linear_init(Parameter& weight, Parameter* bias, std::mt19937_64& generator) {
    const int64_t fan_in = weight.data.shape[0] > 0 ? weight.data.numel() / weight.data.shape[0] : 0;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    std::uniform_real_distribution<double> uniform(-bound, bound);
    for (float& w : weight.data.data) w = static_cast<float>(uniform(generator));
    if (bias)
        for (float& b : bias->data.data) b = static_cast<float>(uniform(generator));
}

}  // namespace handgrad::nn
