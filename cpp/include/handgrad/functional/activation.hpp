// Activations: each a forward that keeps what its derivative needs, and the backward beside it
// (mirrors src/handgrad/functional/activation.py). All element-wise except softmax and log_softmax,
// which couple the entries along one axis.
#pragma once

#include "handgrad/tensor.hpp"

#include <algorithm>
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

struct ELUCache {
    std::vector<uint8_t> positive;  // backward needs where x > 0 ...
    Tensor out;                     // ... and y: where x <= 0, dy/dx = alpha * exp(x) = y + alpha
    float alpha = 1.0f;
};

// y = x if x > 0 else alpha * (exp(x) - 1)   (expm1: exact near 0)
inline std::pair<Tensor, ELUCache> elu_forward(const Tensor& x, float alpha = 1.0f) {
    ELUCache cache{.positive = std::vector<uint8_t>(x.numel()), .out = Tensor(x.shape), .alpha = alpha};
    for (int64_t i = 0; i < x.numel(); ++i) {
        cache.positive[i] = x[i] > 0.0f;
        cache.out[i] = cache.positive[i] ? x[i] : alpha * std::expm1(x[i]);
    }
    Tensor out = cache.out;
    return {std::move(out), std::move(cache)};
}

// dL/dx = G * (1 if x > 0 else y + alpha)   (alpha at x = 0, as PyTorch)
inline Tensor elu_backward(const Tensor& grad_output, const ELUCache& cache) {
    check_grad_output("elu_backward", grad_output, cache.out.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i)
        grad[i] = cache.positive[i] ? grad_output[i] : grad_output[i] * (cache.out[i] + cache.alpha);
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

// -- GELU, SiLU and Softplus ---------------------------------------------------------------------
// The constants in float32, as the Python multiplies float32 arrays by them.
constexpr double kSqrtHalf = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTanhScale = 0.79788456080286535588, kTanhCubic = 0.044715;  // sqrt(2/pi); GELU's tanh form

struct GELUCache {
    Tensor x;      // backward needs x ...
    Tensor saved;  // ... and Phi(x) ('none') or t ('tanh')
    bool tanh = false;
};

// 'none':  y = x * Phi(x),  Phi(x) = erfc(-x / sqrt(2)) / 2 (in float64: no cancellation where Phi is tiny)
// 'tanh':  y = x * (1 + t) / 2,  t = tanh(sqrt(2/pi) * (x + 0.044715 x^3))
inline std::pair<Tensor, GELUCache> gelu_forward(const Tensor& x, bool tanh_approximation = false) {
    GELUCache cache{.x = x, .saved = Tensor(x.shape), .tanh = tanh_approximation};
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) {
        const float v = x[i];
        if (tanh_approximation) {
            cache.saved[i] = std::tanh(static_cast<float>(kTanhScale) * (v + static_cast<float>(kTanhCubic) * v * v * v));
            out[i] = v * (1.0f + cache.saved[i]) / 2.0f;
        } else {
            cache.saved[i] = static_cast<float>(std::erfc(static_cast<double>(-v * static_cast<float>(kSqrtHalf))) / 2.0);
            out[i] = v * cache.saved[i];
        }
    }
    return {std::move(out), std::move(cache)};
}

// 'none':  dL/dx = G * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// 'tanh':  dL/dx = G * ((1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2)
inline Tensor gelu_backward(const Tensor& grad_output, const GELUCache& cache) {
    check_grad_output("gelu_backward", grad_output, cache.x.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i) {
        const float v = cache.x[i], s = cache.saved[i];
        if (cache.tanh) {
            const float inner = static_cast<float>(kTanhScale) * (1.0f + static_cast<float>(3 * kTanhCubic) * v * v);
            grad[i] = grad_output[i] * ((1.0f + s) / 2.0f + v * (1.0f - s * s) * inner / 2.0f);
        } else {
            grad[i] = grad_output[i] * (s + v * static_cast<float>(kInvSqrt2Pi) * std::exp(-v * v / 2.0f));
        }
    }
    return grad;
}

