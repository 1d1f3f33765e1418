// Parameter initialisation (mirrors src/handgrad/nn/init.py).
#pragma once

#include "handgrad/nn/parameter.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

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

// The --init schemes, as models.py's INITS: "default" keeps the draw above; each other one redraws
// a Linear's or Conv2d's weight (init_weight) and sets its bias to 0, as the papers defining them do.
inline const std::vector<std::string>& init_names() {
    static const std::vector<std::string> names = {"default",       "kaiming_uniform", "kaiming_normal", "xavier_uniform",
                                                   "xavier_normal", "normal",          "zeros"};
    return names;
}

// The weight (out, in, *kernel) redrawn, fan_in = in * kernel and fan_out = out * kernel as torch counts them:
//     kaiming_uniform  U(-b, b), b = sqrt(6 / fan_in)          kaiming_normal  N(0, 2 / fan_in)     (He, for ReLU)
//     xavier_uniform   U(-b, b), b = sqrt(6 / (fan_in + fan_out))   xavier_normal  N(0, 2 / (fan_in + fan_out))
//     normal           N(0, 0.01^2)                            zeros           0
inline void init_weight(Tensor& weight, const std::string& scheme, std::mt19937_64& generator) {
    const int64_t out = weight.ndim() > 0 ? weight.shape[0] : 1, in = weight.ndim() > 1 ? weight.shape[1] : 1;
    const double fan_in = out ? static_cast<double>(weight.numel() / out) : 0.0;
    const double fan_out = in ? static_cast<double>(weight.numel() / in) : 0.0;
    const auto draw = [&](auto distribution) {
        for (float& w : weight.data) w = static_cast<float>(distribution(generator));
    };
    if (scheme == "kaiming_uniform") draw(std::uniform_real_distribution<double>(-std::sqrt(6 / fan_in), std::sqrt(6 / fan_in)));
    else if (scheme == "kaiming_normal") draw(std::normal_distribution<double>(0.0, std::sqrt(2 / fan_in)));
    else if (scheme == "xavier_uniform") {
        const double bound = std::sqrt(6 / (fan_in + fan_out));
        draw(std::uniform_real_distribution<double>(-bound, bound));
    } else if (scheme == "xavier_normal") draw(std::normal_distribution<double>(0.0, std::sqrt(2 / (fan_in + fan_out))));
    else if (scheme == "normal") draw(std::normal_distribution<double>(0.0, 0.01));
    else if (scheme == "zeros") std::fill(weight.data.begin(), weight.data.end(), 0.0f);
    else {
        std::string known;
        for (auto& name : init_names()) known += (known.empty() ? "" : ", ") + name;
        throw HandgradError("init", "unknown init '" + scheme + "'; known: " + known);
    }
}

}  // namespace handgrad::nn
