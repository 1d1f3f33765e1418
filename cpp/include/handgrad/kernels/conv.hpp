// Conv2d as one matrix product per thread instead of one per sample: each thread unfolds its
// chunk of the batch into the columns of one (C*kH*kW, n*Ho*Wo) matrix, multiplies once, and writes
// NCHW with the bias added in the same pass. unfold/fold copy whole row segments (contiguous reads
// and writes; at stride 1 from and onto a padded copy of each plane) instead of testing every
// element against the padding. Same signatures and math as
// functional/conv.hpp, tested equal to it.
#pragma once

#include "handgrad/functional/conv.hpp"
#include "handgrad/kernels/gemm.hpp"
#include "handgrad/kernels/parallel.hpp"

#include <algorithm>
#include <cstring>

namespace handgrad::kernels {

using functional::conv_output_size;
using functional::Conv2dGrads;
using functional::Pair;

namespace detail {
// The output columns wo whose input column s*wo + j - p lies in [0, W): [lo, hi).
inline std::pair<int64_t, int64_t> valid_columns(int64_t W, int64_t Wo, int64_t j, int64_t s, int64_t p) {
    const int64_t lo = p - j > 0 ? (p - j + s - 1) / s : 0;
    const int64_t last = W - 1 + p - j;  // s*wo <= last
    const int64_t hi = last < 0 ? 0 : std::min(Wo, last / s + 1);
    return {std::min(lo, hi), hi};
}
}  // namespace detail

namespace detail {
// x's plane (H, W) copied into the middle of a zeroed (H + 2*pH, W + 2*pW) one.
inline void pad_plane(const float* x, int64_t H, int64_t W, Pair p, float* padded) {
    const int64_t Wp = W + 2 * p[1];
    std::fill(padded, padded + p[0] * Wp, 0.0f);
    std::fill(padded + (p[0] + H) * Wp, padded + (H + 2 * p[0]) * Wp, 0.0f);
    for (int64_t h = 0; h < H; ++h) {
        float* row = padded + (p[0] + h) * Wp;
        std::fill(row, row + p[1], 0.0f);
        std::copy(x + h * W, x + (h + 1) * W, row + p[1]);
        std::fill(row + p[1] + W, row + Wp, 0.0f);
    }
}

// Stride 1: each row of cols is Ho runs of Wo contiguous pixels of the padded plane, copied by
// loops the compiler vectorises (a memcpy call per run of a few floats cost more than the copy).
inline void unfold_stride1(const float* x, int64_t C, int64_t H, int64_t W, Pair k, Pair p, float* cols, int64_t ld) {
    const int64_t Hp = H + 2 * p[0], Wp = W + 2 * p[1], Ho = Hp - k[0] + 1, Wo = Wp - k[1] + 1;
    float* padded = scratch(3, Hp * Wp);
    for (int64_t c = 0; c < C; ++c) {
        pad_plane(x + c * H * W, H, W, p, padded);
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                float* row = cols + ((c * k[0] + i) * k[1] + j) * ld;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const float* src = padded + (ho + i) * Wp + j;
                    float* dst = row + ho * Wo;
#pragma omp simd
                    for (int64_t wo = 0; wo < Wo; ++wo) dst[wo] = src[wo];
                }
            }
    }
}

// Its adjoint: the runs added onto a zeroed padded plane, whose middle is then added onto grad_x.
inline void fold_stride1(const float* cols, int64_t ld, int64_t C, int64_t H, int64_t W, Pair k, Pair p, float* grad_x) {
    const int64_t Hp = H + 2 * p[0], Wp = W + 2 * p[1], Ho = Hp - k[0] + 1, Wo = Wp - k[1] + 1;
    float* padded = scratch(3, Hp * Wp);
    for (int64_t c = 0; c < C; ++c) {
        std::fill(padded, padded + Hp * Wp, 0.0f);
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                const float* row = cols + ((c * k[0] + i) * k[1] + j) * ld;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const float* src = row + ho * Wo;
                    float* dst = padded + (ho + i) * Wp + j;
#pragma omp simd
                    for (int64_t wo = 0; wo < Wo; ++wo) dst[wo] += src[wo];
                }
            }
        for (int64_t h = 0; h < H; ++h) {
            const float* src = padded + (p[0] + h) * Wp + p[1];
            float* dst = grad_x + (c * H + h) * W;
#pragma omp simd
            for (int64_t w = 0; w < W; ++w) dst[w] += src[w];
        }
    }
}
}  // namespace detail

