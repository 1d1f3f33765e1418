// Linear (fully connected) layer: the math, once, as a forward/backward pair
// (mirrors src/handgrad/functional/linear.py).
#pragma once

#include "handgrad/tensor.hpp"

namespace handgrad::functional {

struct LinearCache {
    Tensor x;       // backward needs x (for grad_weight) ...
    Tensor weight;  // ... and weight (for grad_input): a copy, so the cache never outlives what it reads
    bool has_bias = false;
    // y's shape, which grad_output must have: x's with the last axis out_features
    Shape out_shape() const {
        Shape s = x.shape;
        s.back() = weight.shape[0];
        return s;
    }
};

struct LinearGrads {
    Tensor grad_input, grad_weight, grad_bias;  // empty where not asked for
};

// y = x @ weight.T + bias
// Shapes: x (*, in_features), weight (out_features, in_features), bias (out_features,) -> y (*, out_features).
inline std::pair<Tensor, LinearCache> linear_forward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = x.numel() / in_features;
    Shape out_shape = x.shape;
    out_shape.back() = out_features;
    Tensor out(out_shape);
    auto y = as_matrix(out, rows, out_features);
    y.noalias() = as_matrix(x, rows, in_features) * as_matrix(weight, out_features, in_features).transpose();
    if (bias) y.rowwise() += ConstVectorMap(bias->ptr(), out_features).transpose();
    return {std::move(out), LinearCache{.x = x, .weight = weight, .has_bias = bias != nullptr}};
}

// Gradients of L through y = x @ weight.T + bias, with G = dL/dy of shape (*, out_features):
//     grad_input  = G @ weight            (*, in_features)
//     grad_weight = G.T @ x               (out_features, in_features), summed over all rows
//     grad_bias   = G.sum(rows)           (out_features,)
inline LinearGrads linear_backward(const Tensor& grad_output, const LinearCache& cache, NeedsGrad needs = {}) {
    check_grad_output("linear_backward", grad_output, cache.out_shape());
    const Tensor& weight = cache.weight;
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = grad_output.numel() / out_features;
    auto G = as_matrix(grad_output, rows, out_features);
    LinearGrads g;
    if (needs.input) {
        g.grad_input = Tensor(cache.x.shape);
        as_matrix(g.grad_input, rows, in_features).noalias() = G * as_matrix(weight, out_features, in_features);
    }
    if (needs.weight) {
        g.grad_weight = Tensor(weight.shape);
        as_matrix(g.grad_weight, out_features, in_features).noalias() =
            G.transpose() * as_matrix(cache.x, rows, in_features);
    }
    if (cache.has_bias && needs.bias) {
        g.grad_bias = Tensor({out_features});
        VectorMap(g.grad_bias.ptr(), out_features) = G.colwise().sum().transpose();
    }
    return g;
}

}  // namespace handgrad::functional
