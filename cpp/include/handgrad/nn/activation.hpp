// Activations, each naming its functional pair (mirrors src/handgrad/nn/activation.py).
#pragma once

#include "handgrad/functional/activation.hpp"
#include "handgrad/kernels/activation.hpp"
#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

// An activation whose math is a functional forward/backward pair: each activation only names its
// pair (as _Activation in nn/activation.py).
template <typename Cache>
using Activation = FunctionalLayer<Cache>;

// y = max(x, 0);  dL/dx = G * [y > 0]
class ReLU : public Activation<Tensor> {
public:
    std::string type() const override { return "ReLU"; }

protected:
    std::pair<Tensor, Tensor> run_forward(const Tensor& x) const override {
        return kernels::enabled() ? kernels::relu_forward(x) : functional::relu_forward(x);
    }
    Tensor run_backward(const Tensor& g, const Tensor& out) const override {
        return kernels::enabled() ? kernels::relu_backward(g, out) : functional::relu_backward(g, out);
    }
};

// y = x if x > 0 else negative_slope * x;  dL/dx = G * (1 or negative_slope)
class LeakyReLU : public Activation<functional::LeakyReLUCache> {
public:
    explicit LeakyReLU(float negative_slope = 0.01f) : negative_slope(negative_slope) {}
    std::string type() const override { return "LeakyReLU"; }
    std::string extra_repr() const override { return "negative_slope=" + std::to_string(negative_slope); }
    float negative_slope;

protected:
    std::pair<Tensor, functional::LeakyReLUCache> run_forward(const Tensor& x) const override {
        return functional::leaky_relu_forward(x, negative_slope);
    }
    Tensor run_backward(const Tensor& g, const functional::LeakyReLUCache& c) const override {
        return functional::leaky_relu_backward(g, c);
    }
};

// y = 1 / (1 + exp(-x));  dL/dx = G * y * (1 - y)
class Sigmoid : public Activation<Tensor> {
public:
    std::string type() const override { return "Sigmoid"; }

protected:
    std::pair<Tensor, Tensor> run_forward(const Tensor& x) const override { return functional::sigmoid_forward(x); }
    Tensor run_backward(const Tensor& g, const Tensor& out) const override {
        return functional::sigmoid_backward(g, out);
    }
};

// y = tanh(x);  dL/dx = G * (1 - y^2)
class Tanh : public Activation<Tensor> {
public:
    std::string type() const override { return "Tanh"; }

protected:
    std::pair<Tensor, Tensor> run_forward(const Tensor& x) const override { return functional::tanh_forward(x); }
    Tensor run_backward(const Tensor& g, const Tensor& out) const override { return functional::tanh_backward(g, out); }
};

}  // namespace handgrad::nn
