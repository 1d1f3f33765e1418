// 2-D convolution through per-sample columns: unfold every receptive field into a column, then one
// matrix product per sample (mirrors the fast path of src/handgrad/functional/conv.py).
//
// Layout (NCHW, as PyTorch): x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,), y (N, O, Ho, Wo) with
//     Ho = (H + pT + pB - dH*(kH - 1) - 1) // sH + 1,   Wo likewise.
// The input is padded by (pT, pB, pL, pR), with zeros or with its own pixels (padding_mode); tap
// (i, j) of a kernel dilated by (dH, dW) reads pixel (dH*i, dW*j) of its window; with G groups,
// output channels block g (O/G of them) sees only input channels block g (C/G).
#pragma once

#include "handgrad/tensor.hpp"

#include <array>
#include <cstdlib>
#include <string>

namespace handgrad::functional {

using Pair = std::array<int64_t, 2>;  // (h, w), as PyTorch's kernel_size / stride / padding

inline int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t padding) {
    // floor division as Python's //, also when the padded input is smaller than the kernel
    const int64_t span = size + 2 * padding - kernel;
    return (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
}

// The extent a kernel of k taps spans when dilated by d: d*(k - 1) + 1.
inline int64_t dilated_size(int64_t kernel, int64_t dilation) { return dilation * (kernel - 1) + 1; }

// (C, H, W) of one sample -> cols (C*kH*kW, Ho*Wo) with
//     cols[(c, i, j), (ho, wo)] = x_padded[c, sH*ho + dH*i, sW*wo + dW*j]   (0 outside the input).
// Column p of cols is the receptive field of output pixel p.
inline void unfold(const float* x, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* cols,
                   Pair d = {1, 1}) {
    const int64_t Ho = conv_output_size(H, dilated_size(k[0], d[0]), s[0], p[0]);
    const int64_t Wo = conv_output_size(W, dilated_size(k[1], d[1]), s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                float* row = cols + ((c * k[0] + i) * k[1] + j) * Ho * Wo;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const int64_t h = s[0] * ho + d[0] * i - p[0];
                    for (int64_t wo = 0; wo < Wo; ++wo) {
                        const int64_t w = s[1] * wo + d[1] * j - p[1];
                        row[ho * Wo + wo] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(c * H + h) * W + w] : 0.0f;
                    }
                }
            }
}

// The adjoint of unfold: add cols (C*kH*kW, Ho*Wo) back onto the pixels each entry was read from.
// A pixel inside several windows (kernel > stride) receives the sum. grad_x must start at zero.
inline void fold(const float* cols, int64_t C, int64_t H, int64_t W, Pair k, Pair s, Pair p, float* grad_x,
                 Pair d = {1, 1}) {
    const int64_t Ho = conv_output_size(H, dilated_size(k[0], d[0]), s[0], p[0]);
    const int64_t Wo = conv_output_size(W, dilated_size(k[1], d[1]), s[1], p[1]);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
                const float* row = cols + ((c * k[0] + i) * k[1] + j) * Ho * Wo;
                for (int64_t ho = 0; ho < Ho; ++ho) {
                    const int64_t h = s[0] * ho + d[0] * i - p[0];
                    if (h < 0 || h >= H) continue;
                    for (int64_t wo = 0; wo < Wo; ++wo) {
                        const int64_t w = s[1] * wo + d[1] * j - p[1];
                        if (w >= 0 && w < W) grad_x[(c * H + h) * W + w] += row[ho * Wo + wo];
                    }
                }
            }
}

// -- padding: zeros, or the input's own pixels -------------------------------------------------------
using Pads = std::array<int64_t, 4>;  // (top, bottom, left, right)

// torch.nn.Conv2d's padding modes: zeros, or copies of the input's pixels (mirrored without
// repeating the edge, the edge repeated, wrapped around).
enum class PaddingMode { zeros, reflect, replicate, circular };
inline const std::array<std::string, 4>& padding_mode_names() {
    static const std::array<std::string, 4> names{"zeros", "reflect", "replicate", "circular"};
    return names;
}
inline std::string padding_mode_name(PaddingMode mode) { return padding_mode_names()[static_cast<size_t>(mode)]; }

// (top, bottom, left, right) for torch's padding: (pH, pW) on both sides, or, by name, "valid"
// (none) or "same" (d*(k - 1) in all per axis, the odd one at the bottom/right, as torch pads it).
inline Pads conv_padding(Pair padding, const std::string& name, Pair kernel, Pair dilation) {
    if (name == "valid") return {0, 0, 0, 0};
    if (name == "same") {
        const int64_t th = dilation[0] * (kernel[0] - 1), tw = dilation[1] * (kernel[1] - 1);
        return {th / 2, th - th / 2, tw / 2, tw - tw / 2};
    }
    return {padding[0], padding[0], padding[1], padding[1]};
}

