// Batch normalisation over the channel axis (axis 1) of (N, C), (N, C, L) or (N, C, H, W)
// (mirrors src/handgrad/functional/normalization.py).
#pragma once

#include "handgrad/tensor.hpp"

#include <cmath>
#include <optional>

namespace handgrad::functional {

struct BatchNormCache {
    Tensor xhat;                  // backward needs the normalised input ...
    std::vector<float> invstd;    // ... 1/sqrt(var + eps) per channel ...
    std::optional<Tensor> weight;  // ... the scale (a copy; none without affine) ...
    bool training = true;          // ... and whether mean and var came from this batch
};

struct BatchNormGrads {
    Tensor grad_input, grad_weight, grad_bias;  // empty where not asked for
};

// x as (N, C, L): L = the product of the axes after the channels (1 for (N, C)).
inline int64_t per_channel_length(const Tensor& x) {
    int64_t length = 1;
    for (int d = 2; d < x.ndim(); ++d) length *= x.shape[d];
    return length;
}

// y = (x - mean) / sqrt(var + eps) * weight + bias, per channel c over every axis but 1.
// Training: mean and (biased) var of this batch; running_mean and running_var (when given) are
// updated in place, running = (1 - momentum) * running + momentum * batch, with the unbiased var
// (var * m / (m - 1), m values per channel), as PyTorch. Eval: the running statistics.
// Sums are accumulated in float64.
inline std::pair<Tensor, BatchNormCache> batch_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                                            Tensor* running_mean, Tensor* running_var, bool training,
                                                            double momentum = 0.1, double eps = 1e-5) {
    const int64_t N = x.shape[0], C = x.shape[1], L = per_channel_length(x), m = N * L;
    BatchNormCache cache{.xhat = Tensor(x.shape), .invstd = std::vector<float>(C), .training = training};
    if (weight) cache.weight = *weight;
    Tensor out(x.shape);
    for (int64_t c = 0; c < C; ++c) {
        double mean = 0, var = 0;
        if (training) {
            for (int64_t n = 0; n < N; ++n)
                for (int64_t l = 0; l < L; ++l) mean += x[(n * C + c) * L + l];
            mean /= static_cast<double>(m);
            for (int64_t n = 0; n < N; ++n)
                for (int64_t l = 0; l < L; ++l) {
                    const double d = x[(n * C + c) * L + l] - mean;
                    var += d * d;
                }
            var /= static_cast<double>(m);
            if (running_mean) {
                const auto keep = static_cast<float>(1 - momentum);
                (*running_mean)[c] = (*running_mean)[c] * keep + static_cast<float>(momentum * mean);
                (*running_var)[c] = (*running_var)[c] * keep +
                                    static_cast<float>(momentum * var * static_cast<double>(m) / static_cast<double>(m - 1));
            }
        } else {
            mean = (*running_mean)[c], var = (*running_var)[c];
        }
        const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps)), shift = static_cast<float>(mean);
        const float scale = weight ? (*weight)[c] : 1.0f, offset = bias ? (*bias)[c] : 0.0f;
        cache.invstd[c] = invstd;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t l = 0; l < L; ++l) {
                const int64_t i = (n * C + c) * L + l;
                cache.xhat[i] = (x[i] - shift) * invstd;
                out[i] = cache.xhat[i] * scale + offset;
            }
    }
    return {std::move(out), std::move(cache)};
}

// With G = dL/dy, m values per channel and sums over every axis but the channel:
//     grad_weight = sum(G * xhat)          grad_bias = sum(G)
//     dxhat       = G * weight
//     training:   grad_input = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
//     eval:       grad_input = dxhat * invstd          (mean and var are constants then)
inline BatchNormGrads batch_norm_backward(const Tensor& grad_output, const BatchNormCache& cache, NeedsGrad needs = {}) {
    check_grad_output("batch_norm_backward", grad_output, cache.xhat.shape);
    const Tensor& xhat = cache.xhat;
    const int64_t N = xhat.shape[0], C = xhat.shape[1], L = per_channel_length(xhat), m = N * L;
    const bool affine = cache.weight.has_value();
    BatchNormGrads g;
    if (affine && needs.weight) g.grad_weight = Tensor({C});
    if (affine && needs.bias) g.grad_bias = Tensor({C});
    if (needs.input) g.grad_input = Tensor(xhat.shape);
    for (int64_t c = 0; c < C; ++c) {
        const float scale = affine ? (*cache.weight)[c] : 1.0f;
        double sum_g = 0, sum_g_xhat = 0;  // sums of G and G * xhat; dxhat's are these times the scale
        for (int64_t n = 0; n < N; ++n)
            for (int64_t l = 0; l < L; ++l) {
                const int64_t i = (n * C + c) * L + l;
                sum_g += grad_output[i];
                sum_g_xhat += static_cast<double>(grad_output[i]) * xhat[i];
            }
        if (!g.grad_weight.data.empty()) g.grad_weight[c] = static_cast<float>(sum_g_xhat);
        if (!g.grad_bias.data.empty()) g.grad_bias[c] = static_cast<float>(sum_g);
        if (!needs.input) continue;
        const double invstd = cache.invstd[c], sum_dxhat = sum_g * scale, sum_dxhat_xhat = sum_g_xhat * scale;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t l = 0; l < L; ++l) {
                const int64_t i = (n * C + c) * L + l;
                const double dxhat = static_cast<double>(grad_output[i]) * scale;
                g.grad_input[i] = static_cast<float>(
                    cache.training ? invstd / static_cast<double>(m) *
                                         (static_cast<double>(m) * dxhat - sum_dxhat - xhat[i] * sum_dxhat_xhat)
                                   : dxhat * invstd);
            }
    }
    return g;
}

