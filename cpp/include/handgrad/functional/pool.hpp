// Max and average pooling over kH x kW windows (NCHW), with stride, padding, dilation (max) and
// ceil_mode as PyTorch (mirrors src/handgrad/functional/pool.py). Output size per axis, with the
// window's span d*(k - 1) + 1 (pool_output_size):
//     floor((size + 2*padding - span) / stride) + 1      (ceil_mode=false)
//     ceil((size + 2*padding - span) / stride) + 1       (ceil_mode=true), less one where the last
//                                                         window would start past the input and its
//                                                         left padding (torch's rule)
#pragma once

#include "handgrad/functional/conv.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace handgrad::functional {

// Outputs along one axis, as torch's pooling_output_shape.
inline int64_t pool_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation = 1,
                                bool ceil_mode = false) {
    const int64_t room = size + 2 * padding - dilated_size(kernel, dilation);
    int64_t out = conv_output_size(room + (ceil_mode ? stride - 1 : 0), 0, stride, 0);  // floor division, as //
    if (ceil_mode && (out - 1) * stride >= size + padding) --out;  // the last window must start inside
    return out;
}

struct MaxPool2dCache {
    std::vector<int16_t> argmax;  // backward needs only where each maximum was (k = i*kW + j in its window)
    Shape x_shape, out_shape;
    Pair kernel_size{2, 2}, stride{2, 2}, padding{0, 0};
    Pair dilation{1, 1};  // tap (i, j) of a window reads pixel (dH*i, dW*j) of it
};

// y[n, c, ho, wo] = max over the window's taps x_padded[n, c, sH*ho + dH*i, sW*wo + dW*j] (padding,
// and with ceil_mode what lies past it, is -inf, so it never wins). The position kept is the first
// maximum in row-major window order, as PyTorch; a window holding NaN gives NaN at its last NaN, and
// one of -inf its first pixel inside x (as the Python core).
inline std::pair<Tensor, MaxPool2dCache> max_pool2d_forward(const Tensor& x, Pair kernel_size, Pair stride,
                                                            Pair padding = {0, 0}, Pair dilation = {1, 1},
                                                            bool ceil_mode = false) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [kh, kw] = kernel_size;
    const int64_t Ho = pool_output_size(H, kh, stride[0], padding[0], dilation[0], ceil_mode);
    const int64_t Wo = pool_output_size(W, kw, stride[1], padding[1], dilation[1], ceil_mode);
    Tensor out({N, C, Ho, Wo});
    MaxPool2dCache cache{.argmax = std::vector<int16_t>(out.numel()), .x_shape = x.shape, .out_shape = out.shape,
                         .kernel_size = kernel_size, .stride = stride, .padding = padding, .dilation = dilation};
    for (int64_t plane = 0; plane < N * C; ++plane) {
        const float* xp = x.ptr() + plane * H * W;
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                float best = -std::numeric_limits<float>::infinity();
                int16_t best_k = 0;
                bool first = true;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = stride[0] * ho + dilation[0] * i - padding[0];
                        const int64_t w = stride[1] * wo + dilation[1] * j - padding[1];
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;  // padding: -inf, never the maximum
                        const float v = xp[h * W + w];
                        if (first || v > best || std::isnan(v))  // a NaN wins, the last one, as PyTorch's scan
                            best = v, best_k = static_cast<int16_t>(i * kw + j), first = false;
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
                const int64_t h = cache.stride[0] * ho + cache.dilation[0] * (k / kw) - cache.padding[0];
                const int64_t w = cache.stride[1] * wo + cache.dilation[1] * (k % kw) - cache.padding[1];
                if (h >= 0 && h < H && w >= 0 && w < W) grad_input[(plane * H + h) * W + w] += grad_output[o];
            }
    return grad_input;
}

// Where each maximum was, as MaxPool2d(return_indices=True) gives it: the flat position h*W + w of
// the window's maximum in its input plane, one per output element (the output's shape).
struct PoolIndices {
    Shape shape;
    std::vector<int64_t> values;
};

inline PoolIndices max_pool2d_indices(const MaxPool2dCache& cache) {
    const int64_t H = cache.x_shape[2], W = cache.x_shape[3], Ho = cache.out_shape[2], Wo = cache.out_shape[3];
    const int64_t kw = cache.kernel_size[1];
    PoolIndices indices{.shape = cache.out_shape, .values = std::vector<int64_t>(cache.argmax.size())};
    for (size_t o = 0; o < cache.argmax.size(); ++o) {
        const int64_t k = cache.argmax[o], ho = static_cast<int64_t>(o) / Wo % Ho, wo = static_cast<int64_t>(o) % Wo;
        const int64_t h = cache.stride[0] * ho + cache.dilation[0] * (k / kw) - cache.padding[0];
        const int64_t w = cache.stride[1] * wo + cache.dilation[1] * (k % kw) - cache.padding[1];
        // every window holds a pixel of x, where its maximum is: the clamps only guard the memory
        indices.values[o] = std::clamp<int64_t>(h, 0, H - 1) * W + std::clamp<int64_t>(w, 0, W - 1);
    }
    return indices;
}