// The input index that padded position q (counted from the input's first pixel, so q < 0 in the
// padding before it) copies along an axis of `size`: reflect mirrors about the edge pixel (needs
// padding < size), replicate repeats it, circular wraps (padding <= size); -1 for a zero.
inline int64_t pad_source(int64_t q, int64_t size, PaddingMode mode) {
    if (q >= 0 && q < size) return q;
    switch (mode) {
        case PaddingMode::reflect: return (size - 1) - std::abs((size - 1) - std::abs(q));
        case PaddingMode::replicate: return q < 0 ? 0 : size - 1;
        case PaddingMode::circular: return ((q % size) + size) % size;
        default: return -1;
    }
}

// x (N, C, H, W) padded by pads: x_padded[n, c, r, q] = x[n, c, rows[r], cols[q]] (0 where a source is -1).
inline Tensor conv_pad(const Tensor& x, Pads pads, PaddingMode mode) {
    const int64_t planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t Hp = H + pads[0] + pads[1], Wp = W + pads[2] + pads[3];
    Tensor out({x.shape[0], x.shape[1], Hp, Wp});
    for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t r = 0; r < Hp; ++r) {
            const int64_t h = pad_source(r - pads[0], H, mode);
            for (int64_t q = 0; q < Wp && h >= 0; ++q) {
                const int64_t w = pad_source(q - pads[2], W, mode);
                if (w >= 0) out[(plane * Hp + r) * Wp + q] = x[(plane * H + h) * W + w];
            }
        }
    return out;
}

// The adjoint of conv_pad: dL/dx[n, c, h, w] gains dL/dx_padded of every padded pixel copied from
// (h, w); grad_x (N, C, H, W) must start at zero.
inline void conv_unpad(const Tensor& grad_padded, Pads pads, PaddingMode mode, Tensor& grad_x) {
    const int64_t planes = grad_x.shape[0] * grad_x.shape[1], H = grad_x.shape[2], W = grad_x.shape[3];
    const int64_t Hp = grad_padded.shape[2], Wp = grad_padded.shape[3];
    for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t r = 0; r < Hp; ++r) {
            const int64_t h = pad_source(r - pads[0], H, mode);
            for (int64_t q = 0; q < Wp && h >= 0; ++q) {
                const int64_t w = pad_source(q - pads[2], W, mode);
                if (w >= 0) grad_x[(plane * H + h) * W + w] += grad_padded[(plane * Hp + r) * Wp + q];
            }
        }
}

// -- the pair -----------------------------------------------------------------------------------------
// What a convolution does beyond its weights: stride, padding (pads on each side, and their mode),
// dilation and groups. The plain convolution is stride s, pads (p, p, q, q) of zeros, d = 1, G = 1.
struct Conv2dGeometry {
    Pair stride{1, 1};
    Pads pads{0, 0, 0, 0};
    Pair dilation{1, 1};
    int64_t groups = 1;
    PaddingMode padding_mode = PaddingMode::zeros;

    // Zeros alike on both sides of each axis: unfold pads on the fly; otherwise the input is padded first.
    bool pads_on_the_fly() const {
        return padding_mode == PaddingMode::zeros && pads[0] == pads[1] && pads[2] == pads[3];
    }
};

struct Conv2dCache {
    Tensor cols;    // (N, C*kH*kW, Ho*Wo): grad_weight = sum_n G[n] @ cols[n].T
    Tensor weight;  // grad_cols = W.T @ G[n]: a copy, so the cache never outlives what it reads
    Shape x_shape, out_shape;  // out_shape (N, O, Ho, Wo): what grad_output must be
    Pair stride{1, 1}, padding{0, 0};
    bool has_bias = false;
    Conv2dGeometry geometry;  // fold's dilation, groups, and the padding to undo
};

struct Conv2dGrads {
    Tensor grad_input, grad_weight, grad_bias;  // empty where not asked for
};

// y[n, o] = bias[o] + sum_{c in o's group, i, j} weight[o, c, i, j] * x_padded[n, c, sH*ho + dH*i, sW*wo + dW*j]
// Per sample and group g, one matrix product: y[n, o in g] = W_g @ cols[n]_g + bias, with W_g g's rows
// of weight.reshape(O, C/G*kH*kW) and cols[n]_g g's rows of unfold(x_padded[n]); y[n] (O, Ho*Wo) is
// already NCHW.
inline std::pair<Tensor, Conv2dCache> conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                     const Conv2dGeometry& geometry) {
    const auto& [stride, pads, dilation, groups, mode] = geometry;
    const bool on_the_fly = geometry.pads_on_the_fly();
    const Tensor padded = on_the_fly ? Tensor() : conv_pad(x, pads, mode);
    const Tensor& source = on_the_fly ? x : padded;
    const Pair padding = on_the_fly ? Pair{pads[0], pads[2]} : Pair{0, 0};
    const int64_t N = x.shape[0], C = x.shape[1], H = source.shape[2], W = source.shape[3];
    const int64_t O = weight.shape[0], group_out = O / groups;
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t Ho = conv_output_size(H, dilated_size(k[0], dilation[0]), stride[0], padding[0]);
    const int64_t Wo = conv_output_size(W, dilated_size(k[1], dilation[1]), stride[1], padding[1]);
    const int64_t K = C * k[0] * k[1], group_k = K / groups, P = Ho * Wo;
    Tensor cols({N, K, P});
    Tensor out({N, O, Ho, Wo});
    auto Wm = as_matrix(weight, O, group_k);
    for (int64_t n = 0; n < N; ++n) {
        unfold(source.ptr() + n * C * H * W, C, H, W, k, stride, padding, cols.ptr() + n * K * P, dilation);
        auto y = as_matrix(out.ptr() + n * O * P, O, P);
        for (int64_t g = 0; g < groups; ++g)
            y.middleRows(g * group_out, group_out).noalias() =
                Wm.middleRows(g * group_out, group_out) * as_matrix(cols.ptr() + (n * K + g * group_k) * P, group_k, P);
        if (bias) y.colwise() += ConstVectorMap(bias->ptr(), O);
    }
    return {std::move(out), Conv2dCache{.cols = std::move(cols), .weight = weight, .x_shape = x.shape,
                                         .out_shape = {N, O, Ho, Wo}, .stride = stride, .padding = padding,
                                         .has_bias = bias != nullptr, .geometry = geometry}};
}

