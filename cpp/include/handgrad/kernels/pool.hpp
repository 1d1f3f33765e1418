// Max pooling over planes in parallel, each window's maximum and its argmax written in one pass,
// with no padding test for windows wholly inside the input. Same signatures, cache and math as
// functional/pool.hpp (which average pooling keeps), tested equal to it.
#pragma once

#include "handgrad/functional/pool.hpp"
#include "handgrad/kernels/parallel.hpp"

namespace handgrad::kernels {

using functional::MaxPool2dCache;

namespace detail {
// One row of 2x2 windows at stride 2 without padding (every pool of the named models): the window
// over rows r0, r1 at columns 2*wo, 2*wo + 1, its first maximum in row-major order and its position
// k. The comparisons are selects in the same order as the general loop, so the same winner (a NaN
// wins, the last one, as in the reference), and the loop over wo vectorises (pointers as parameters:
// no store can change them).
inline void max_pool_2x2_row(const float* r0, const float* r1, float* y, int16_t* argmax, int64_t Wo) {
#pragma omp simd
    for (int64_t wo = 0; wo < Wo; ++wo) {
        float best = r0[2 * wo];
        int16_t k = 0;
        const float window[3] = {r0[2 * wo + 1], r1[2 * wo], r1[2 * wo + 1]};
        for (int16_t i = 0; i < 3; ++i) {
            const bool wins = window[i] > best || window[i] != window[i];
            k = wins ? static_cast<int16_t>(i + 1) : k;
            best = wins ? window[i] : best;
        }
        y[wo] = best;
        argmax[wo] = k;
    }
}

// Its adjoint: each window's gradient to the position it kept, zero to the other three (the windows
// do not overlap, so every input pixel under a window is written once).
inline void max_pool_2x2_row_backward(const float* grad_output, const int16_t* argmax, float* g0, float* g1,
                                      int64_t Wo) {
#pragma omp simd
    for (int64_t wo = 0; wo < Wo; ++wo) {
        const float g = grad_output[wo];
        const int16_t k = argmax[wo];
        g0[2 * wo] = k == 0 ? g : 0.0f;
        g0[2 * wo + 1] = k == 1 ? g : 0.0f;
        g1[2 * wo] = k == 2 ? g : 0.0f;
        g1[2 * wo + 1] = k == 3 ? g : 0.0f;
    }
}

inline bool is_2x2_stride_2(Pair kernel_size, Pair stride, Pair padding) {
    return kernel_size == Pair{2, 2} && stride == Pair{2, 2} && padding == Pair{0, 0};
}
}  // namespace detail

inline std::pair<Tensor, MaxPool2dCache> max_pool2d_forward(const Tensor& x, Pair kernel_size, Pair stride,
                                                            Pair padding = {0, 0}) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const auto [kh, kw] = kernel_size;
    const auto [sh, sw] = stride;
    const auto [ph, pw] = padding;
    const int64_t Ho = conv_output_size(H, kh, sh, ph), Wo = conv_output_size(W, kw, sw, pw);
    Tensor out({N, C, Ho, Wo});
    MaxPool2dCache cache{.argmax = std::vector<int16_t>(out.numel()), .x_shape = x.shape, .out_shape = out.shape,
                         .kernel_size = kernel_size, .stride = stride, .padding = padding};
    constexpr float lowest = -std::numeric_limits<float>::infinity();
    const bool two_by_two = detail::is_2x2_stride_2(kernel_size, stride, padding);
    for_chunks(N * C, chunk_count(N * C, H * W), [&](int, int64_t p0, int64_t p1) {
        for (int64_t plane = p0; plane < p1; ++plane) {
            const float* xp = x.ptr() + plane * H * W;
            float* yp = out.ptr() + plane * Ho * Wo;
            int16_t* ap = cache.argmax.data() + plane * Ho * Wo;
            if (two_by_two) {
                for (int64_t ho = 0; ho < Ho; ++ho)
                    detail::max_pool_2x2_row(xp + 2 * ho * W, xp + (2 * ho + 1) * W, yp + ho * Wo, ap + ho * Wo, Wo);
                continue;
            }
            for (int64_t ho = 0; ho < Ho; ++ho) {
                const int64_t h0 = sh * ho - ph;
                for (int64_t wo = 0; wo < Wo; ++wo) {
                    const int64_t w0 = sw * wo - pw;
                    float best = lowest;
                    int16_t best_k = 0;
                    if (h0 >= 0 && w0 >= 0 && h0 + kh <= H && w0 + kw <= W) {  // inside: no bounds tests
                        // selects, not branches: on real activations which element wins is a coin toss
                        best = xp[h0 * W + w0];
                        for (int64_t i = 0; i < kh; ++i)
                            for (int64_t j = 0; j < kw; ++j) {
                                const float v = xp[(h0 + i) * W + w0 + j];
                                const bool wins = v > best || v != v;
                                best_k = wins ? static_cast<int16_t>(i * kw + j) : best_k;
                                best = wins ? v : best;
                            }
                    } else {  // touching the padding, which is -inf and never wins
                        bool first = true;
                        for (int64_t i = 0; i < kh; ++i)
                            for (int64_t j = 0; j < kw; ++j) {
                                const int64_t h = h0 + i, w = w0 + j;
                                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                                const float v = xp[h * W + w];
                                if (first || v > best || v != v)
                                    best = v, best_k = static_cast<int16_t>(i * kw + j), first = false;
                            }
                    }
                    yp[ho * Wo + wo] = best;
                    ap[ho * Wo + wo] = best_k;
                }
            }
        }
    });
    return {std::move(out), std::move(cache)};
}

