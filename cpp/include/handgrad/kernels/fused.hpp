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

#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

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
    Tensor out = linear_output(x, weight, bias, true);
    Tensor kept = out;  // one copy for the next layer, the other kept for backward
    return {std::move(out), LinearReluCache{.x = std::move(x), .weight = &weight, .has_bias = bias != nullptr,
                                            .out = std::move(kept)}};
}

// dL/dz = G * [y > 0], then Linear's gradients of z = x @ W.T + b.
inline LinearGrads linear_relu_backward(const Tensor& grad_output, const LinearReluCache& cache, NeedsGrad needs = {}) {
    check_grad_output("linear_relu_backward", grad_output, cache.out.shape);
    Tensor grad_z = Tensor::empty(cache.out.shape);
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

// One plane of z -> its pooled plane: out[a, b] = max over the 2x2 window (a, b) of relu(z + add),
// the first maximum in row-major order winning, as ReLU then MaxPool2d compute it (NaN included:
// ReLU makes it 0); argmax = the winner's offset r*argmax_ld + q in z's plane (rows argmax_ld
// apart). z's column q = 2*b + d of row r is read at (d ? odd : even)[r*ld + Step*b]: Step 2 for
// z as it is (odd = even + 1), Step 1 for z split into its even and odd columns, where a window's
// four values sit at the same place b of four rows and the loads are whole vectors. Selects, not
// branches, so the loop over b vectorises; a row runs in blocks of kLanes windows, the last one
// overlapping the one before (it writes the same values again), so that a row of 14 windows is
// two vectors rather than one and six scalar windows.
template <int Step>
inline void relu_max_pool_2x2_plane(const float* even, const float* odd, int64_t ld, int64_t argmax_ld, int64_t Hp,
                                    int64_t Wp, float add, float* out, int32_t* argmax) {
    constexpr int32_t kLanes = 8;
    const auto width = static_cast<int32_t>(Wp);
    for (int64_t a = 0; a < Hp; ++a) {
        const float *e0 = even + 2 * a * ld, *o0 = odd + 2 * a * ld, *e1 = e0 + ld, *o1 = o0 + ld;
        float* y = out + a * Wp;
        int32_t* where = argmax + a * Wp;
        const auto top = static_cast<int32_t>(2 * a * argmax_ld), below = static_cast<int32_t>((2 * a + 1) * argmax_ld);
        auto windows = [&](int32_t b0, int32_t count) {
#pragma omp simd
            for (int32_t b = b0; b < b0 + count; ++b) {
                const float first = e0[Step * b] + add;
                float best = first > 0.0f ? first : 0.0f;
                int32_t k = top + 2 * b;
                challenge(o0[Step * b] + add, top + 2 * b + 1, best, k);
                challenge(e1[Step * b] + add, below + 2 * b, best, k);
                challenge(o1[Step * b] + add, below + 2 * b + 1, best, k);
                y[b] = best;
                where[b] = k;
            }
        };
        if (width < kLanes) windows(0, width);
        for (int32_t b0 = 0; width >= kLanes && b0 < width; b0 += kLanes) windows(std::min(b0, width - kLanes), kLanes);
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

// dst[m] += sum_{u < Taps} weights[u] * src[u][m] for m < count, in fused multiply-adds: one
// pass over dst for Taps taps, so that each dst[m] is loaded and stored once per Taps
// multiply-adds rather than once per tap (the plane stays in L1, where those loads and stores are
// the limit). The loop over m vectorises; the one over u unrolls (Taps is a constant).
template <int Taps>
inline void multiply_add_pass(const float* const* src, const float* weights, int64_t count, float* dst) {
    const float* s[Taps];
    float w[Taps];
    for (int u = 0; u < Taps; ++u) s[u] = src[u], w[u] = weights[u];
#pragma omp simd
    for (int64_t m = 0; m < count; ++m) {
        float acc = dst[m];
        for (int u = 0; u < Taps; ++u) acc = std::fma(w[u], s[u][m], acc);
        dst[m] = acc;
    }
}

// pass(std::integral_constant<int, n>{}, t) for consecutive runs [t, t + n) of the taps: passes
// of at most eight taps (eight streams, and eight weights or sums, fit the registers), as even as
// can be (25 taps: 7 + 6 + 6 + 6; 9: 5 + 4), so that no pass is a lone tap's full pass.
template <class Pass>
inline void in_passes(int64_t taps, Pass pass) {
    constexpr int64_t kMaxPass = 8;
    for (int64_t t = 0, passes = (taps + kMaxPass - 1) / kMaxPass; passes > 0; --passes) {
        const int64_t n = (taps - t + passes - 1) / passes;
        switch (n) {
            case 1: pass(std::integral_constant<int, 1>{}, t); break;
            case 2: pass(std::integral_constant<int, 2>{}, t); break;
            case 3: pass(std::integral_constant<int, 3>{}, t); break;
            case 4: pass(std::integral_constant<int, 4>{}, t); break;
            case 5: pass(std::integral_constant<int, 5>{}, t); break;
            case 6: pass(std::integral_constant<int, 6>{}, t); break;
            case 7: pass(std::integral_constant<int, 7>{}, t); break;
            default: pass(std::integral_constant<int, 8>{}, t); break;
        }
        t += n;
    }
}

// dst[m] += sum_t weights[t] * src[t][m] for m < count, t < taps, in passes of several taps.
inline void multiply_add_taps(const float* const* src, const float* weights, int64_t taps, int64_t count, float* dst) {
    in_passes(taps, [&](auto n, int64_t t) { multiply_add_pass<decltype(n)::value>(src + t, weights + t, count, dst); });
}

// shifted[t] = base + shift(t) for each tap t = i*kW + j of a kernel k on rows Wp apart, shift(t)
// = i*Wp + j (or, flip: minus that).
inline void tap_pointers(const float* base, Pair k, int64_t Wp, bool flip, std::vector<const float*>& shifted) {
    shifted.resize(k[0] * k[1]);
    for (int64_t i = 0; i < k[0]; ++i)
        for (int64_t j = 0; j < k[1]; ++j) shifted[i * k[1] + j] = base + (flip ? -1 : 1) * (i * Wp + j);
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
    // channel o of sample n pooled from its plane of z: as it is (rows ld apart), or split into its
    // even and odd columns (each of rows ld apart; argmax on rows argmax_ld apart)
    auto pool = [&](int64_t n, int64_t o, const float* plane, int64_t ld) {
        const int64_t at = (n * z.O + o) * windows;
        detail::relu_max_pool_2x2_plane<2>(plane, plane + 1, ld, ld, Hp, Wp, b ? b[o] : 0.0f, out.ptr() + at,
                                           argmax.data() + at);
    };
    auto pool_split = [&](int64_t n, int64_t o, const float* even, const float* odd, int64_t ld, int64_t argmax_ld) {
        const int64_t at = (n * z.O + o) * windows;
        detail::relu_max_pool_2x2_plane<1>(even, odd, ld, argmax_ld, Hp, Wp, b ? b[o] : 0.0f, out.ptr() + at,
                                           argmax.data() + at);
    };
    Conv2dReluMaxPool2dCache cache;
    if (detail::runs_direct(z, stride)) {
        const int64_t Hpad = z.H + 2 * padding[0], Wpad = z.W + 2 * padding[1], plane = Hpad * Wpad;
        // The convolution runs on x padded and split into its even and odd columns, xs (2, Hpad, Wh):
        // output column q = 2*b + p (phase p) then reads, for tap (i, j), padded column q + j at
        // phase (p + j) % 2, place b + (p + j) / 2, so each tap of each phase is one contiguous
        // multiply-add over the phase's plane (Ho, Wh), and z comes out split for the pool.
        const int64_t Wh = (Wpad + 1) / 2, split_plane = Hpad * Wh, ld = z.Ho * Wh;
        Tensor padded = workspace.numel() == z.N * plane ? std::move(workspace) : Tensor({z.N, Hpad, Wpad});
        padded.shape = {z.N, Hpad, Wpad};
        for_chunks(z.N, chunk_count(z.N, z.O * z.K * z.P), [&](int, int64_t n0, int64_t n1) {
            float* product = scratch(0, 2 * z.O * ld);  // channel o's phase p at (2*o + p) * ld
            float* xs = scratch(1, 2 * split_plane);
            std::array<std::vector<const float*>, 2> taps;
            for (int p = 0; p < 2; ++p)
                for (int64_t i = 0; i < z.k[0]; ++i)
                    for (int64_t j = 0; j < z.k[1]; ++j)
                        taps[p].push_back(xs + ((p + j) % 2) * split_plane + i * Wh + (p + j) / 2);
            for (int64_t n = n0; n < n1; ++n) {
                float* xp = padded.ptr() + n * plane;  // kept for backward, which reads it unsplit
                detail::pad_plane(x.ptr() + n * z.H * z.W, z.H, z.W, padding, xp);
                for (int64_t r = 0; r < Hpad; ++r) {
                    const float* row = xp + r * Wpad;
                    float *even = xs + r * Wh, *odd = even + split_plane;
#pragma omp simd
                    for (int64_t q = 0; q < Wpad / 2; ++q) even[q] = row[2 * q], odd[q] = row[2 * q + 1];
                    if (Wpad % 2) even[Wh - 1] = row[Wpad - 1], odd[Wh - 1] = 0.0f;
                }
                for (int64_t o = 0; o < z.O; ++o) {
                    for (int p = 0; p < 2; ++p) {
                        // up to phase p's last output column of the last row (past it, reads past xs)
                        const int64_t span = (z.Ho - 1) * Wh + (z.Wo - p + 1) / 2;
                        float* zp = product + (2 * o + p) * ld;
                        std::fill(zp, zp + span, 0.0f);
                        detail::multiply_add_taps(taps[p].data(), weight.ptr() + o * z.K, z.K, span, zp);
                    }
                    pool_split(n, o, product + 2 * o * ld, product + (2 * o + 1) * ld, Wh, Wpad);
                }
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
// totals[u] += sum_m g[m] * src[u][m] for m < count, u < Taps: Taps dot products in one pass over
// g (each g[m] loaded feeds Taps multiply-adds, and Taps sums in flight hide the multiply-add's
// latency), each summed in vector lanes in float, then added to the float64 totals.
template <int Taps>
inline void dot_pass(const float* g, const float* const* src, int64_t count, double* totals) {
    static_assert(Taps >= 1 && Taps <= 8);
    const float* s[8];
    for (int u = 0; u < 8; ++u) s[u] = src[u < Taps ? u : 0];
    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f, d4 = 0.0f, d5 = 0.0f, d6 = 0.0f, d7 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3, d4, d5, d6, d7)
    for (int64_t m = 0; m < count; ++m) {
        const float v = g[m];
        d0 = std::fma(v, s[0][m], d0);
        if constexpr (Taps > 1) d1 = std::fma(v, s[1][m], d1);
        if constexpr (Taps > 2) d2 = std::fma(v, s[2][m], d2);
        if constexpr (Taps > 3) d3 = std::fma(v, s[3][m], d3);
        if constexpr (Taps > 4) d4 = std::fma(v, s[4][m], d4);
        if constexpr (Taps > 5) d5 = std::fma(v, s[5][m], d5);
        if constexpr (Taps > 6) d6 = std::fma(v, s[6][m], d6);
        if constexpr (Taps > 7) d7 = std::fma(v, s[7][m], d7);
    }
    const float dots[8] = {d0, d1, d2, d3, d4, d5, d6, d7};
    for (int u = 0; u < Taps; ++u) totals[u] += dots[u];
}

// totals[t] += sum_m g[m] * src[t][m] for m < count, t < taps: the weight gradient's dot products,
// several taps per pass.
inline void dot_taps(const float* g, const float* const* src, int64_t taps, int64_t count, double* totals) {
    in_passes(taps, [&](auto n, int64_t t) { dot_pass<decltype(n)::value>(g, src + t, count, totals + t); });
}

// Backward of the direct path, over chunks of samples: per sample and channel, G = dL/dz on the
// padded width (the pool's adjoint, zero off the window maxima and past the last row), then
//   grad_weight[o, t] += G . (xp shifted by tap t)            (dot_taps)
//   grad_bias[o]      += the sum placed
//   grad_x_padded[p]  += sum_t w[o, t] * G[p - shift(t)]     (multiply_add_taps over G shifted back)
// the last as a gather, so that several taps share a pass: G sits after `margin` zeros (the
// largest shift), which the shifts back read where p - shift(t) < 0. Only the padded rows that
// hold x are computed, then cropped into grad_input. Chunks' sums are added in chunk order.
// (Summing over the nonzero places of G only, a quarter or fewer, measured 2x slower: scalar, and
// a branch on y > 0 that real activations make unpredictable.)
inline Conv2dGrads direct_backward(const Tensor& grad_output, const Conv2dReluMaxPool2dCache& cache, NeedsGrad needs) {
    const Conv2dCache& c = cache.conv;
    const ConvSizes z = conv_sizes(c.x_shape, c.weight.shape, c.stride, c.padding);
    const int64_t Hpad = c.cols.shape[1], Wpad = c.cols.shape[2], plane = Hpad * Wpad;
    const int64_t span = (z.Ho - 1) * Wpad + z.Wo, taps = z.k[0] * z.k[1];
    const int64_t margin = (z.k[0] - 1) * Wpad + z.k[1] - 1, rows = z.H * Wpad;
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
        float* padded_G = scratch(1, margin + plane);
        std::fill(padded_G, padded_G + margin, 0.0f);
        float* G = padded_G + margin;  // G[ld, plane) is zeroed with the rest: the gather reads it
        float* grad_rows = needs.input ? scratch(2, rows) : nullptr;
        std::vector<const float*> x_taps, G_taps;
        tap_pointers(G + c.padding[0] * Wpad, z.k, Wpad, true, G_taps);
        for (int64_t n = n0; n < n1; ++n) {
            tap_pointers(c.cols.ptr() + n * plane, z.k, Wpad, false, x_taps);
            if (grad_rows) std::fill(grad_rows, grad_rows + rows, 0.0f);
            for (int64_t o = 0; o < z.O; ++o) {
                const int64_t at = (n * z.O + o) * windows;
                gb[o] += relu_max_pool_2x2_plane_backward(grad_output.ptr() + at, cache.out.ptr() + at,
                                                          cache.argmax.data() + at, windows, G, plane);
                if (needs.weight) dot_taps(G, x_taps.data(), taps, span, gw.data() + o * taps);
                if (grad_rows) multiply_add_taps(G_taps.data(), c.weight.ptr() + o * taps, taps, rows, grad_rows);
            }
            if (grad_rows)
                for (int64_t h = 0; h < z.H; ++h)
                    std::memcpy(g.grad_input.ptr() + (n * z.H + h) * z.W, grad_rows + h * Wpad + c.padding[1],
                                z.W * sizeof(float));
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
