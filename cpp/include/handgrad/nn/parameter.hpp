// A trainable tensor and the gradient accumulated into it (mirrors src/handgrad/nn/parameter.py).
#pragma once

#include "handgrad/tensor.hpp"

namespace handgrad {

struct Parameter {
    Tensor data, grad;  // grad is empty until the first backward
    bool requires_grad = true;

    // grad += g. An empty g (a gradient that was not asked for) adds nothing; any other g must have
    // the parameter's shape, or the sum would read past one of the two.
    // g is taken by value, so a gradient handed over with std::move becomes grad without a copy.
    void accumulate_grad(Tensor g, const std::string& where = "Parameter", const std::string& argument = "gradient") {
        if (g.data.empty() && g.shape.empty()) return;
        if (g.shape != data.shape || g.numel() != data.numel())
            throw ShapeError(where, argument, fmt_shape(data.shape) + " (the parameter's)", g.shape);
        if (grad.data.empty()) grad = std::move(g);
        else
            for (int64_t i = 0; i < grad.numel(); ++i) grad[i] += g[i];
    }
};

}  // namespace handgrad
