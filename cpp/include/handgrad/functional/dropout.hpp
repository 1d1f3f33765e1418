// Inverted dropout: zero each element with probability p and scale the survivors by 1/(1-p), so the
// expected output equals the input and evaluation needs no rescaling
// (mirrors src/handgrad/functional/dropout.py; the draws come from a C++ generator, not NumPy's).
#pragma once

#include "handgrad/tensor.hpp"

#include <algorithm>
#include <random>

namespace handgrad::functional {

// y = x * mask,  mask = [u >= p] / (1 - p) with u ~ U[0, 1) per element (all zeros when p = 1).
// Returns (y, mask): backward needs only the mask.
inline std::pair<Tensor, Tensor> dropout_forward(const Tensor& x, float p, std::mt19937_64& generator) {
    Tensor mask(x.shape);
    if (p < 1.0f) {
        std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
        const float scale = 1.0f / (1.0f - p);
        for (float& m : mask.data) m = uniform(generator) >= p ? scale : 0.0f;
    }
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = x[i] * mask[i];
    return {std::move(out), std::move(mask)};
}

// Channel-wise: y = x * mask with one draw [u >= p] / (1 - p) per (sample, channel), shared by every
// position of that channel ((N, C, H, W), or (N, C, L) as torch). Returns (y, mask), the mask
// spelled out to x's shape so that dropout_backward serves both.
inline std::pair<Tensor, Tensor> dropout2d_forward(const Tensor& x, float p, std::mt19937_64& generator) {
    const int64_t planes = x.shape[0] * x.shape[1], positions = planes ? x.numel() / planes : 0;
    Tensor mask(x.shape);
    if (p < 1.0f) {
        std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
        const float scale = 1.0f / (1.0f - p);
        for (int64_t plane = 0; plane < planes; ++plane) {
            const float m = uniform(generator) >= p ? scale : 0.0f;
            std::fill(mask.ptr() + plane * positions, mask.ptr() + (plane + 1) * positions, m);
        }
    }
    Tensor out(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = x[i] * mask[i];
    return {std::move(out), std::move(mask)};
}

// dL/dx = G * mask
inline Tensor dropout_backward(const Tensor& grad_output, const Tensor& mask) {
    check_grad_output("dropout_backward", grad_output, mask.shape);
    Tensor grad(grad_output.shape);
    for (int64_t i = 0; i < grad.numel(); ++i) grad[i] = grad_output[i] * mask[i];
    return grad;
}

}  // namespace handgrad::functional
