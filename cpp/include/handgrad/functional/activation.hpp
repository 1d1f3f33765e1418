// Activations: each a forward that keeps what its derivative needs, and the backward beside it
// (mirrors src/handgrad/functional/activation.py). All element-wise.
#pragma once

#include "handgrad/tensor.hpp"

#include <cmath>

namespace handgrad::functional {

// y = max(x, 0). Returns y, which is also the cache: y > 0 exactly where x > 0.
inline std::pair<Tensor, Tensor> relu_forward(const Tensor& x) {
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return {out, out};
}

// dL/dx = G * [x > 0]   (0 at x = 0, as PyTorch)
inline Tensor relu_backward(const Tensor& grad_output, const Tensor& out) {
    check_grad_output("relu_backward", grad_output, out.shape);
    Tensor grad(out.shape);
    for (int64_t i = 0; i < out.numel(); ++i) grad[i] = out[i] > 0.0f ? grad_output[i] : 0.0f;
    return grad;
}

struct LeakyReLUCache {
    std::vector<uint8_t> positive;  // backward needs only where x > 0 ...
    float negative_slope = 0.01f;   // ... and the slope
    Shape shape;                    // x's, which grad_output must have
};

// y = x if x > 0 else negative_slope * x
inline std::pair<Tensor, LeakyReLUCache> leaky_relu_forward(const Tensor& x, float negative_slope = 0.01f) {
    Tensor out(x.shape);
    LeakyReLUCache cache{.positive = std::vector<uint8_t>(x.numel()), .negative_slope = negative_slope, .shape = x.shape};
    for (int64_t i = 0; i < x.numel(); ++i) {
        cache.positive[i] = x[i] > 0.0f;
        out[i] = cache.positive[i] ? x[i] : x[i] * negative_slope;
    }
    return {std::move(out), std::move(cache)};
}

// dL/dx = G * (1 if x > 0 else negative_slope)
inline Tensor leaky_relu_backward(const Tensor& grad_output, const LeakyReLUCache& cache) {
    check_grad_output("leaky_relu_backward", grad_output, cache.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i)
        grad[i] = cache.positive[i] ? grad_output[i] : grad_output[i] * cache.negative_slope;
    return grad;
}

// y = 1 / (1 + exp(-x)), computed as e/(1+e) with e = exp(-|x|) so no exp overflows.
// The output is the cache: dy/dx = y (1 - y).
inline std::pair<Tensor, Tensor> sigmoid_forward(const Tensor& x) {
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) {
        const float e = std::exp(-std::fabs(x[i]));
        out[i] = (x[i] >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
    return {out, out};
}

// dL/dx = G * y * (1 - y)
inline Tensor sigmoid_backward(const Tensor& grad_output, const Tensor& out) {
    check_grad_output("sigmoid_backward", grad_output, out.shape);
    Tensor grad(out.shape);
    for (int64_t i = 0; i < out.numel(); ++i) grad[i] = grad_output[i] * out[i] * (1.0f - out[i]);
    return grad;
}

// y = tanh(x); the output is the cache.
inline std::pair<Tensor, Tensor> tanh_forward(const Tensor& x) {
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = std::tanh(x[i]);
    return {out, out};
}

// dL/dx = G * (1 - y^2)
inline Tensor tanh_backward(const Tensor& grad_output, const Tensor& out) {
    check_grad_output("tanh_backward", grad_output, out.shape);
    Tensor grad(out.shape);
    for (int64_t i = 0; i < out.numel(); ++i) grad[i] = grad_output[i] * (1.0f - out[i] * out[i]);
    return grad;
}

}  // namespace handgrad::functional
