// Central finite differences over every element of small inputs, against a layer's hand-written
// backward. The layers compute in float32, so the objective L = sum(y * R), R a random upstream
// gradient, is accumulated in float64 and the step is eps = 1e-3; inputs are spread on a grid so no
// element sits within eps of a kink (ReLU at 0, a tie in a max-pool window).
#pragma once

#include "handgrad/nn.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>

namespace gradcheck {

using handgrad::Tensor;

// Distinct values k * 0.0137 - offset in random order: at least 0.0137 apart, none within eps of 0.
inline Tensor spread(handgrad::Shape shape, uint64_t seed, double scale = 1.0) {
    Tensor t(std::move(shape));
    std::vector<int64_t> k(t.numel());
    std::iota(k.begin(), k.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(k.begin(), k.end(), rng);
    const double offset = 0.0137 * static_cast<double>(t.numel()) / 2 + 0.005;
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(scale * (0.0137 * k[i] - offset));
    return t;
}

inline Tensor random_normal(handgrad::Shape shape, uint64_t seed) {
    Tensor t(std::move(shape));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    for (float& v : t.data) v = normal(rng);
    return t;
}

inline double dot(const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += double(a[i]) * double(b[i]);
    return s;
}

// Check d(objective)/d(tensor) element by element: `objective` reruns the forward and returns L
// (it reads `tensor`, which is perturbed in place); `analytic` is the backward's gradient.
inline void check(const std::string& op, const std::string& name, Tensor& tensor, const Tensor& analytic,
                  const std::function<double()>& objective, double eps = 1e-3, double rtol = 5e-3, double atol = 1e-3) {
    REQUIRE_MESSAGE(analytic.shape == tensor.shape, op << ": " << name << " gradient of shape "
                                                        << handgrad::fmt_shape(analytic.shape) << ", expected "
                                                        << handgrad::fmt_shape(tensor.shape));
    int failures = 0;
    for (int64_t i = 0; i < tensor.numel() && failures < 5; ++i) {
        const float saved = tensor[i];
        tensor[i] = saved + static_cast<float>(eps);
        const double plus = objective();
        tensor[i] = saved - static_cast<float>(eps);
        const double minus = objective();
        tensor[i] = saved;
        const double step = (double(saved + static_cast<float>(eps)) - double(saved - static_cast<float>(eps)));
        const double expected = (plus - minus) / step, got = analytic[i];
        const double error = std::fabs(got - expected);
        if (error > atol + rtol * std::fabs(expected)) {
            ++failures;
            FAIL_CHECK(op << ": d/d" << name << " element " << i << ": finite differences " << expected
                          << ", backward " << got << ", error " << error);
        }
    }
}

}  // namespace gradcheck
