// Linear with its products split between the threads: the forward and grad_input by rows of the
// batch (each chunk's bias added while its rows are in cache), grad_weight and grad_bias by output
// features, so no chunk's result is summed with another's. Same signatures, cache and math as
// functional/linear.hpp, tested equal to it.
#pragma once

#include "handgrad/functional/linear.hpp"
#include "handgrad/kernels/gemm.hpp"
#include "handgrad/kernels/parallel.hpp"

namespace handgrad::kernels {

using functional::LinearCache;
using functional::LinearGrads;

// y = x @ weight.T + bias; with relu=true, y = max(that, 0) in the same pass over each chunk's rows
// (the fused Linear -> ReLU, kernels/fused.hpp), with ReLU's rule: NaN becomes 0. Keeps nothing
// for backward: the forward alone, as layers run it under NoGradGuard.
inline Tensor linear_output(const Tensor& x, const Tensor& weight, const Tensor* bias, bool relu) {
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = x.numel() / std::max<int64_t>(in_features, 1);
    Shape out_shape = x.shape;
    out_shape.back() = out_features;
    Tensor out = Tensor::empty(out_shape);  // every value written by the product
    float* y = out.ptr();
    const float* b = bias ? bias->ptr() : nullptr;
    for_chunks(rows, chunk_count(rows, out_features * in_features), [&](int, int64_t r0, int64_t r1) {
        gemm({x.ptr() + r0 * in_features, r1 - r0, in_features, in_features},
             {weight.ptr(), out_features, in_features, in_features, true}, y + r0 * out_features, out_features);
        for (int64_t r = r0; r < r1 && (b || relu); ++r) {  // while the chunk's rows are in cache
            float* row = y + r * out_features;
            if (b) {
#pragma omp simd
                for (int64_t j = 0; j < out_features; ++j) row[j] += b[j];
            }
            if (relu) {
#pragma omp simd
                for (int64_t j = 0; j < out_features; ++j) row[j] = row[j] > 0.0f ? row[j] : 0.0f;
            }
        }
    });
    return out;
}

inline std::pair<Tensor, LinearCache> linear_forward(const Tensor& x, const Tensor& weight, const Tensor* bias) {
    Tensor out = linear_output(x, weight, bias, false);
    return {std::move(out), LinearCache{.x = x, .weight = weight, .has_bias = bias != nullptr}};
}

namespace detail {
// Linear's gradients from G = dL/dy and the forward's x and weight.
inline LinearGrads linear_grads(const Tensor& grad_output, const Tensor& x, const Tensor& weight, bool has_bias,
                                NeedsGrad needs) {
    const int64_t out_features = weight.shape[0], in_features = weight.shape[1];
    const int64_t rows = grad_output.numel() / std::max<int64_t>(out_features, 1);
    const float *G = grad_output.ptr(), *X = x.ptr();
    LinearGrads g;
    if (needs.input) {
        g.grad_input = Tensor::empty(x.shape);  // each chunk of rows written by its product
        for_chunks(rows, chunk_count(rows, out_features * in_features), [&](int, int64_t r0, int64_t r1) {
            gemm({G + r0 * out_features, r1 - r0, out_features, out_features},
                 {weight.ptr(), out_features, in_features, in_features}, g.grad_input.ptr() + r0 * in_features,
                 in_features);
        });
    }
    const bool want_bias = has_bias && needs.bias;
    if (needs.weight) g.grad_weight = Tensor::empty(weight.shape);  // each row by one chunk's product
    if (want_bias) g.grad_bias = Tensor::empty({out_features});
    if (needs.weight || want_bias)
        for_chunks(out_features, chunk_count(out_features, rows * in_features), [&](int, int64_t o0, int64_t o1) {
            if (needs.weight)  // rows o0..o1 of G.T @ X
                gemm({G + o0, rows, o1 - o0, out_features, true}, {X, rows, in_features, in_features},
                     g.grad_weight.ptr() + o0 * in_features, in_features);
            if (want_bias)
                VectorMap(g.grad_bias.ptr() + o0, o1 - o0) =
                    ConstMatrixMap(G, rows, out_features).middleCols(o0, o1 - o0).colwise().sum().transpose();
        });
    return g;
}
}  // namespace detail

inline LinearGrads linear_backward(const Tensor& grad_output, const LinearCache& cache, NeedsGrad needs = {}) {
    check_grad_output("linear_backward", grad_output, cache.out_shape());
    return detail::linear_grads(grad_output, cache.x, cache.weight, cache.has_bias, needs);
}

}  // namespace handgrad::kernels