// 1 / (1 + exp(-x)) as e/(1+e) with e = exp(-|x|): no exp overflows.
inline float stable_sigmoid(float x) {
    const float e = std::exp(-std::fabs(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

struct SiLUCache {
    Tensor x, sigmoid;  // backward needs x and sigmoid(x)
};

// y = x * sigmoid(x)
inline std::pair<Tensor, SiLUCache> silu_forward(const Tensor& x) {
    SiLUCache cache{.x = x, .sigmoid = Tensor(x.shape)};
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) {
        cache.sigmoid[i] = stable_sigmoid(x[i]);
        out[i] = x[i] * cache.sigmoid[i];
    }
    return {std::move(out), std::move(cache)};
}

// dL/dx = G * s * (1 + x * (1 - s)),  s = sigmoid(x)
inline Tensor silu_backward(const Tensor& grad_output, const SiLUCache& cache) {
    check_grad_output("silu_backward", grad_output, cache.x.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i) {
        const float s = cache.sigmoid[i];
        grad[i] = grad_output[i] * s * (1.0f + cache.x[i] * (1.0f - s));
    }
    return grad;
}

struct SoftplusCache {
    Tensor bx;                    // backward needs beta * x ...
    std::vector<uint8_t> linear;  // ... and where the output is linear (beta * x > threshold)
};

// y = log(1 + exp(beta * x)) / beta, and y = x where beta * x > threshold (as torch: linear there);
// log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)), which never overflows.
inline std::pair<Tensor, SoftplusCache> softplus_forward(const Tensor& x, float beta = 1.0f, double threshold = 20.0) {
    SoftplusCache cache{.bx = Tensor(x.shape), .linear = std::vector<uint8_t>(x.numel())};
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) {
        const float z = x[i] * beta;
        cache.bx[i] = z;
        cache.linear[i] = z > threshold;
        out[i] = cache.linear[i] ? x[i] : (std::max(z, 0.0f) + std::log1p(std::exp(-std::fabs(z)))) / beta;
    }
    return {std::move(out), std::move(cache)};
}

// dL/dx = G * sigmoid(beta * x), and G where beta * x > threshold
inline Tensor softplus_backward(const Tensor& grad_output, const SoftplusCache& cache) {
    check_grad_output("softplus_backward", grad_output, cache.bx.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i)
        grad[i] = cache.linear[i] ? grad_output[i] : grad_output[i] * stable_sigmoid(cache.bx[i]);
    return grad;
}

// -- softmax and log_softmax along one axis ------------------------------------------------------
// x as (outer, size, inner) around the axis `dim` (negative counts from the end).
struct Axis {
    int64_t outer = 1, size = 1, inner = 1;
    Axis(const Shape& shape, int dim) {
        const int d = dim < 0 ? dim + static_cast<int>(shape.size()) : dim;
        for (int k = 0; k < static_cast<int>(shape.size()); ++k)
            (k < d ? outer : k == d ? size : inner) *= shape[k];
    }
    // line(start, stride) for every line along the axis: its elements are start + j * stride, j < size.
    template <class Line>
    void lines(Line line) const {
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t i = 0; i < inner; ++i) line(o * size * inner + i, inner);
    }
};

struct SoftmaxCache {
    Tensor out;   // backward needs y (softmax) or log softmax ...
    int dim = -1;  // ... and the axis
};

// y_i = exp(x_i - m) / sum_j exp(x_j - m) along dim, with m = max_j x_j for stability; the sums in
// float64. log = true: y_i = x_i - m - log sum_j exp(x_j - m) (log_softmax).
inline std::pair<Tensor, SoftmaxCache> softmax_forward(const Tensor& x, int dim = -1, bool log = false) {
    SoftmaxCache cache{.out = Tensor(x.shape), .dim = dim};
    if (x.numel() == 0) return {cache.out, cache};  // nothing to normalise, as torch
    const Axis axis(x.shape, dim);
    const int64_t size = axis.size;
    axis.lines([&](int64_t start, int64_t stride) {
        float m = x[start];
        for (int64_t j = 1; j < size; ++j) m = std::max(m, x[start + j * stride]);
        double sum = 0;
        for (int64_t j = 0; j < size; ++j) sum += std::exp(static_cast<double>(x[start + j * stride]) - m);
        const double log_sum = std::log(sum);
        for (int64_t j = 0; j < size; ++j) {
            const double shifted = static_cast<double>(x[start + j * stride]) - m;
            cache.out[start + j * stride] = static_cast<float>(log ? shifted - log_sum : std::exp(shifted) / sum);
        }
    });
    Tensor out = cache.out;
    return {std::move(out), std::move(cache)};
}

// softmax:      dL/dx_i = y_i * (G_i - sum_j G_j y_j)   (the Jacobian diag(y) - y y^T applied to G)
// log_softmax:  dL/dx_i = G_i - exp(y_i) * sum_j G_j
inline Tensor softmax_backward(const Tensor& grad_output, const SoftmaxCache& cache, bool log = false) {
    check_grad_output(log ? "log_softmax_backward" : "softmax_backward", grad_output, cache.out.shape);
    const Tensor& y = cache.out;
    Tensor grad(y.shape);
    if (y.numel() == 0) return grad;
    const Axis axis(y.shape, cache.dim);
    axis.lines([&](int64_t start, int64_t stride) {
        double total = 0;
        for (int64_t j = 0; j < axis.size; ++j) {
            const int64_t i = start + j * stride;
            total += log ? static_cast<double>(grad_output[i]) : static_cast<double>(grad_output[i]) * y[i];
        }
        for (int64_t j = 0; j < axis.size; ++j) {
            const int64_t i = start + j * stride;
            grad[i] = static_cast<float>(log ? grad_output[i] - std::exp(static_cast<double>(y[i])) * total
                                             : y[i] * (grad_output[i] - total));
        }
    });
    return grad;
}

inline std::pair<Tensor, SoftmaxCache> log_softmax_forward(const Tensor& x, int dim = -1) {
    return softmax_forward(x, dim, true);
}
inline Tensor log_softmax_backward(const Tensor& grad_output, const SoftmaxCache& cache) {
    return softmax_backward(grad_output, cache, true);
}

}  // namespace handgrad::functional
