// ReLU over chunks of the elements on the threads, vectorised (same signatures as
// functional/activation.hpp, tested equal to it). The other activations call exp or tanh per
// element, where the reference's loop is already the cost.
#pragma once

#include "handgrad/functional/activation.hpp"
#include "handgrad/kernels/parallel.hpp"

namespace handgrad::kernels {

inline std::pair<Tensor, Tensor> relu_forward(const Tensor& x) {
    Tensor out = Tensor::empty(x.shape);  // every value written below
    const float* in = x.ptr();
    float* y = out.ptr();
    for_each_index(x.numel(), [in, y](int64_t i) { y[i] = in[i] > 0.0f ? in[i] : 0.0f; });
    return {out, std::move(out)};  // one copy for the next layer, the other kept for backward
}

inline Tensor relu_backward(const Tensor& grad_output, const Tensor& out) {
    check_grad_output("relu_backward", grad_output, out.shape);
    Tensor grad = Tensor::empty(out.shape);
    const float *g = grad_output.ptr(), *y = out.ptr();
    float* d = grad.ptr();
    for_each_index(out.numel(), [g, y, d](int64_t i) { d[i] = y[i] > 0.0f ? g[i] : 0.0f; });
    return grad;
}

}  // namespace handgrad::kernels