// -- layer normalisation over the trailing axes of each sample ------------------------------------
struct LayerNormCache {
    Tensor xhat;                   // backward needs the normalised input ...
    std::vector<float> invstd;     // ... 1/sqrt(var + eps) per sample (row) ...
    std::optional<Tensor> weight;  // ... the scale (a copy; none without elementwise_affine) ...
    bool has_bias = false;         // ... and whether there is a bias to give a gradient
    Shape normalized_shape;        // the parameters' shape
};

// x as (M, D): D = the product of the last `normalized` axes (normalized_shape), M rows before them.
inline std::pair<int64_t, int64_t> layer_norm_rows(const Shape& shape, size_t normalized) {
    int64_t D = 1;
    for (size_t d = shape.size() - normalized; d < shape.size(); ++d) D *= shape[d];
    return {D ? Tensor::count(shape) / D : 0, D};
}

// y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) var over the last
// `normalized` axes of each sample (sums in float64), in training and eval alike; weight and bias
// (each optional) have normalized_shape.
inline std::pair<Tensor, LayerNormCache> layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                                            size_t normalized, double eps = 1e-5) {
    const auto [M, D] = layer_norm_rows(x.shape, normalized);
    LayerNormCache cache{.xhat = Tensor(x.shape), .invstd = std::vector<float>(M), .has_bias = bias != nullptr,
                         .normalized_shape = Shape(x.shape.end() - static_cast<int64_t>(normalized), x.shape.end())};
    if (weight) cache.weight = *weight;
    Tensor out(x.shape);
    for (int64_t r = 0; r < M; ++r) {
        const float* row = x.ptr() + r * D;
        double mean = 0, var = 0;
        for (int64_t d = 0; d < D; ++d) mean += row[d];
        mean /= static_cast<double>(D);
        for (int64_t d = 0; d < D; ++d) var += (row[d] - mean) * (row[d] - mean);
        var /= static_cast<double>(D);
        const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps)), shift = static_cast<float>(mean);
        cache.invstd[r] = invstd;
        for (int64_t d = 0; d < D; ++d) {
            const int64_t i = r * D + d;
            cache.xhat[i] = (row[d] - shift) * invstd;
            out[i] = (weight ? cache.xhat[i] * (*weight)[d] : cache.xhat[i]) + (bias ? (*bias)[d] : 0.0f);
        }
    }
    return {std::move(out), std::move(cache)};
}

// With G = dL/dy, D values per row, sums over the normalised axes for grad_input and over the rows
// for the parameters:
//     grad_weight = sum(G * xhat)          grad_bias = sum(G)
//     dxhat       = G * weight             (G without a weight)
//     grad_input  = invstd / D * (D * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
inline BatchNormGrads layer_norm_backward(const Tensor& grad_output, const LayerNormCache& cache, NeedsGrad needs = {}) {
    check_grad_output("layer_norm_backward", grad_output, cache.xhat.shape);
    const Tensor& xhat = cache.xhat;
    const int64_t M = static_cast<int64_t>(cache.invstd.size()), D = M ? xhat.numel() / M : 0;
    const bool affine = cache.weight.has_value();
    BatchNormGrads g;
    std::vector<double> sum_g_xhat(affine && needs.weight ? D : 0), sum_g(cache.has_bias && needs.bias ? D : 0);
    if (needs.input) g.grad_input = Tensor(xhat.shape);
    for (int64_t r = 0; r < M; ++r) {
        double sum_dxhat = 0, sum_dxhat_xhat = 0;
        for (int64_t d = 0; d < D; ++d) {
            const int64_t i = r * D + d;
            if (!sum_g_xhat.empty()) sum_g_xhat[d] += static_cast<double>(grad_output[i]) * xhat[i];
            if (!sum_g.empty()) sum_g[d] += grad_output[i];
            const double dxhat = static_cast<double>(grad_output[i]) * (affine ? (*cache.weight)[d] : 1.0f);
            sum_dxhat += dxhat, sum_dxhat_xhat += dxhat * xhat[i];
        }
        if (!needs.input) continue;
        const double invstd = cache.invstd[r], m = static_cast<double>(D);
        for (int64_t d = 0; d < D; ++d) {
            const int64_t i = r * D + d;
            const double dxhat = static_cast<double>(grad_output[i]) * (affine ? (*cache.weight)[d] : 1.0f);
            g.grad_input[i] = static_cast<float>(invstd / m * (m * dxhat - sum_dxhat - xhat[i] * sum_dxhat_xhat));
        }
    }
    const auto as_tensor = [&](const std::vector<double>& sums) {
        Tensor t(cache.normalized_shape);
        for (int64_t d = 0; d < D; ++d) t[d] = static_cast<float>(sums[d]);
        return t;
    };
    if (!sum_g_xhat.empty()) g.grad_weight = as_tensor(sum_g_xhat);
    if (!sum_g.empty()) g.grad_bias = as_tensor(sum_g);
    return g;
}

}  // namespace handgrad::functional
