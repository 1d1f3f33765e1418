// Linear with its products split between the threads: the forward and grad_input by rows of the
// batch (each chunk's bias added while its rows are in cache), grad_weight and grad_bias by output
// features, so no chunk's result is summed with another's. Same signatures, cache and math as
// functional/linear.hpp, tested equal to it.
#pragma once

#include "handgrad/functional/linear.hpp"
#include "handgrad/kernels/parallel.hpp"

namespace handgrad::kernels {

using functional::LinearCache;
using functional::LinearGrads;

inline std::pair<Tensor, LinearCache> linear_forward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = x.numel() / std::max<int64_t>(in_features, 1);
    Shape out_shape = x.shape;
    out_shape.back() = out_features;
    Tensor out(out_shape);
    auto y = as_matrix(out, rows, out_features);
    const auto X = as_matrix(x, rows, in_features), Wm = as_matrix(weight, out_features, in_features);
    for_chunks(rows, chunk_count(rows, out_features * in_features), [&](int, int64_t r0, int64_t r1) {
        auto part = y.middleRows(r0, r1 - r0);
        part.noalias() = X.middleRows(r0, r1 - r0) * Wm.transpose();
        if (bias) part.rowwise() += ConstVectorMap(bias->ptr(), out_features).transpose();
    });
    return {std::move(out), LinearCache{.x = x, .weight = weight, .has_bias = bias != nullptr}};
}

inline LinearGrads linear_backward(const Tensor& grad_output, const LinearCache& cache, NeedsGrad needs = {}) {
    check_grad_output("linear_backward", grad_output, cache.out_shape());
    const Tensor& weight = cache.weight;
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = grad_output.numel() / std::max<int64_t>(out_features, 1);
    const auto G = as_matrix(grad_output, rows, out_features);
    const auto X = as_matrix(cache.x, rows, in_features), Wm = as_matrix(weight, out_features, in_features);
    LinearGrads g;
    if (needs.input) {
        g.grad_input = Tensor(cache.x.shape);
        auto gi = as_matrix(g.grad_input, rows, in_features);
        for_chunks(rows, chunk_count(rows, out_features * in_features), [&](int, int64_t r0, int64_t r1) {
            gi.middleRows(r0, r1 - r0).noalias() = G.middleRows(r0, r1 - r0) * Wm;
        });
    }
    const bool want_bias = cache.has_bias && needs.bias;
    if (needs.weight) g.grad_weight = Tensor(weight.shape);
    if (want_bias) g.grad_bias = Tensor({out_features});
    if (needs.weight || want_bias)
        for_chunks(out_features, chunk_count(out_features, rows * in_features), [&](int, int64_t o0, int64_t o1) {
            const auto Gpart = G.middleCols(o0, o1 - o0);
            if (needs.weight)
                as_matrix(g.grad_weight, out_features, in_features).middleRows(o0, o1 - o0).noalias() = Gpart.transpose() * X;
            if (want_bias) VectorMap(g.grad_bias.ptr() + o0, o1 - o0) = Gpart.colwise().sum().transpose();
        });
    return g;
}

}  // namespace handgrad::kernels
