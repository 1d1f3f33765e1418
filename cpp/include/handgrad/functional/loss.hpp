// Losses (mirrors src/handgrad/functional/loss.py). Each forward returns the loss and a cache: a 0-d
// tensor for 'mean' and 'sum', the per-sample losses for 'none'. Each backward turns dL/dloss (of
// the loss's shape) into dL/dinput.
#pragma once

#include "handgrad/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
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

// -- the class losses' options ----------------------------------------------------------------------
// As torch's: class weights w (C,), a target index whose samples count 0, label smoothing eps.
struct ClassLossOptions {
    std::optional<Tensor> weight;  // (C,); none: every class weighs 1
    int64_t ignore_index = -100;
    float label_smoothing = 0.0f;
};

// Where element i of an input (N, C, d1, ...) or (C,) sits among its (M, C) rows, one per sample
// with the class axis last (inner = d1 * d2 * ...): row n * inner + s, column c.
inline int64_t class_row_position(int64_t i, int64_t C, int64_t inner) {
    const int64_t s = i % inner, c = i / inner % C, n = i / inner / C;
    return (n * inner + s) * C + c;
}
inline int64_t class_inner_size(const Shape& shape) {
    return shape.size() > 2 ? Tensor::count(Shape(shape.begin() + 2, shape.end())) : 1;
}
// The input as its (M, C) rows.
inline Tensor class_rows(const Tensor& x) {
    const int64_t C = x.ndim() == 1 ? x.shape[0] : x.shape[1], inner = class_inner_size(x.shape);
    Tensor rows({C ? x.numel() / C : 0, C});
    for (int64_t i = 0; i < x.numel(); ++i) rows[class_row_position(i, C, inner)] = x[i];
    return rows;
}
// The inverse of class_rows: (M, C) back to the input's shape.
inline Tensor class_unrows(const Tensor& rows, const Shape& shape) {
    Tensor x(shape);
    const int64_t C = rows.shape[1], inner = class_inner_size(shape);
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = rows[class_row_position(i, C, inner)];
    return x;
}
// The per-sample losses' shape: (N, d1, ...), or () for an unbatched (C,) input.
inline Shape class_sample_shape(const Shape& shape) {
    if (shape.size() <= 1) return {};
    Shape out{shape[0]};
    out.insert(out.end(), shape.begin() + 2, shape.end());
    return out;
}

// q (M, C), the weight each log-probability gets: loss_n = -sum_c q[n, c] log p_n[c]. Class indices
// t_n: q[n, c] = (1 - eps) w[t_n] [c == t_n] + eps / C * w_c, and 0 where t_n is ignore_index.
// Probabilities (M, C): q[n, c] = w_c ((1 - eps) t_n[c] + eps / C). Also the divisor of 'mean', as
// torch: sum_n w[t_n] over the samples not ignored (their count without weights; M for probabilities).
inline std::pair<Tensor, float> class_mass(const std::vector<int64_t>& target, const Tensor* probabilities, int64_t C,
                                           const ClassLossOptions& options) {
    const float eps = options.label_smoothing, share = eps / static_cast<float>(C);
    const auto w = [&](int64_t c) { return options.weight ? (*options.weight)[c] : 1.0f; };
    const int64_t M = probabilities ? probabilities->shape[0] : static_cast<int64_t>(target.size());
    Tensor q({M, C});
    if (probabilities) {
        for (int64_t i = 0; i < q.numel(); ++i) q[i] = w(i % C) * ((1 - eps) * (*probabilities)[i] + share);
        return {std::move(q), static_cast<float>(M)};
    }
    float divisor = 0.0f;
    for (int64_t n = 0; n < M; ++n) {
        if (target[n] == options.ignore_index) continue;
        q[n * C + target[n]] = (1 - eps) * w(target[n]);
        if (eps != 0)
            for (int64_t c = 0; c < C; ++c) q[n * C + c] += share * w(c);
        divisor += w(target[n]);
    }
    return {std::move(q), divisor};
}

// The loss of per-sample losses over their divisor: sum / divisor for 'mean' (NaN with no sample
// left, as torch), the sum, or themselves.
inline Tensor reduce_by(Tensor losses, Reduction reduction, float divisor) {
    if (reduction != Reduction::mean) return reduce(std::move(losses), reduction);
    float total = 0.0f;
    for (float v : losses.data) total += v;
    return Tensor(Shape{}, std::vector<float>{total / divisor});
}