// unfold (functional/conv.hpp) of one (C, H, W) sample into columns [0, Ho*Wo) of cols, whose rows
// are ld apart: cols[(c, i, j), (ho, wo)] = x_padded[c, sH*ho + i, sW*wo + j].
inline void unfold(const float* x, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* cols, int64_t ld) {
    if (s == Pair{1, 1}) return detail::unfold_stride1(x, C, H, W, k, p, cols, ld);
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
    if (s == Pair{1, 1}) return detail::fold_stride1(cols, ld, C, H, W, k, p, grad_x);
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

namespace detail {
// The sizes of a convolution of x by weight: K = C*kH*kW rows of columns, P = Ho*Wo per sample.
struct ConvSizes {
    int64_t N, C, H, W, O, Ho, Wo, K, P;
    Pair k;
};
inline ConvSizes conv_sizes(const Shape& x, const Shape& weight, Pair stride, Pair padding) {
    const Pair k{weight[2], weight[3]};
    const int64_t Ho = conv_output_size(x[2], k[0], stride[0], padding[0]);
    const int64_t Wo = conv_output_size(x[3], k[1], stride[1], padding[1]);
    return {x[0], x[1], x[2], x[3], weight[0], Ho, Wo, x[1] * k[0] * k[1], Ho * Wo, k};
}

// Samples per block of a chunk: the block's columns (K rows of P each) fit in a core's L2 cache,
// so the product reads them (and its own output) while still there; at least one sample.
inline int64_t block_samples(int64_t K, int64_t P) {
    constexpr int64_t kBlockBytes = 256 * 1024;
    return std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, K * P * int64_t{sizeof(float)}));
}

// The convolution's columns path, over chunks of the batch on the threads, each in blocks of
// samples: a block unfolds its samples into its columns of cols (K, N*P), multiplies once,
// z = W @ those columns (O, n*P, in a per-thread buffer), and hands z to epilogue(n0, n1, z), which
// writes the layer's output from it.
// workspace: the columns of an earlier call (a layer's previous step), reused when of the same
// size, which saves allocating and zero-filling them (unfold writes every element).
template <class Epilogue>
Conv2dCache conv2d_columns_forward(const Tensor& x, const Tensor& weight, Pair stride, Pair padding, bool has_bias,
                                   Tensor workspace, Epilogue epilogue) {
    const ConvSizes z = conv_sizes(x.shape, weight.shape, stride, padding);
    const int64_t NP = z.N * z.P;
    Tensor cols = workspace.numel() == z.K * NP ? std::move(workspace) : Tensor({z.K, NP});
    cols.shape = {z.K, NP};
    const int64_t block = block_samples(z.K, z.P);
    for_chunks(z.N, chunk_count(z.N, z.O * z.K * z.P), [&](int, int64_t c0, int64_t c1) {
        for (int64_t n0 = c0; n0 < c1; n0 += block) {
            const int64_t n1 = std::min(c1, n0 + block), m = (n1 - n0) * z.P;
            for (int64_t n = n0; n < n1; ++n)
                unfold(x.ptr() + n * z.C * z.H * z.W, z.C, z.H, z.W, z.k, stride, padding, cols.ptr() + n * z.P, NP);
            float* product = scratch(0, z.O * m);
            gemm({weight.ptr(), z.O, z.K, z.K}, {cols.ptr() + n0 * z.P, z.K, m, NP}, product, m);
            epilogue(n0, n1, static_cast<const float*>(product));
        }
    });
    return Conv2dCache{.cols = std::move(cols), .weight = weight, .x_shape = x.shape,
                       .out_shape = {z.N, z.O, z.Ho, z.Wo}, .stride = stride, .padding = padding,
                       .has_bias = has_bias};
}

