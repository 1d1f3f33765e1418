// 2-D convolution through per-sample columns: unfold every receptive field into a column, then one
// matrix product per sample (mirrors the fast path of src/handgrad/functional/conv.py).
//
// Layout (NCHW, as PyTorch): x (N, C, H, W), weight (O, C, kH, kW), bias (O,), y (N, O, Ho, Wo) with
//     Ho = (H + 2*pH - kH) // sH + 1,   Wo = (W + 2*pW - kW) // sW + 1.
#pragma once

#include "handgrad/tensor.hpp"

#include <array>

namespace handgrad::functional {

using Pair = std::array<int64_t, 2>;  // (h, w), as PyTorch's kernel_size / stride / padding

inline int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t padding) {
    // floor division as Python's //, also when the padded input is smaller than the kernel
    const int64_t span = size + 2 * padding - kernel;
    return (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
}

// (C, H, W) of one sample -> cols (C*kH*kW, Ho*Wo) with
//     cols[(c, i, j), (ho, wo)] = x_padded[c, sH*ho + i, sW*wo + j]   (0 outside the input).
// Column p of cols is the receptive field of output pixel p.
inline void unfold(const float* x, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* cols) {
    const int64_t Ho = conv_output_size(H, k[0], s[0], p[0]), Wo = conv_output_size(W, k[1], s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                float* row = cols + ((c * k[0] + i) * k[1] + j) * Ho * Wo;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const int64_t h = s[0] * ho + i - p[0];
                    for (int64_t wo = 0; wo < Wo; ++wo) {
                        const int64_t w = s[1] * wo + j - p[1];
                        row[ho * Wo + wo] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(c * H + h) * W + w] : 0.0f;
                    }
                }
            }
}

// The adjoint of unfold: add cols (C*kH*kW, Ho*Wo) back onto the pixels each entry was read from.
// A pixel inside several windows (kernel > stride) receives the sum. grad_x must start at zero.
inline void fold(const float* cols, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* grad_x) {
    const int64_t Ho = conv_output_size(H, k[0], s[0], p[0]), Wo = conv_output_size(W, k[1], s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                const float* row = cols + ((c * k[0] + i) * k[1] + j) * Ho * Wo;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const int64_t h = s[0] * ho + i - p[0];
                    if (h < 0 || h >= H) continue;
                    for (int64_t wo = 0; wo < Wo; ++wo) {
                        const int64_t w = s[1] * wo + j - p[1];
                        if (w >= 0 && w < W) grad_x[(c * H + h) * W + w] += row[ho * Wo + wo];
                    }
                }
            }
}

struct Conv2dCache {
    Tensor cols;    // (N, C*kH*kW, Ho*Wo): grad_weight = sum_n G[n] @ cols[n].T
    Tensor weight;  // grad_cols = W.T @ G[n]: a copy, so the cache never outlives what it reads
    Shape x_shape, out_shape;  // out_shape (N, O, Ho, Wo): what grad_output must be
    Pair stride{1, 1}, padding{0, 0};
    bool has_bias = false;
};

struct Conv2dGrads {
    Tensor grad_input, grad_weight, grad_bias;  // empty where not asked for
};

// y[n, o] = sum_{c, i, j} weight[o, c, i, j] * x_padded[n, c, sH*ho + i, sW*wo + j] + bias[o]
// Per sample, one matrix product: y[n] = W @ cols[n] + bias, with W = weight.reshape(O, C*kH*kW);
// y[n] (O, Ho*Wo) is already NCHW.
inline std::pair<Tensor, Conv2dCache> conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                     Pair stride = {1, 1}, Pair padding = {0, 0}) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t O = weight.shape[0];
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t Ho = conv_output_size(H, k[0], stride[0], padding[0]);
    const int64_t Wo = conv_output_size(W, k[1], stride[1], padding[1]);
    const int64_t K = C * k[0] * k[1], P = Ho * Wo;
    Tensor cols({N, K, P});
    Tensor out({N, O, Ho, Wo});
    auto Wm = as_matrix(weight, O, K);
    for (int64_t n = 0; n < N; ++n) {
        unfold(x.ptr() + n * C * H * W, C, H, W, k, stride, padding, cols.ptr() + n * K * P);
        auto y = as_matrix(out.ptr() + n * O * P, O, P);
        y.noalias() = Wm * as_matrix(cols.ptr() + n * K * P, K, P);
        if (bias) y.colwise() += ConstVectorMap(bias->ptr(), O);
    }
    return {std::move(out), Conv2dCache{.cols = std::move(cols), .weight = weight, .x_shape = x.shape,
                                         .out_shape = {N, O, Ho, Wo}, .stride = stride, .padding = padding,
                                         .has_bias = bias != nullptr}};
}

// With G[n] = dL/dy[n] as a matrix (O, Ho*Wo), the gradients of y[n] = W @ cols[n] + bias are
//     grad_weight = sum_n G[n] @ cols[n].T      -> reshaped to (O, C, kH, kW)
//     grad_bias   = sum_n G[n].sum(columns)     (O,)
//     grad_input  = fold(W.T @ G[n])            (N, C, H, W)
inline Conv2dGrads conv2d_backward(const Tensor& grad_output, const Conv2dCache& cache, NeedsGrad needs = {}) {
    check_grad_output("conv2d_backward", grad_output, cache.out_shape);
    const Tensor& weight = cache.weight;
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t O = weight.shape[0];
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t K = C * k[0] * k[1], P = grad_output.shape[2] * grad_output.shape[3];
    Conv2dGrads g;
    if (needs.weight) g.grad_weight = Tensor(weight.shape);
    if (cache.has_bias && needs.bias) g.grad_bias = Tensor({O});
    if (needs.input) g.grad_input = Tensor(cache.x_shape);
    Matrix grad_cols(K, P);
    for (int64_t n = 0; n < N; ++n) {
        auto G = as_matrix(grad_output.ptr() + n * O * P, O, P);
        if (needs.weight)
            as_matrix(g.grad_weight, O, K).noalias() += G * as_matrix(cache.cols.ptr() + n * K * P, K, P).transpose();
        if (cache.has_bias && needs.bias) VectorMap(g.grad_bias.ptr(), O) += G.rowwise().sum();
        if (needs.input) {
            grad_cols.noalias() = as_matrix(weight, O, K).transpose() * G;
            fold(grad_cols.data(), C, H, W, k, cache.stride, cache.padding, g.grad_input.ptr() + n * C * H * W);
        }
    }
    return g;
}

}  // namespace handgrad::functional
