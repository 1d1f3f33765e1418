// Losses (mirrors src/handgrad/functional/loss.py). Each forward returns the loss and a cache; each
// backward turns dL/dloss (1 by default) into dL/dinput.
#pragma once

#include "handgrad/tensor.hpp"

#include <cmath>
#include <string>

namespace handgrad::functional {

enum class Reduction { mean, sum };

struct CrossEntropyCache {
    Tensor probs;                 // backward needs softmax(logits) = exp(log_probs) ...
    std::vector<int64_t> target;  // ... and the targets
    Reduction reduction = Reduction::mean;
};

// Softmax cross-entropy, fused: loss_n = -log softmax(logits_n)[target_n]
//                                      = logsumexp(logits_n) - logits_n[target_n],
// with logsumexp computed as m + log sum_j exp(x_j - m), m = max_j x_j, so no exp overflows.
// Shapes: logits (N, C), target (N,) class indices in [0, C) -> the mean (or sum) over n.
inline std::pair<float, CrossEntropyCache> cross_entropy_forward(const Tensor& logits,
                                                                 const std::vector<int64_t>& target,
                                                                 Reduction reduction = Reduction::mean) {
    const int64_t N = logits.shape[0], C = logits.shape[1];
    CrossEntropyCache cache{.probs = Tensor(logits.shape), .target = target, .reduction = reduction};
    float total = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
        const float* x = logits.ptr() + n * C;
        float m = x[0];
        for (int64_t c = 1; c < C; ++c) m = std::max(m, x[c]);
        float sum = 0.0f;
        for (int64_t c = 0; c < C; ++c) sum += std::exp(x[c] - m);
        const float log_sum = std::log(sum);
        for (int64_t c = 0; c < C; ++c) cache.probs[n * C + c] = std::exp(x[c] - m - log_sum);
        total += -(x[target[n]] - m - log_sum);  // -log_probs[n, target_n]
    }
    return {reduction == Reduction::mean ? total / static_cast<float>(N) : total, std::move(cache)};
}

// dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss   (/ N for 'mean')
inline Tensor cross_entropy_backward(float grad_output, const CrossEntropyCache& cache) {
    const int64_t N = cache.probs.shape[0], C = cache.probs.shape[1];
    const float scale = cache.reduction == Reduction::mean ? grad_output / static_cast<float>(N) : grad_output;
    Tensor grad = cache.probs;
    for (int64_t n = 0; n < N; ++n) grad[n * C + cache.target[n]] -= 1.0f;
    for (float& g : grad.data) g *= scale;
    return grad;
}

struct MSELossCache {
    Tensor diff;  // backward needs only the difference
    Reduction reduction = Reduction::mean;
};

// loss = mean (or sum) over all elements of (input - target)^2
inline std::pair<float, MSELossCache> mse_loss_forward(const Tensor& input, const Tensor& target,
                                                       Reduction reduction = Reduction::mean) {
    MSELossCache cache{.diff = Tensor(input.shape), .reduction = reduction};
    float total = 0.0f;
    for (int64_t i = 0; i < input.numel(); ++i) {
        cache.diff[i] = input[i] - target[i];
        total += cache.diff[i] * cache.diff[i];
    }
    if (reduction == Reduction::mean) total /= static_cast<float>(input.numel());
    return {total, std::move(cache)};
}

// dL/dinput = 2 * (input - target) * dL/dloss   (/ number of elements for 'mean')
inline Tensor mse_loss_backward(float grad_output, const MSELossCache& cache) {
    const float g = cache.reduction == Reduction::mean ? grad_output / static_cast<float>(cache.diff.numel())
                                                       : grad_output;
    Tensor grad(cache.diff.shape);
    for (int64_t i = 0; i < grad.numel(); ++i) grad[i] = 2.0f * cache.diff[i] * g;
    return grad;
}

}  // namespace handgrad::functional
