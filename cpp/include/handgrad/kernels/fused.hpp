// Linear -> ReLU and Conv2d -> ReLU -> MaxPool2d, each as one op (mirrors
// src/handgrad/kernels/fused.py), which nn::Sequential runs in place of the layers one by one
// while the kernels are on. The same outputs and gradients as the layers' kernels in a row (tested
// equal to them); faster because no intermediate tensor is written and read back:
//   - linear_relu: the bias and the ReLU applied to each chunk's rows right after its product;
//     backward masks dL/dy by y > 0 once, then runs Linear's backward on it.
//   - conv2d_relu_max_pool2d (2x2 windows of stride 2, the default MaxPool2d): the pool scans the
//     convolution's product where it was computed, each value biased and rectified on the way, and
//     writes each window's maximum and where it was; backward scatters dL/dy to those places (the
//     others' gradient is zero) straight into the product's layout. With one input channel and
//     stride 1 (the first layer of an image model) the convolution runs direct, with no columns.
#pragma once

#include "handgrad/kernels/conv.hpp"
#include "handgrad/kernels/linear.hpp"

#include <cmath>
#include <limits>

namespace handgrad::kernels {

// ---- Linear -> ReLU ---------------------------------------------------------------------------

struct LinearReluCache {
    Tensor x;  // backward needs x (for grad_weight), moved in from the previous layer's output ...
    // ... and the weight, read in place: the layer's own, which nn::Sequential keeps alive beside
    // this cache, and which (as in the Python kernels) must not change between forward and backward
    const Tensor* weight = nullptr;
    bool has_bias = false;
    Tensor out;  // y = relu(x @ W.T + b): the gradient passes where y > 0
};

// y = relu(x @ weight.T + bias), as linear_forward then relu_forward; x is kept for backward.
inline std::pair<Tensor, LinearReluCache> linear_relu_forward(Tensor x, const Tensor& weight, const Tensor* bias) {
    Tensor out = detail::linear_product(x, weight, bias, true);
    Tensor kept = out;  // one copy for the next layer, the other kept for backward
    return {std::move(out), LinearReluCache{.x = std::move(x), .weight = &weight, .has_bias = bias != nullptr,
                                            .out = std::move(kept)}};
}

// dL/dz = G * [y > 0], then Linear's gradients of z = x @ W.T + b.
inline LinearGrads linear_relu_backward(const Tensor& grad_output, const LinearReluCache& cache, NeedsGrad needs = {}) {
    check_grad_output("linear_relu_backward", grad_output, cache.out.shape);
    Tensor grad_z(cache.out.shape);
    const float *g = grad_output.ptr(), *y = cache.out.ptr();
    float* d = grad_z.ptr();
    for_each_index(grad_z.numel(), [g, y, d](int64_t i) { d[i] = y[i] > 0.0f ? g[i] : 0.0f; });
    return detail::linear_grads(grad_z, cache.x, *cache.weight, cache.has_bias, needs);
}

// ---- Conv2d -> ReLU -> MaxPool2d (2x2, stride 2) ------------------------------------------------

struct Conv2dReluMaxPool2dCache {
    // The columns path: cols and weight for the products. Direct: conv.cols holds x padded,
    // (N, Hp, Wp), read by backward without bounds tests.
    Conv2dCache conv;
    bool direct = false;
    Tensor out;                   // y (N, O, Ho/2, Wo/2): the gradient passes where y > 0
    std::vector<int32_t> argmax;  // where each window's maximum was in its plane of the product z
};

namespace detail {
// r = relu(v) takes the window's lead when larger than best (the first maximum stays).
inline void challenge(float v, int32_t at, float& best, int32_t& where) {
    const float r = v > 0.0f ? v : 0.0f;
    const bool wins = r > best;
    where = wins ? at : where;
    best = wins ? r : best;
}

// One plane of z (rows ld apart) -> its pooled plane: out[a, b] = max over the 2x2 window (a, b)
// of relu(z + add), the first maximum in row-major order winning, as ReLU then MaxPool2d compute
// it (NaN included: ReLU makes it 0); argmax = the winner's offset in z. Selects, not branches, so
// the loop over b vectorises.
inline void relu_max_pool_2x2_plane(const float* z, int64_t ld, int64_t Hp, int64_t Wp, float add, float* out,
                                    int32_t* argmax) {
    for (int64_t a = 0; a < Hp; ++a) {
        const float* r0 = z + 2 * a * ld;
        const float* r1 = r0 + ld;
        float* y = out + a * Wp;
        int32_t* where = argmax + a * Wp;
        const auto top = static_cast<int32_t>(2 * a * ld), below = static_cast<int32_t>((2 * a + 1) * ld);
#pragma omp simd
        for (int32_t b = 0; b < static_cast<int32_t>(Wp); ++b) {
            const float first = r0[2 * b] + add;
            float best = first > 0.0f ? first : 0.0f;
            int32_t k = top + 2 * b;
            challenge(r0[2 * b + 1] + add, top + 2 * b + 1, best, k);
            challenge(r1[2 * b] + add, below + 2 * b, best, k);
            challenge(r1[2 * b + 1] + add, below + 2 * b + 1, best, k);
            y[b] = best;
            where[b] = k;
        }
    }
}

// Its adjoint onto one plane of dL/dz (size elements, zeroed first): each window's gradient to
// where its maximum was, where y > 0 (elsewhere the ReLU passes none). Returns the sum of what it
// placed (the plane's part of grad_bias).
inline float relu_max_pool_2x2_plane_backward(const float* grad_output, const float* y, const int32_t* argmax,
                                              int64_t windows, float* G, int64_t size) {
    std::fill(G, G + size, 0.0f);
    float total = 0.0f;
    for (int64_t w = 0; w < windows; ++w)
        if (y[w] > 0.0f) {
            G[argmax[w]] = grad_output[w];
            total += grad_output[w];
        }
    return total;
}

inline bool runs_direct(const ConvSizes& z, Pair stride) { return z.C == 1 && stride == Pair{1, 1}; }

// The direct convolution of one padded plane xp (Hp, Wp; one input channel, stride 1) by the
// kernels w (O, kH, kW), channel o's output on the padded width: z[o*ld + r*Wp + q] for q < Wo
// (the columns q >= Wo hold sums that wrap into the next row, which nothing reads); span = the
// elements up to the last one read. Register-blocked: a block of kBlock outputs sums all its taps
// in registers (the loop over the block vectorises, with fused multiply-adds, as the products'
// kernels use) and is stored once.
inline void direct_conv_plane(const float* xp, int64_t Wp, const float* w, int64_t O, Pair k, int64_t span, float* z,
                              int64_t ld) {
    constexpr int64_t kBlock = 32;
    const int64_t taps = k[0] * k[1];
    for (int64_t o = 0; o < O; ++o) {
        const float* wo = w + o * taps;
        float* zo = z + o * ld;
        int64_t m0 = 0;
        for (; m0 + kBlock <= span; m0 += kBlock) {
            float acc[kBlock] = {};
            for (int64_t i = 0; i < k[0]; ++i)
                for (int64_t j = 0; j < k[1]; ++j) {
                    const float tap = wo[i * k[1] + j];
                    const float* src = xp + i * Wp + j + m0;
#pragma omp simd
                    for (int64_t u = 0; u < kBlock; ++u) acc[u] = std::fma(tap, src[u], acc[u]);
                }
            std::memcpy(zo + m0, acc, sizeof acc);
        }
        for (int64_t m = m0; m < span; ++m) {  // the last partial block: no read past the plane
            float acc = 0.0f;
            for (int64_t i = 0; i < k[0]; ++i)
                for (int64_t j = 0; j < k[1]; ++j) acc = std::fma(wo[i * k[1] + j], xp[i * Wp + j + m], acc);
            zo[m] = acc;
        }
    }
}
}  // namespace detail

// y = max_pool2d(relu(conv2d(x, weight, bias, stride, padding)), 2x2, stride 2): the same y as the
// three layers' kernels one by one. workspace: the cached columns (or padded x) of the previous step.
inline std::pair<Tensor, Conv2dReluMaxPool2dCache> conv2d_relu_max_pool2d_forward(
    const Tensor& x, const Tensor& weight, const Tensor* bias, Pair stride, Pair padding, Tensor workspace = {}) {
    const detail::ConvSizes z = detail::conv_sizes(x.shape, weight.shape, stride, padding);
    const int64_t Hp = z.Ho / 2, Wp = z.Wo / 2, windows = Hp * Wp;
    Tensor out({z.N, z.O, Hp, Wp});
    std::vector<int32_t> argmax(out.numel());
    const float* b = bias ? bias->ptr() : nullptr;
    auto pool = [&](int64_t n, int64_t o, const float* plane, int64_t ld) {
        const int64_t at = (n * z.O + o) * windows;
        detail::relu_max_pool_2x2_plane(plane, ld, Hp, Wp, b ? b[o] : 0.0f, out.ptr() + at, argmax.data() + at);
    };
    Conv2dReluMaxPool2dCache cache;
    if (detail::runs_direct(z, stride)) {
        const int64_t Hpad = z.H + 2 * padding[0], Wpad = z.W + 2 * padding[1], plane = Hpad * Wpad;
        const int64_t span = (z.Ho - 1) * Wpad + z.Wo, ld = z.Ho * Wpad;
        Tensor padded = workspace.numel() == z.N * plane ? std::move(workspace) : Tensor({z.N, Hpad, Wpad});
        padded.shape = {z.N, Hpad, Wpad};
        for_chunks(z.N, chunk_count(z.N, z.O * z.K * z.P), [&](int, int64_t n0, int64_t n1) {
            float* product = scratch(0, z.O * ld);
            for (int64_t n = n0; n < n1; ++n) {
                float* xp = padded.ptr() + n * plane;
                std::fill(xp, xp + padding[0] * Wpad, 0.0f);  // the padding rows above and below
                std::fill(xp + (padding[0] + z.H) * Wpad, xp + plane, 0.0f);
                for (int64_t h = 0; h < z.H; ++h) {
                    float* row = xp + (padding[0] + h) * Wpad;
                    std::fill(row, row + padding[1], 0.0f);
                    std::memcpy(row + padding[1], x.ptr() + (n * z.H + h) * z.W, z.W * sizeof(float));
                    std::fill(row + padding[1] + z.W, row + Wpad, 0.0f);
                }
                detail::direct_conv_plane(xp, Wpad, weight.ptr(), z.O, z.k, span, product, ld);
                for (int64_t o = 0; o < z.O; ++o) pool(n, o, product + o * ld, Wpad);
            }
        });
        cache.conv = Conv2dCache{.cols = std::move(padded), .weight = weight, .x_shape = x.shape,
                                 .out_shape = {z.N, z.O, z.Ho, z.Wo}, .stride = stride, .padding = padding,
                                 .has_bias = bias != nullptr};
        cache.direct = true;
    } else {
        cache.conv = detail::conv2d_columns_forward(
            x, weight, stride, padding, bias != nullptr, std::move(workspace),
            [&](int64_t n0, int64_t n1, const float* product) {
                const int64_t m = (n1 - n0) * z.P;
                for (int64_t n = n0; n < n1; ++n)
                    for (int64_t o = 0; o < z.O; ++o) pool(n, o, product + o * m + (n - n0) * z.P, z.Wo);
            });
    }
    cache.out = out;
    cache.argmax = std::move(argmax);
    return {std::move(out), std::move(cache)};
}

namespace detail {
// Backward of the direct path, over chunks of samples: per sample and channel, G = dL/dz on the
// padded width (the pool's adjoint), then grad_weight[o, t] += G . xp shifted by tap t (a
// vectorised dot product), grad_bias[o] += the sum placed, and grad_x_padded += w[o, t] * G
// shifted by t, cropped into grad_input. Chunks' sums are added in chunk order. (Summing over the
// nonzero places of G only, a quarter or fewer, measured 2x slower: scalar, and a branch on y > 0
// that real activations make unpredictable.)
inline Conv2dGrads direct_backward(const Tensor& grad_output, const Conv2dReluMaxPool2dCache& cache, NeedsGrad needs) {
    const Conv2dCache& c = cache.conv;
    const ConvSizes z = conv_sizes(c.x_shape, c.weight.shape, c.stride, c.padding);
    const int64_t Hpad = c.cols.shape[1], Wpad = c.cols.shape[2], plane = Hpad * Wpad;
    const int64_t span = (z.Ho - 1) * Wpad + z.Wo, ld = z.Ho * Wpad, taps = z.k[0] * z.k[1];
    const int64_t windows = cache.out.shape[2] * cache.out.shape[3];
    const bool want_bias = c.has_bias && needs.bias;
    Conv2dGrads g;
    if (needs.input) g.grad_input = Tensor(c.x_shape);
    const int chunks = chunk_count(z.N, z.O * z.K * z.P);
    std::vector<std::vector<double>> weight_parts(chunks), bias_parts(chunks);
    for_chunks(z.N, chunks, [&](int t, int64_t n0, int64_t n1) {
        auto& gw = weight_parts[t];
        auto& gb = bias_parts[t];
        gw.assign(z.O * taps, 0.0), gb.assign(z.O, 0.0);
        float* G = scratch(1, ld);
        float* grad_padded = needs.input ? scratch(2, plane) : nullptr;
        for (int64_t n = n0; n < n1; ++n) {
            const float* xp = c.cols.ptr() + n * plane;
            if (grad_padded) std::fill(grad_padded, grad_padded + plane, 0.0f);
            for (int64_t o = 0; o < z.O; ++o) {
                const int64_t at = (n * z.O + o) * windows;
                gb[o] += relu_max_pool_2x2_plane_backward(grad_output.ptr() + at, cache.out.ptr() + at,
                                                          cache.argmax.data() + at, windows, G, ld);
                for (int64_t i = 0; i < z.k[0]; ++i)
                    for (int64_t j = 0; j < z.k[1]; ++j) {
                        const int64_t shift = i * Wpad + j;
                        if (needs.weight) {
                            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                            for (int64_t m = 0; m < span; ++m) dot += G[m] * xp[shift + m];
                            gw[o * taps + i * z.k[1] + j] += dot;
                        }
                        if (grad_padded) {
                            const float tap = c.weight[o * taps + i * z.k[1] + j];
                            float* dst = grad_padded + shift;
#pragma omp simd
                            for (int64_t m = 0; m < span; ++m) dst[m] += tap * G[m];
                        }
                    }
            }
            if (grad_padded)
                for (int64_t h = 0; h < z.H; ++h)
                    std::memcpy(g.grad_input.ptr() + (n * z.H + h) * z.W,
                                grad_padded + (c.padding[0] + h) * Wpad + c.padding[1], z.W * sizeof(float));
        }
    });
    if (needs.weight) {
        g.grad_weight = Tensor(c.weight.shape);
        for (int64_t i = 0; i < z.O * taps; ++i) {
            double total = 0.0;
            for (auto& part : weight_parts) total += part[i];
            g.grad_weight[i] = static_cast<float>(total);
        }
    }
    if (want_bias) {
        g.grad_bias = Tensor({z.O});
        for (int64_t o = 0; o < z.O; ++o) {
            double total = 0.0;
            for (auto& part : bias_parts) total += part[o];
            g.grad_bias[o] = static_cast<float>(total);
        }
    }
    return g;
}
}  // namespace detail

// The gradients of the three layers in a row: dL/dz from the pool's argmax and y > 0, then the
// convolution's (direct, or through the columns' products).
inline Conv2dGrads conv2d_relu_max_pool2d_backward(const Tensor& grad_output, const Conv2dReluMaxPool2dCache& cache,
                                                   NeedsGrad needs = {}) {
    check_grad_output("conv2d_relu_max_pool2d_backward", grad_output, cache.out.shape);
    if (cache.direct) return detail::direct_backward(grad_output, cache, needs);
    const int64_t O = cache.out.shape[1], windows = cache.out.shape[2] * cache.out.shape[3];
    const int64_t P = cache.conv.out_shape[2] * cache.conv.out_shape[3];
    return detail::conv2d_columns_backward(cache.conv, needs, [&](int64_t n0, int64_t n1, float* G) {
        const int64_t m = (n1 - n0) * P;
        for (int64_t n = n0; n < n1; ++n)
            for (int64_t o = 0; o < O; ++o) {
                const int64_t at = (n * O + o) * windows;
                detail::relu_max_pool_2x2_plane_backward(grad_output.ptr() + at, cache.out.ptr() + at,
                                                         cache.argmax.data() + at, windows,
                                                         G + o * m + (n - n0) * P, P);
            }
    });
}

}  // namespace handgrad::kernels