// The plain convolution: stride, and zero padding (pH, pW) on both sides.
inline std::pair<Tensor, Conv2dCache> conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                     Pair stride = {1, 1}, Pair padding = {0, 0}) {
    return conv2d_forward(x, weight, bias,
                          Conv2dGeometry{.stride = stride, .pads = {padding[0], padding[0], padding[1], padding[1]}});
}

// With G[n] = dL/dy[n] as a matrix (O, Ho*Wo) and G[n]_g its rows of group g, the gradients of
// y[n, o in g] = W_g @ cols[n]_g + bias are
//     grad_weight[o in g] = sum_n G[n]_g @ cols[n]_g.T      -> reshaped to (O, C/G, kH, kW)
//     grad_bias           = sum_n G[n].sum(columns)          (O,)
//     grad_input          = unpad(fold(W_g.T @ G[n]_g))      (N, C, H, W)
inline Conv2dGrads conv2d_backward(const Tensor& grad_output, const Conv2dCache& cache, NeedsGrad needs = {}) {
    check_grad_output("conv2d_backward", grad_output, cache.out_shape);
    const Tensor& weight = cache.weight;
    const Conv2dGeometry& geometry = cache.geometry;
    const bool on_the_fly = geometry.pads_on_the_fly();
    // fold writes into the padded input's gradient, which unpad then adds back onto x's pixels
    const Shape& x_shape = cache.x_shape;
    const Shape source_shape = on_the_fly ? x_shape
                                          : Shape{x_shape[0], x_shape[1], x_shape[2] + geometry.pads[0] + geometry.pads[1],
                                                  x_shape[3] + geometry.pads[2] + geometry.pads[3]};
    const int64_t N = x_shape[0], C = x_shape[1], H = source_shape[2], W = source_shape[3];
    const int64_t O = weight.shape[0], groups = geometry.groups, group_out = O / groups;
    const Pair k{weight.shape[2], weight.shape[3]};
    const int64_t K = C * k[0] * k[1], group_k = K / groups, P = grad_output.shape[2] * grad_output.shape[3];
    Conv2dGrads g;
    if (needs.weight) g.grad_weight = Tensor(weight.shape);
    if (cache.has_bias && needs.bias) g.grad_bias = Tensor({O});
    Tensor grad_source = needs.input ? Tensor(source_shape) : Tensor();
    Matrix grad_cols(K, P);
    for (int64_t n = 0; n < N; ++n) {
        auto G = as_matrix(grad_output.ptr() + n * O * P, O, P);
        for (int64_t gr = 0; gr < groups; ++gr) {
            const auto G_g = G.middleRows(gr * group_out, group_out);
            if (needs.weight)
                as_matrix(g.grad_weight, O, group_k).middleRows(gr * group_out, group_out).noalias() +=
                    G_g * as_matrix(cache.cols.ptr() + (n * K + gr * group_k) * P, group_k, P).transpose();
            if (needs.input)
                grad_cols.middleRows(gr * group_k, group_k).noalias() =
                    as_matrix(weight, O, group_k).middleRows(gr * group_out, group_out).transpose() * G_g;
        }
        if (cache.has_bias && needs.bias) VectorMap(g.grad_bias.ptr(), O) += G.rowwise().sum();
        if (needs.input)
            fold(grad_cols.data(), C, H, W, k, cache.stride, cache.padding, grad_source.ptr() + n * C * H * W,
                 geometry.dilation);
    }
    if (needs.input && on_the_fly) g.grad_input = std::move(grad_source);
    else if (needs.input) {
        g.grad_input = Tensor(x_shape);
        conv_unpad(grad_source, geometry.pads, geometry.padding_mode, g.grad_input);
    }
    return g;
}

}  // namespace handgrad::functional