// -- max unpooling ---------------------------------------------------------------------------------
// (oH, oW) of MaxUnpool2d: (size - 1)*stride - 2*padding + kernel_size per axis, unless output_size
// gives (oH, oW) (or the whole output shape), which must lie strictly within one stride of that, as torch.
inline Pair unpool_output_size(const std::string& where, const Shape& x_shape, Pair kernel_size, Pair stride,
                               Pair padding, const std::vector<int64_t>& output_size = {}) {
    const int64_t n = static_cast<int64_t>(x_shape.size());
    Pair size;
    for (int a = 0; a < 2; ++a) size[a] = (x_shape[n - 2 + a] - 1) * stride[a] - 2 * padding[a] + kernel_size[a];
    if (output_size.empty()) return size;
    if (output_size.size() != 2 && static_cast<int64_t>(output_size.size()) != n)
        throw HandgradError(where, "expected output_size (oH, oW) or of " + std::to_string(n) + " sizes, got " +
                                       std::to_string(output_size.size()) + " sizes");
    const Pair given{output_size[output_size.size() - 2], output_size.back()};
    const char* axes[2] = {"height", "width"};
    for (int a = 0; a < 2; ++a)
        if (!(size[a] - stride[a] < given[a] && given[a] < size[a] + stride[a]))
            throw HandgradError(where, "output_size (" + std::to_string(given[0]) + ", " + std::to_string(given[1]) +
                                           "): the " + axes[a] + " must lie strictly between " +
                                           std::to_string(size[a] - stride[a]) + " and " + std::to_string(size[a] + stride[a]));
    return given;
}

struct MaxUnpool2dCache {
    std::vector<int64_t> indices;  // backward reads the gradient back at the same positions
    Shape x_shape, out_shape;
};

// y = zeros (N, C, oH, oW), then y[n, c].flat[indices[n, c, k]] = x[n, c].flat[k] for every k in turn
// (an index met twice keeps the later value, as PyTorch's loop). indices: x's shape, each in [0, oH*oW).
inline std::pair<Tensor, MaxUnpool2dCache> max_unpool2d_forward(const Tensor& x, const std::vector<int64_t>& indices,
                                                                Pair output_size) {
    const int64_t planes = x.shape[0] * x.shape[1], per_plane = x.shape[2] * x.shape[3];
    const int64_t out_plane = output_size[0] * output_size[1];
    Tensor out({x.shape[0], x.shape[1], output_size[0], output_size[1]});
    for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t k = 0; k < per_plane; ++k)
            out[plane * out_plane + indices[plane * per_plane + k]] = x[plane * per_plane + k];
    Shape out_shape = out.shape;
    return {std::move(out), MaxUnpool2dCache{.indices = indices, .x_shape = x.shape, .out_shape = std::move(out_shape)}};
}

// grad_input[n, c].flat[k] = grad_output[n, c].flat[indices[n, c, k]]: a gather through the indices.
inline Tensor max_unpool2d_backward(const Tensor& grad_output, const MaxUnpool2dCache& cache) {
    check_grad_output("max_unpool2d_backward", grad_output, cache.out_shape);
    const int64_t per_plane = cache.x_shape[2] * cache.x_shape[3], out_plane = cache.out_shape[2] * cache.out_shape[3];
    Tensor grad_input(cache.x_shape);
    for (int64_t i = 0; i < grad_input.numel(); ++i)
        grad_input[i] = grad_output[i / per_plane * out_plane + cache.indices[i]];
    return grad_input;
}

struct AvgPool2dCache {
    Shape x_shape, out_shape;  // backward needs only the shapes and the divisors: every window entry gets the same share
    Pair kernel_size{2, 2}, stride{2, 2}, padding{0, 0};
    bool count_include_pad = true;
    int64_t divisor_override = 0;  // 0: none

    // Window (ho, wo)'s divisor, as torch: divisor_override; else the window's pixels inside x and
    // its padding (count_include_pad; with ceil_mode not past the padding), or inside x alone.
    float divisor(int64_t ho, int64_t wo) const {
        if (divisor_override) return static_cast<float>(divisor_override);
        const auto count = [&](int a, int64_t o) {
            const int64_t size = x_shape[2 + a], start = o * stride[a] - padding[a];
            const int64_t end = std::min(start + kernel_size[a], size + padding[a]);
            return count_include_pad ? end - start : std::min(end, size) - std::max<int64_t>(start, 0);
        };
        return static_cast<float>(count(0, ho) * count(1, wo));
    }
};