inline Tensor max_pool2d_backward(const Tensor& grad_output, const MaxPool2dCache& cache) {
    check_grad_output("max_pool2d_backward", grad_output, cache.out_shape);
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t Ho = grad_output.shape[2], Wo = grad_output.shape[3], kw = cache.kernel_size[1];
    const auto [sh, sw] = cache.stride;
    const auto [ph, pw] = cache.padding;
    Tensor grad_input(cache.x_shape);
    // (i, j) of each window position k = i*kW + j, looked up: an integer division per element cost
    // more than the rest of the loop
    const int64_t window = cache.kernel_size[0] * kw;
    std::vector<int64_t> row_of(window), col_of(window);
    for (int64_t k = 0; k < window; ++k) row_of[k] = k / kw, col_of[k] = k % kw;
    const bool two_by_two = detail::is_2x2_stride_2(cache.kernel_size, cache.stride, cache.padding);
    for_chunks(N * C, chunk_count(N * C, H * W), [&](int, int64_t p0, int64_t p1) {
        for (int64_t plane = p0; plane < p1; ++plane) {
            float* gp = grad_input.ptr() + plane * H * W;
            const float* go = grad_output.ptr() + plane * Ho * Wo;
            const int16_t* ap = cache.argmax.data() + plane * Ho * Wo;
            if (two_by_two) {
                for (int64_t ho = 0; ho < Ho; ++ho)
                    detail::max_pool_2x2_row_backward(go + ho * Wo, ap + ho * Wo, gp + 2 * ho * W, gp + (2 * ho + 1) * W, Wo);
                continue;
            }
            for (int64_t ho = 0; ho < Ho; ++ho)
                for (int64_t wo = 0; wo < Wo; ++wo) {
                    const int64_t k = ap[ho * Wo + wo];
                    const int64_t h = sh * ho + row_of[k] - ph, w = sw * wo + col_of[k] - pw;
                    if (h >= 0 && h < H && w >= 0 && w < W) gp[h * W + w] += go[ho * Wo + wo];
                }
        }
    });
    return grad_input;
}

}  // namespace handgrad::kernels
