// Conv2d as one matrix product per thread instead of one per sample: each thread unfolds its
// chunk of the batch into the columns of one (C*kH*kW, n*Ho*Wo) matrix, multiplies once, and writes
// NCHW with the bias added in the same pass. unfold/fold copy whole row segments (contiguous reads
// and writes) instead of testing every element against the padding. Same signatures and math as
// functional/conv.hpp, tested equal to it.
#pragma once

#include "handgrad/functional/conv.hpp"
#include "handgrad/kernels/parallel.hpp"

#include <algorithm>
#include <cstring>

namespace handgrad::kernels {

using functional::conv_output_size;
using functional::Conv2dGrads;
using functional::Pair;

// Outer-strided views: one chunk's columns inside the (K, N*P) matrix of the whole batch.
using StridedMap = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;
using ConstStridedMap = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;

namespace detail {
// The output columns wo whose input column s*wo + j - p lies in [0, W): [lo, hi).
inline std::pair<int64_t, int64_t> valid_columns(int64_t W, int64_t Wo, int64_t j, int64_t s, int64_t p) {
    const int64_t lo = p - j > 0 ? (p - j + s - 1) / s : 0;
    const int64_t last = W - 1 + p - j;  // s*wo <= last
    const int64_t hi = last < 0 ? 0 : std::min(Wo, last / s + 1);
    return {std::min(lo, hi), hi};
}
}  // namespace detail

// unfold (functional/conv.hpp) of one (C, H, W) sample into columns [0, Ho*Wo) of cols, whose rows
// are ld apart: cols[(c, i, j), (ho, wo)] = x_padded[c, sH*ho + i, sW*wo + j].
inline void unfold(const float* x, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* cols, int64_t ld) {
    const int64_t Ho = conv_output_size(H, k[0], s[0], p[0]), Wo = conv_output_size(W, k[1], s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                float* row = cols + ((c * k[0] + i) * k[1] + j) * ld;
                const auto [lo, hi] = detail::valid_columns(W, Wo, j, s[1], p[1]);
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    float* dst = row + ho * Wo;
                    const int64_t h = s[0] * ho + i - p[0];
                    if (h < 0 || h >= H) {
                        std::fill(dst, dst + Wo, 0.0f);
                        continue;
                    }
                    const float* src = x + (c * H + h) * W + j - p[1];  // src[s*wo] = x[c, h, s*wo + j - p]
                    std::fill(dst, dst + lo, 0.0f);
                    if (s[1] == 1) std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
                    else
                        for (int64_t wo = lo; wo < hi; ++wo) dst[wo] = src[s[1] * wo];
                    std::fill(dst + hi, dst + Wo, 0.0f);
                }
            }
}

// fold (the adjoint of unfold) of columns [0, Ho*Wo) of cols, rows ld apart, added onto grad_x.
inline void fold(const float* cols, int64_t ld, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* grad_x) {
    const int64_t Ho = conv_output_size(H, k[0], s[0], p[0]), Wo = conv_output_size(W, k[1], s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                const float* row = cols + ((c * k[0] + i) * k[1] + j) * ld;
                const auto [lo, hi] = detail::valid_columns(W, Wo, j, s[1], p[1]);
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const int64_t h = s[0] * ho + i - p[0];
                    if (h < 0 || h >= H) continue;
                    const float* src = row + ho * Wo;
                    float* dst = grad_x + (c * H + h) * W + j - p[1];
                    if (s[1] == 1) {
#pragma omp simd
                        for (int64_t wo = lo; wo < hi; ++wo) dst[wo] += src[wo];
                    } else {
                        for (int64_t wo = lo; wo < hi; ++wo) dst[s[1] * wo] += src[wo];
                    }
                }
            }
}

struct Conv2dCache {
    Tensor cols;    // (C*kH*kW, N*Ho*Wo), sample n in columns [n*P, (n+1)*P): grad_weight = G @ cols.T
    Tensor weight;  // grad_cols = W.T @ G: a copy, so the cache never outlives what it reads
    Shape x_shape, out_shape;
    Pair stride{1, 1}, padding{0, 0};
    bool has_bias = false;
};