struct CrossEntropyCache {
    Tensor probs;                 // backward needs softmax(logits) = exp(log_probs) ...
    std::vector<int64_t> target;  // ... and the targets
    Reduction reduction = Reduction::mean;
    // with options, probability targets or other input shapes (the rows of class_rows): q and the
    // divisor of 'mean' in place of the targets, and the input's shape
    Tensor q;
    float divisor = 0.0f;
    Shape shape;
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

// The general form, as the Python's: loss_n = -sum_c q[n, c] log softmax(x_n)[c] over the rows of
// logits (N, C, d1, ...) or (C,), q from class_mass (class weights, ignore_index, label smoothing;
// class indices, one per row, or probabilities of the logits' shape). 'mean' divides the sum by
// class_mass's divisor. -> () (mean, sum) or (N, d1, ...) (none).
inline std::pair<Tensor, CrossEntropyCache> cross_entropy_forward(const Tensor& logits, const std::vector<int64_t>& target,
                                                                  const Tensor* probabilities, Reduction reduction,
                                                                  const ClassLossOptions& options) {
    const Tensor rows = class_rows(logits);
    const int64_t M = rows.shape[0], C = rows.shape[1];
    const Tensor probability_rows = probabilities ? class_rows(*probabilities) : Tensor();
    auto [q, divisor] = class_mass(target, probabilities ? &probability_rows : nullptr, C, options);
    CrossEntropyCache cache{.probs = Tensor(rows.shape), .reduction = reduction, .q = std::move(q), .divisor = divisor,
                            .shape = logits.shape};
    Tensor losses(class_sample_shape(logits.shape));
    for (int64_t n = 0; n < M; ++n) {
        const float* x = rows.ptr() + n * C;
        const float m = *std::max_element(x, x + C);
        float sum = 0.0f;
        for (int64_t c = 0; c < C; ++c) sum += std::exp(x[c] - m);
        const float log_sum = std::log(sum);
        float loss = 0.0f;
        for (int64_t c = 0; c < C; ++c) {
            const float log_prob = x[c] - m - log_sum, mass = cache.q[n * C + c];
            cache.probs[n * C + c] = std::exp(log_prob);
            if (mass != 0) loss -= mass * log_prob;  // 0 * -inf: 0
        }
        losses[n] = loss;
    }
    return {reduce_by(std::move(losses), reduction, divisor), std::move(cache)};
}

// dL/dx_n = (softmax(x_n) * sum_c q[n, c] - q_n) * dL/dloss_n, / the divisor for 'mean' (all 0 when
// no sample is left); back in the input's shape.
inline Tensor class_loss_backward(const Tensor& grad_output, const Tensor* probs, const Tensor& q, Reduction reduction,
                                  float divisor, const Shape& shape) {
    const int64_t M = q.shape[0], C = q.shape[1];
    Tensor grad(q.shape);
    if (divisor == 0 && reduction == Reduction::mean) return class_unrows(grad, shape);
    for (int64_t n = 0; n < M; ++n) {
        const float g = reduction == Reduction::none ? grad_output[n]
                        : reduction == Reduction::mean ? grad_output[0] / divisor
                                                       : grad_output[0];
        float mass = 0.0f;
        for (int64_t c = 0; c < C; ++c) mass += q[n * C + c];
        for (int64_t c = 0; c < C; ++c)
            grad[n * C + c] = ((probs ? (*probs)[n * C + c] * mass : 0.0f) - q[n * C + c]) * g;
    }
    return class_unrows(grad, shape);
}

// dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean'); with
// options, the general form's class_loss_backward.
inline Tensor cross_entropy_backward(const Tensor& grad_output, const CrossEntropyCache& cache) {
    if (!cache.q.data.empty()) {
        check_grad_output("cross_entropy_backward", grad_output, loss_shape(cache.reduction, class_sample_shape(cache.shape)));
        return class_loss_backward(grad_output, &cache.probs, cache.q, cache.reduction, cache.divisor, cache.shape);
    }
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
    Tensor q;  // the general form's: class_mass's q and divisor in place of the targets
    float divisor = 0.0f;
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

// The general form, as the Python's: loss_n = -w[t_n] log_probs[n, t_n] over the rows of log_probs
// (N, C, d1, ...) or (C,), 0 where t_n is ignore_index; 'mean' divides by sum_n w[t_n] over the rest.
inline std::pair<Tensor, NLLLossCache> nll_loss_forward(const Tensor& log_probs, const std::vector<int64_t>& target,
                                                        Reduction reduction, const ClassLossOptions& options) {
    const Tensor rows = class_rows(log_probs);
    const int64_t M = rows.shape[0], C = rows.shape[1];
    auto [q, divisor] = class_mass(target, nullptr, C, {.weight = options.weight, .ignore_index = options.ignore_index});
    Tensor losses(class_sample_shape(log_probs.shape));
    for (int64_t n = 0; n < M; ++n) {
        float loss = 0.0f;
        for (int64_t c = 0; c < C; ++c) loss -= q[n * C + c] * rows[n * C + c];
        losses[n] = loss;
    }
    return {reduce_by(std::move(losses), reduction, divisor),
            NLLLossCache{.shape = log_probs.shape, .reduction = reduction, .q = std::move(q), .divisor = divisor}};
}

// dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean'); with options,
// -w[t_n] [c == t_n] * dL/dloss_n (/ the divisor for 'mean'; 0 on ignored samples).
inline Tensor nll_loss_backward(const Tensor& grad_output, const NLLLossCache& cache) {
    if (!cache.q.data.empty()) {
        check_grad_output("nll_loss_backward", grad_output, loss_shape(cache.reduction, class_sample_shape(cache.shape)));
        return class_loss_backward(grad_output, nullptr, cache.q, cache.reduction, cache.divisor, cache.shape);
    }
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