// The gradients of z = W @ cols over chunks of the batch, in the forward's blocks of samples:
// prologue(n0, n1, G) writes dL/dz of the block's samples as G (O, n*P); then
// grad_weight += G @ cols.T, grad_bias += G.sum(columns), grad_cols = W.T @ G folded back per
// sample. The chunks' grad_weight and grad_bias are added in chunk order, so a run repeats bit for
// bit on the same thread count.
template <class Prologue>
Conv2dGrads conv2d_columns_backward(const Conv2dCache& cache, NeedsGrad needs, Prologue prologue) {
    const ConvSizes z = conv_sizes(cache.x_shape, cache.weight.shape, cache.stride, cache.padding);
    const int64_t NP = z.N * z.P;
    const bool want_bias = cache.has_bias && needs.bias;
    Conv2dGrads g;
    if (needs.input) g.grad_input = Tensor(cache.x_shape);
    const int chunks = chunk_count(z.N, z.O * z.K * z.P);
    std::vector<Matrix> grad_weight(needs.weight ? chunks : 0);
    std::vector<Eigen::VectorXf> grad_bias(want_bias ? chunks : 0);
    const int64_t block = block_samples(z.K, z.P);
    for_chunks(z.N, chunks, [&](int t, int64_t c0, int64_t c1) {
        if (needs.weight) grad_weight[t] = Matrix::Zero(z.O, z.K);
        if (want_bias) grad_bias[t] = Eigen::VectorXf::Zero(z.O);
        for (int64_t n0 = c0; n0 < c1; n0 += block) {
            const int64_t n1 = std::min(c1, n0 + block), m = (n1 - n0) * z.P;
            float* G = scratch(1, z.O * m);
            prologue(n0, n1, G);
            if (needs.weight)
                gemm({G, z.O, m, m}, {cache.cols.ptr() + n0 * z.P, z.K, m, NP, true}, grad_weight[t].data(), z.K, true);
            if (want_bias) grad_bias[t] += ConstMatrixMap(G, z.O, m).rowwise().sum();
            if (needs.input) {
                float* grad_cols = scratch(2, z.K * m);
                gemm({cache.weight.ptr(), z.O, z.K, z.K, true}, {G, z.O, m, m}, grad_cols, m);
                for (int64_t n = n0; n < n1; ++n)
                    fold(grad_cols + (n - n0) * z.P, m, z.C, z.H, z.W, z.k, cache.stride, cache.padding,
                         g.grad_input.ptr() + n * z.C * z.H * z.W);
            }
        }
    });
    if (needs.weight) {
        g.grad_weight = Tensor(cache.weight.shape);
        auto total = as_matrix(g.grad_weight, z.O, z.K);
        for (auto& part : grad_weight) total += part;
    }
    if (want_bias) {
        g.grad_bias = Tensor({z.O});
        for (auto& part : grad_bias) VectorMap(g.grad_bias.ptr(), z.O) += part;
    }
    return g;
}
}  // namespace detail

// y[n] = W @ cols[n] + bias, as functional::conv2d_forward; with relu=true, y = max(that, 0) in
// the same pass. workspace: the columns of the layer's previous step (see conv2d_columns_forward).
inline std::pair<Tensor, Conv2dCache> conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                     Pair stride = {1, 1}, Pair padding = {0, 0}, bool relu = false,
                                                     Tensor workspace = {}) {
    const detail::ConvSizes z = detail::conv_sizes(x.shape, weight.shape, stride, padding);
    Tensor out({z.N, z.O, z.Ho, z.Wo});
    const float* b = bias ? bias->ptr() : nullptr;
    auto to_nchw = [&](int64_t n0, int64_t n1, const float* product) {  // (O, n*P) -> NCHW, adding the bias
        const int64_t m = (n1 - n0) * z.P;
        for (int64_t n = n0; n < n1; ++n)
            for (int64_t o = 0; o < z.O; ++o) {
                const float* src = product + o * m + (n - n0) * z.P;
                float* dst = out.ptr() + (n * z.O + o) * z.P;
                const float add = b ? b[o] : 0.0f;
                if (relu) {
#pragma omp simd
                    for (int64_t q = 0; q < z.P; ++q) dst[q] = std::max(src[q] + add, 0.0f);
                } else {
#pragma omp simd
                    for (int64_t q = 0; q < z.P; ++q) dst[q] = src[q] + add;
                }
            }
    };
    Conv2dCache cache = detail::conv2d_columns_forward(x, weight, stride, padding, bias != nullptr,
                                                       std::move(workspace), to_nchw);
    return {std::move(out), std::move(cache)};
}

// The gradients of functional::conv2d_backward: G gathered from NCHW into the columns' layout,
// then the products of conv2d_columns_backward.
inline Conv2dGrads conv2d_backward(const Tensor& grad_output, const Conv2dCache& cache, NeedsGrad needs = {}) {
    check_grad_output("conv2d_backward", grad_output, cache.out_shape);
    const int64_t O = cache.out_shape[1], P = cache.out_shape[2] * cache.out_shape[3];
    return detail::conv2d_columns_backward(cache, needs, [&](int64_t n0, int64_t n1, float* G) {
        const int64_t m = (n1 - n0) * P;
        for (int64_t n = n0; n < n1; ++n)
            for (int64_t o = 0; o < O; ++o)
                std::memcpy(G + o * m + (n - n0) * P, grad_output.ptr() + (n * O + o) * P, P * sizeof(float));
    });
}

}  // namespace handgrad::kernels
