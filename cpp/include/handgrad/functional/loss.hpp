// Losses (mirrors src/handgrad/functional/loss.py). Each forward returns the loss and a cache: a 0-d
// tensor for 'mean' and 'sum', the per-sample losses for 'none'. Each backward turns dL/dloss (of
// the loss's shape) into dL/dinput.
#pragma once

#include "handgrad/tensor.hpp"

#include <cmath>
#include <string>

namespace handgrad::functional {

enum class Reduction { mean, sum, none };

inline std::string reduction_name(Reduction r) { return r == Reduction::mean ? "mean" : r == Reduction::sum ? "sum" : "none"; }
// "mean", "sum" or "none"; anything else raises HandgradError naming `where`.
inline Reduction reduction_from(const std::string& name, const std::string& where) {
    for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none})
        if (reduction_name(r) == name) return r;
    throw HandgradError(where, "reduction must be one of ('mean', 'sum', 'none'), got '" + name + "'");
}

// The loss of per-sample (or per-element) losses: their mean or sum as a 0-d tensor, or themselves.
inline Tensor reduce(Tensor losses, Reduction reduction) {
    if (reduction == Reduction::none) return losses;
    double total = 0;
    for (float v : losses.data) total += v;
    if (reduction == Reduction::mean) total /= static_cast<double>(std::max<int64_t>(losses.numel(), 1));
    return Tensor(Shape{}, std::vector<float>{static_cast<float>(total)});
}

// dL/dloss_k for element k of the unreduced losses (count of them): the one upstream value (divided
// by count for 'mean'), or grad_output[k] for 'none'. grad_output must have the loss's shape.
struct Upstream {
    const Tensor& grad_output;
    Reduction reduction;
    int64_t count;
    float operator[](int64_t k) const {
        if (reduction == Reduction::none) return grad_output[k];
        return reduction == Reduction::mean ? grad_output[0] / static_cast<float>(count) : grad_output[0];
    }
};
inline Shape loss_shape(Reduction reduction, const Shape& unreduced) {
    return reduction == Reduction::none ? unreduced : Shape{};
}

struct CrossEntropyCache {
    Tensor probs;                 // backward needs softmax(logits) = exp(log_probs) ...
    std::vector<int64_t> target;  // ... and the targets
    Reduction reduction = Reduction::mean;
};

// Softmax cross-entropy, fused: loss_n = -log softmax(logits_n)[target_n]
//                                      = logsumexp(logits_n) - logits_n[target_n],
// with logsumexp computed as m + log sum_j exp(x_j - m), m = max_j x_j, so no exp overflows.
// Shapes: logits (N, C), target (N,) class indices in [0, C) -> () (mean, sum) or (N,) (none).
inline std::pair<Tensor, CrossEntropyCache> cross_entropy_forward(const Tensor& logits, const std::vector<int64_t>& target,
                                                                  Reduction reduction = Reduction::mean) {
    const int64_t N = logits.shape[0], C = logits.shape[1];
    CrossEntropyCache cache{.probs = Tensor(logits.shape), .target = target, .reduction = reduction};
    Tensor losses({N});
    for (int64_t n = 0; n < N; ++n) {
        const float* x = logits.ptr() + n * C;
        float m = x[0];
        for (int64_t c = 1; c < C; ++c) m = std::max(m, x[c]);
        float sum = 0.0f;
        for (int64_t c = 0; c < C; ++c) sum += std::exp(x[c] - m);
        const float log_sum = std::log(sum);
        for (int64_t c = 0; c < C; ++c) cache.probs[n * C + c] = std::exp(x[c] - m - log_sum);
        losses[n] = -(x[target[n]] - m - log_sum);  // -log_probs[n, target_n]
    }
    return {reduce(std::move(losses), reduction), std::move(cache)};
}

// dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean')
inline Tensor cross_entropy_backward(const Tensor& grad_output, const CrossEntropyCache& cache) {
    const int64_t N = cache.probs.shape[0], C = cache.probs.shape[1];
    check_grad_output("cross_entropy_backward", grad_output, loss_shape(cache.reduction, {N}));
    const Upstream upstream{grad_output, cache.reduction, N};
    Tensor grad = cache.probs;
    for (int64_t n = 0; n < N; ++n) {
        grad[n * C + cache.target[n]] -= 1.0f;
        const float g = upstream[n];
        for (int64_t c = 0; c < C; ++c) grad[n * C + c] *= g;
    }
    return grad;
}

struct NLLLossCache {
    std::vector<int64_t> target;  // backward needs only the targets ...
    Shape shape;                  // ... and the input's shape
    Reduction reduction = Reduction::mean;
};

// loss_n = -log_probs[n, target_n]   (log_probs e.g. from LogSoftmax)
// Shapes: log_probs (N, C), target (N,) class indices in [0, C) -> () (mean, sum) or (N,) (none).
inline std::pair<Tensor, NLLLossCache> nll_loss_forward(const Tensor& log_probs, const std::vector<int64_t>& target,
                                                        Reduction reduction = Reduction::mean) {
    const int64_t N = log_probs.shape[0], C = log_probs.shape[1];
    Tensor losses({N});
    for (int64_t n = 0; n < N; ++n) losses[n] = -log_probs[n * C + target[n]];
    return {reduce(std::move(losses), reduction), NLLLossCache{.target = target, .shape = log_probs.shape, .reduction = reduction}};
}

// dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean')
inline Tensor nll_loss_backward(const Tensor& grad_output, const NLLLossCache& cache) {
    const int64_t N = cache.shape[0], C = cache.shape[1];
    check_grad_output("nll_loss_backward", grad_output, loss_shape(cache.reduction, {N}));
    const Upstream upstream{grad_output, cache.reduction, N};
    Tensor grad(cache.shape);
    for (int64_t n = 0; n < N; ++n) grad[n * C + cache.target[n]] = -upstream[n];
    return grad;
}

struct MSELossCache {
    Tensor diff;  // backward needs only the difference
    Reduction reduction = Reduction::mean;
};

// loss = mean (or sum) over all elements of (input - target)^2; 'none' keeps the input's shape
inline std::pair<Tensor, MSELossCache> mse_loss_forward(const Tensor& input, const Tensor& target,
                                                        Reduction reduction = Reduction::mean) {
    MSELossCache cache{.diff = Tensor(input.shape), .reduction = reduction};
    Tensor squared(input.shape);
    for (int64_t i = 0; i < input.numel(); ++i) {
        cache.diff[i] = input[i] - target[i];
        squared[i] = cache.diff[i] * cache.diff[i];
    }
    return {reduce(std::move(squared), reduction), std::move(cache)};
}

// dL/dinput = 2 * (input - target) * dL/dloss   (/ number of elements for 'mean')
inline Tensor mse_loss_backward(const Tensor& grad_output, const MSELossCache& cache) {
    check_grad_output("mse_loss_backward", grad_output, loss_shape(cache.reduction, cache.diff.shape));
    const Upstream upstream{grad_output, cache.reduction, cache.diff.numel()};
    Tensor grad(cache.diff.shape);
    for (int64_t i = 0; i < grad.numel(); ++i) grad[i] = 2.0f * cache.diff[i] * upstream[i];
    return grad;
}

}  // namespace handgrad::functional
