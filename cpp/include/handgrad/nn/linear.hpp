// Linear and Flatten (mirrors src/handgrad/nn/linear.py).
#pragma once

#include "handgrad/functional/linear.hpp"
#include "handgrad/kernels/linear.hpp"
#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

struct LinearOptions {
    int64_t in_features = 0, out_features = 0;
    bool bias = true;
};

// y = x @ weight.T + bias;  grad_input = G @ weight, grad_weight = G.T @ x, grad_bias = G.sum(0).
// Shape: input (*, in_features) -> output (*, out_features); weight (out_features, in_features).
//     nn::Linear layer({.in_features = 784, .out_features = 10});
class Linear : public WeightedLayer {
public:
    explicit Linear(LinearOptions options) : options(options) {
        if (options.in_features < 0 || options.out_features < 0)
            throw HandgradError("Linear", "in_features and out_features must be >= 0, got " +
                                              std::to_string(options.in_features) + " and " +
                                              std::to_string(options.out_features));
        make_parameters({options.out_features, options.in_features}, options.bias);
    }

    Tensor forward(const Tensor& x) override {
        if (x.ndim() < 1 || x.shape.back() != options.in_features)
            throw ShapeError(repr(), "input", "(*, " + std::to_string(options.in_features) + ")", x.shape);
        const Tensor* b = bias ? &bias->data : nullptr;
        if (kernels::enabled() && !is_grad_enabled()) {  // the product alone, x not kept
            forget_saved();
            return kernels::linear_output(x, weight.data, b, false);
        }
        auto [out, c] = kernels::enabled() ? kernels::linear_forward(x, weight.data, b)
                                           : functional::linear_forward(x, weight.data, b);
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const auto& c = saved(cache, grad_output);
        auto g = kernels::enabled() ? kernels::linear_backward(grad_output, c, needs(input_grad))
                                    : functional::linear_backward(grad_output, c, needs(input_grad));
        return accumulate(g);
    }
    std::string type() const override { return "Linear"; }
    std::string extra_repr() const override {
        return "in_features=" + std::to_string(options.in_features) + ", out_features=" +
               std::to_string(options.out_features) + ", bias=" + (options.bias ? "True" : "False");
    }

    LinearOptions options;

private:
    std::optional<functional::LinearCache> cache;
};

// Collapse dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default. Negative dims
// count from the end, as Python's.
class Flatten : public Module {
public:
    explicit Flatten(int start_dim = 1, int end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
    Tensor forward(const Tensor& x) override { return forward(Tensor(x)); }
    Tensor forward(Tensor&& x) override {  // the same values under the new shape: no copy
        const int start = start_dim < 0 ? start_dim + x.ndim() : start_dim;
        const int end = end_dim < 0 ? end_dim + x.ndim() : end_dim;
        if (start < 0 || end >= x.ndim() || start > end)
            throw ShapeError(repr(), "input", "with dims " + std::to_string(start_dim) + " to " +
                                                  std::to_string(end_dim) + " in order", x.shape);
        Shape shape(x.shape.begin(), x.shape.begin() + start);
        int64_t merged = 1;
        for (int d = start; d <= end; ++d) merged *= x.shape[d];
        shape.push_back(merged);
        shape.insert(shape.end(), x.shape.begin() + end + 1, x.shape.end());
        save_for_backward(input_shape, x.shape, shape);  // backward needs only the input's shape
        x.shape = std::move(shape);
        return std::move(x);
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const Shape& shape = saved(input_shape, grad_output);
        return input_grad ? grad_output.reshape(shape) : Tensor();
    }
    std::string type() const override { return "Flatten"; }
    std::string extra_repr() const override {
        return "start_dim=" + std::to_string(start_dim) + ", end_dim=" + std::to_string(end_dim);
    }
    int start_dim, end_dim;

private:
    std::optional<Shape> input_shape;
};

// y = x;  dL/dx = G.
class Identity : public Module {
public:
    Tensor forward(const Tensor& x) override {
        save_for_backward(shape, x.shape, x.shape);  // nothing to keep but the shape grad_output must have
        return x;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        saved(shape, grad_output);
        return input_grad ? grad_output : Tensor();
    }
    std::string type() const override { return "Identity"; }

private:
    std::optional<Shape> shape;
};

}  // namespace handgrad::nn