// y[n] = W @ cols[n] + bias, as functional::conv2d_forward; with relu=true, y = max(that, 0) in
// the same pass (the fused bias+ReLU a Conv2d followed by ReLU runs). workspace: the columns of an
// earlier call (a layer's previous step), reused when of the same size, which saves allocating and
// zero-filling them (unfold writes every element).
inline std::pair<Tensor, Conv2dCache> conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                     Pair stride = {1, 1}, Pair padding = {0, 0}, bool relu = false,
                                                     Tensor workspace = {}) {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t O = weight.shape[0];
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t Ho = conv_output_size(H, k[0], stride[0], padding[0]);
    const int64_t Wo = conv_output_size(W, k[1], stride[1], padding[1]);
    const int64_t K = C * k[0] * k[1], P = Ho * Wo, NP = N * P;
    Tensor cols = workspace.numel() == K * NP ? std::move(workspace) : Tensor({K, NP});
    cols.shape = {K, NP};
    Tensor out({N, O, Ho, Wo});
    const auto Wm = as_matrix(weight, O, K);
    const float* b = bias ? bias->ptr() : nullptr;
    for_chunks(N, chunk_count(N, O * K * P), [&](int, int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n)
            unfold(x.ptr() + n * C * H * W, C, H, W, k, stride, padding, cols.ptr() + n * P, NP);
        const Matrix y = Wm * ConstStridedMap(cols.ptr() + n0 * P, K, (n1 - n0) * P, Eigen::OuterStride<>(NP));
        for (int64_t n = n0; n < n1; ++n)  // (O, n*P) -> NCHW, adding the bias (and the ReLU) on the way
            for (int64_t o = 0; o < O; ++o) {
                const float* src = y.data() + o * y.cols() + (n - n0) * P;
                float* dst = out.ptr() + (n * O + o) * P;
                const float add = b ? b[o] : 0.0f;
                if (relu) {
#pragma omp simd
                    for (int64_t q = 0; q < P; ++q) dst[q] = std::max(src[q] + add, 0.0f);
                } else {
#pragma omp simd
                    for (int64_t q = 0; q < P; ++q) dst[q] = src[q] + add;
                }
            }
    });
    return {std::move(out), Conv2dCache{.cols = std::move(cols), .weight = weight, .x_shape = x.shape,
                                         .out_shape = {N, O, Ho, Wo}, .stride = stride, .padding = padding,
                                         .has_bias = bias != nullptr}};
}

// The gradients of functional::conv2d_backward, per chunk of the batch: G (O, n*P) gathered from
// NCHW once, then grad_weight += G @ cols.T, grad_bias += G.sum(columns), grad_cols = W.T @ G folded
// back per sample. The chunks' grad_weight and grad_bias are added in chunk order.
inline Conv2dGrads conv2d_backward(const Tensor& grad_output, const Conv2dCache& cache, NeedsGrad needs = {}) {
    check_grad_output("conv2d_backward", grad_output, cache.out_shape);
    const Tensor& weight = cache.weight;
    const int64_t N = cache.x_shape[0], C = cache.x_shape[1], H = cache.x_shape[2], W = cache.x_shape[3];
    const int64_t O = weight.shape[0];
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t K = C * k[0] * k[1], P = grad_output.shape[2] * grad_output.shape[3], NP = N * P;
    const bool want_bias = cache.has_bias && needs.bias;
    Conv2dGrads g;
    if (needs.input) g.grad_input = Tensor(cache.x_shape);
    const int chunks = chunk_count(N, O * K * P);
    std::vector<Matrix> grad_weight(needs.weight ? chunks : 0);
    std::vector<Eigen::VectorXf> grad_bias(want_bias ? chunks : 0);
    const auto Wm = as_matrix(weight, O, K);
    for_chunks(N, chunks, [&](int t, int64_t n0, int64_t n1) {
        const int64_t m = (n1 - n0) * P;
        Matrix G(O, m);
        for (int64_t n = n0; n < n1; ++n)
            for (int64_t o = 0; o < O; ++o)
                std::memcpy(G.data() + o * m + (n - n0) * P, grad_output.ptr() + (n * O + o) * P, P * sizeof(float));
        if (needs.weight)
            grad_weight[t].noalias() =
                G * ConstStridedMap(cache.cols.ptr() + n0 * P, K, m, Eigen::OuterStride<>(NP)).transpose();
        if (want_bias) grad_bias[t] = G.rowwise().sum();
        if (needs.input) {
            const Matrix grad_cols = Wm.transpose() * G;
            for (int64_t n = n0; n < n1; ++n)
                fold(grad_cols.data() + (n - n0) * P, m, C, H, W, k, cache.stride, cache.padding,
                     g.grad_input.ptr() + n * C * H * W);
        }
    });
    if (needs.weight) {
        g.grad_weight = Tensor(weight.shape);
        auto total = as_matrix(g.grad_weight, O, K);
        for (auto& part : grad_weight) total += part;
    }
    if (want_bias) {
        g.grad_bias = Tensor({O});
        for (auto& part : grad_bias) VectorMap(g.grad_bias.ptr(), O) += part;
    }
    return g;
}

}  // namespace handgrad::kernels
