// Max and average pooling over kH x kW windows (NCHW), with stride and padding as PyTorch
// (mirrors src/handgrad/functional/pool.py). Output size per axis: (size + 2*padding - kernel) // stride + 1.
#pragma once

#include "handgrad/functional/conv.hpp"

#include <limits>

namespace handgrad::functional {

struct MaxPool2dCache {
    std::vector<int16_t> argmax;  // backward needs only where each maximum was (k = i*kW + j in its window)
    Shape x_shape, out_shape;
    Pair kernel_size{2, 2}, stride{2, 2}, padding{0, 0};
};

// y[n, c, ho, wo] = max over the window of x_padded (padding is -inf, so it never wins).
// The position kept is the first maximum in row-major window order, as PyTorch.
inline std::pair<Tensor, MaxPool2dCache> max_pool2d_forward(const Tensor& x, Pair kernel_size, Pair stride,
                                                            Pair padding = {0, 0}) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [kh, kw] = kernel_size;
    const int64_t Ho = conv_output_size(H, kh, stride[0], padding[0]);
    const int64_t Wo = conv_output_size(W, kw, stride[1], padding[1]);
    Tensor out({N, C, Ho, Wo});
    MaxPool2dCache cache{.argmax = std::vector<int16_t>(out.numel()), .x_shape = x.shape, .out_shape = out.shape,
                         .kernel_size = kernel_size, .stride = stride, .padding = padding};
    for (int64_t plane = 0; plane < N * C; ++plane) {
        const float* xp = x.ptr() + plane * H * W;
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                float best = -std::numeric_limits<float>::infinity();
                int16_t best_k = 0;
                bool first = true;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = stride[0] * ho + i - padding[0], w = stride[1] * wo + j - padding[1];
                        const float v = (h >= 0 && h < H && w >= 0 && w < W) ? xp[h * W + w]
                                                                             : -std::numeric_limits<float>::infinity();
                        if (first || v > best) best = v, best_k = static_cast<int16_t>(i * kw + j), first = false;
                    }
                const int64_t o = (plane * Ho + ho) * Wo + wo;
                out[o] = best;
                cache.argmax[o] = best_k;
            }
    }
    return {std::move(out), std::move(cache)};
}

// dL/dx_p = sum over windows containing p of grad_output[window] * [p is that window's argmax].
// Each window sends its whole gradient to one position; overlapping windows add up.
inline Tensor max_pool2d_backward(const Tensor& grad_output, const MaxPool2dCache& cache) {
    check_grad_output("max_pool2d_backward", grad_output, cache.out_shape);
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t Ho = grad_output.shape[2], Wo = grad_output.shape[3], kw = cache.kernel_size[1];
    Tensor grad_input(cache.x_shape);
    for (int64_t plane = 0; plane < N * C; ++plane)
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                const int64_t o = (plane * Ho + ho) * Wo + wo, k = cache.argmax[o];
                const int64_t h = cache.stride[0] * ho + k / kw - cache.padding[0];
                const int64_t w = cache.stride[1] * wo + k % kw - cache.padding[1];
                if (h >= 0 && h < H && w >= 0 && w < W) grad_input[(plane * H + h) * W + w] += grad_output[o];
            }
    return grad_input;
}

struct AvgPool2dCache {
    Shape x_shape, out_shape;  // backward needs only the shapes: every window entry gets the same share
    Pair kernel_size{2, 2}, stride{2, 2}, padding{0, 0};
};

// y[n, c, ho, wo] = sum over the window of x_padded / (kH*kW); zero padding counts in the divisor
// (PyTorch's default count_include_pad=True).
inline std::pair<Tensor, AvgPool2dCache> avg_pool2d_forward(const Tensor& x, Pair kernel_size, Pair stride,
                                                            Pair padding = {0, 0}) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [kh, kw] = kernel_size;
    const int64_t Ho = conv_output_size(H, kh, stride[0], padding[0]);
    const int64_t Wo = conv_output_size(W, kw, stride[1], padding[1]);
    Tensor out({N, C, Ho, Wo});
    const float divisor = static_cast<float>(kh * kw);
    for (int64_t plane = 0; plane < N * C; ++plane)
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                float sum = 0.0f;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = stride[0] * ho + i - padding[0], w = stride[1] * wo + j - padding[1];
                        if (h >= 0 && h < H && w >= 0 && w < W) sum += x[(plane * H + h) * W + w];
                    }
                out[(plane * Ho + ho) * Wo + wo] = sum / divisor;
            }
    Shape out_shape = out.shape;
    return {std::move(out), AvgPool2dCache{.x_shape = x.shape, .out_shape = std::move(out_shape),
                                            .kernel_size = kernel_size, .stride = stride, .padding = padding}};
}

// dL/dx_p = sum over windows containing p of grad_output[window] / (kH*kW).
inline Tensor avg_pool2d_backward(const Tensor& grad_output, const AvgPool2dCache& cache) {
    check_grad_output("avg_pool2d_backward", grad_output, cache.out_shape);
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t Ho = grad_output.shape[2], Wo = grad_output.shape[3];
    const auto [kh, kw] = cache.kernel_size;
    const float divisor = static_cast<float>(kh * kw);
    Tensor grad_input(cache.x_shape);
    for (int64_t plane = 0; plane < N * C; ++plane)
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                const float share = grad_output[(plane * Ho + ho) * Wo + wo] / divisor;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = cache.stride[0] * ho + i - cache.padding[0];
                        const int64_t w = cache.stride[1] * wo + j - cache.padding[1];
                        if (h >= 0 && h < H && w >= 0 && w < W) grad_input[(plane * H + h) * W + w] += share;
                    }
            }
    return grad_input;
}

}  // namespace handgrad::functional