// y[n, c, ho, wo] = sum over the window of x_padded / divisor(ho, wo): kH*kW by default (zero padding
// counts, PyTorch's count_include_pad=True), the window's pixels inside x with count_include_pad=false,
// or divisor_override (nonzero; 0 means none).
inline std::pair<Tensor, AvgPool2dCache> avg_pool2d_forward(const Tensor& x, Pair kernel_size, Pair stride,
                                                            Pair padding = {0, 0}, bool ceil_mode = false,
                                                            bool count_include_pad = true, int64_t divisor_override = 0) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [kh, kw] = kernel_size;
    const int64_t Ho = pool_output_size(H, kh, stride[0], padding[0], 1, ceil_mode);
    const int64_t Wo = pool_output_size(W, kw, stride[1], padding[1], 1, ceil_mode);
    Tensor out({N, C, Ho, Wo});
    AvgPool2dCache cache{.x_shape = x.shape, .out_shape = out.shape, .kernel_size = kernel_size, .stride = stride,
                         .padding = padding, .count_include_pad = count_include_pad,
                         .divisor_override = divisor_override};
    for (int64_t plane = 0; plane < N * C; ++plane)
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                float sum = 0.0f;
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = stride[0] * ho + i - padding[0], w = stride[1] * wo + j - padding[1];
                        if (h >= 0 && h < H && w >= 0 && w < W) sum += x[(plane * H + h) * W + w];
                    }
                out[(plane * Ho + ho) * Wo + wo] = sum / cache.divisor(ho, wo);
            }
    return {std::move(out), std::move(cache)};
}

// dL/dx_p = sum over windows containing p of grad_output[window] / divisor[window].
inline Tensor avg_pool2d_backward(const Tensor& grad_output, const AvgPool2dCache& cache) {
    check_grad_output("avg_pool2d_backward", grad_output, cache.out_shape);
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t Ho = grad_output.shape[2], Wo = grad_output.shape[3];
    const auto [kh, kw] = cache.kernel_size;
    Tensor grad_input(cache.x_shape);
    for (int64_t plane = 0; plane < N * C; ++plane)
        for (int64_t ho = 0; ho < Ho; ++ho)
            for (int64_t wo = 0; wo < Wo; ++wo) {
                const float share = grad_output[(plane * Ho + ho) * Wo + wo] / cache.divisor(ho, wo);
                for (int64_t i = 0; i < kh; ++i)
                    for (int64_t j = 0; j < kw; ++j) {
                        const int64_t h = cache.stride[0] * ho + i - cache.padding[0];
                        const int64_t w = cache.stride[1] * wo + j - cache.padding[1];
                        if (h >= 0 && h < H && w >= 0 && w < W) grad_input[(plane * H + h) * W + w] += share;
                    }
            }
    return grad_input;
}

// -- adaptive average pooling ----------------------------------------------------------------------
struct AdaptiveAvgPool2dCache {
    Shape x_shape, out_shape;  // backward needs only the shapes: the windows follow from them
};

// Window i of `out` along an axis of `size`: [floor(i*size/out), ceil((i+1)*size/out)).
inline std::pair<int64_t, int64_t> adaptive_window(int64_t i, int64_t size, int64_t out) {
    return {i * size / out, ((i + 1) * size + out - 1) / out};
}

// y[n, c, i, j] = mean of x[n, c, hs(i):he(i), ws(j):we(j)], hs(i) = floor(i*H/oH),
// he(i) = ceil((i+1)*H/oH), the same along W: any (H, W) to (oH, oW).
inline std::pair<Tensor, AdaptiveAvgPool2dCache> adaptive_avg_pool2d_forward(const Tensor& x, Pair output_size) {
    const int64_t planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [Ho, Wo] = output_size;
    Tensor out({x.shape[0], x.shape[1], Ho, Wo});
    for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t i = 0; i < Ho; ++i) {
            const auto [h0, h1] = adaptive_window(i, H, Ho);
            for (int64_t j = 0; j < Wo; ++j) {
                const auto [w0, w1] = adaptive_window(j, W, Wo);
                double sum = 0;
                for (int64_t h = h0; h < h1; ++h)
                    for (int64_t w = w0; w < w1; ++w) sum += x[(plane * H + h) * W + w];
                out[(plane * Ho + i) * Wo + j] = static_cast<float>(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
            }
        }
    Shape out_shape = out.shape;
    return {std::move(out), AdaptiveAvgPool2dCache{.x_shape = x.shape, .out_shape = std::move(out_shape)}};
}

// dL/dx spreads each G[i, j] evenly over its window: dL/dx[h, w] = sum over windows holding (h, w)
// of G / the window's size.
inline Tensor adaptive_avg_pool2d_backward(const Tensor& grad_output, const AdaptiveAvgPool2dCache& cache) {
    check_grad_output("adaptive_avg_pool2d_backward", grad_output, cache.out_shape);
    const int64_t planes = cache.x_shape[0] * cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t Ho = cache.out_shape[2], Wo = cache.out_shape[3];
    Tensor grad_input(cache.x_shape);
    for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t i = 0; i < Ho; ++i) {
            const auto [h0, h1] = adaptive_window(i, H, Ho);
            for (int64_t j = 0; j < Wo; ++j) {
                const auto [w0, w1] = adaptive_window(j, W, Wo);
                const float share = grad_output[(plane * Ho + i) * Wo + j] / static_cast<float>((h1 - h0) * (w1 - w0));
                for (int64_t h = h0; h < h1; ++h)
                    for (int64_t w = w0; w < w1; ++w) grad_input[(plane * H + h) * W + w] += share;
            }
        }
    return grad_input;
}

}  // namespace handgrad::functional
