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
    explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
    std::string type() const override { return "LeakyReLU"; }
    std::string extra_repr() const override { return "negative_slope=" + py_repr(negative_slope); }
    double negative_slope;  // as Python's float, so the checkpoint keeps it exactly

protected:
    std::pair<Tensor, functional::LeakyReLUCache> run_forward(const Tensor& x) const override {
        return functional::leaky_relu_forward(x, static_cast<float>(negative_slope));
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

// y = x if x > 0 else alpha * (exp(x) - 1);  dL/dx = G * (1 if x > 0 else y + alpha)
class ELU : public Activation<functional::ELUCache> {
public:
    explicit ELU(double alpha = 1.0) : alpha(alpha) {}
    std::string type() const override { return "ELU"; }
    std::string extra_repr() const override { return "alpha=" + py_repr(alpha); }
    double alpha;  // as Python's float, so the checkpoint keeps it exactly

protected:
    std::pair<Tensor, functional::ELUCache> run_forward(const Tensor& x) const override {
        return functional::elu_forward(x, static_cast<float>(alpha));
    }
    Tensor run_backward(const Tensor& g, const functional::ELUCache& c) const override {
        return functional::elu_backward(g, c);
    }
};

// y = x * Phi(x) ('none') or x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 ('tanh');
// dL/dx = G * (Phi(x) + x * phi(x)), or the tanh form's derivative
class GELU : public Activation<functional::GELUCache> {
public:
    explicit GELU(std::string approximate = "none") : approximate(std::move(approximate)) {
        if (this->approximate != "none" && this->approximate != "tanh")
            throw HandgradError("GELU", "approximate must be 'none' or 'tanh', got '" + this->approximate + "'");
    }
    std::string type() const override { return "GELU"; }
    std::string extra_repr() const override { return "approximate='" + approximate + "'"; }
    std::string approximate;

protected:
    std::pair<Tensor, functional::GELUCache> run_forward(const Tensor& x) const override {
        return functional::gelu_forward(x, approximate == "tanh");
    }
    Tensor run_backward(const Tensor& g, const functional::GELUCache& c) const override {
        return functional::gelu_backward(g, c);
    }
};

// y = x * sigmoid(x);  dL/dx = G * s * (1 + x * (1 - s)),  s = sigmoid(x)
class SiLU : public Activation<functional::SiLUCache> {
public:
    std::string type() const override { return "SiLU"; }

protected:
    std::pair<Tensor, functional::SiLUCache> run_forward(const Tensor& x) const override {
        return functional::silu_forward(x);
    }
    Tensor run_backward(const Tensor& g, const functional::SiLUCache& c) const override {
        return functional::silu_backward(g, c);
    }
};

// y = log(1 + exp(beta * x)) / beta, y = x where beta * x > threshold;  dL/dx = G * sigmoid(beta * x) (G where linear)
class Softplus : public Activation<functional::SoftplusCache> {
public:
    explicit Softplus(double beta = 1.0, double threshold = 20.0) : beta(beta), threshold(threshold) {}
    std::string type() const override { return "Softplus"; }
    std::string extra_repr() const override { return "beta=" + py_repr(beta) + ", threshold=" + py_repr(threshold); }
    double beta, threshold;  // as Python's floats, so the checkpoint keeps them exactly

protected:
    std::pair<Tensor, functional::SoftplusCache> run_forward(const Tensor& x) const override {
        return functional::softplus_forward(x, static_cast<float>(beta), threshold);
    }
    Tensor run_backward(const Tensor& g, const functional::SoftplusCache& c) const override {
        return functional::softplus_backward(g, c);
    }
};

// y_i = exp(x_i) / sum_j exp(x_j) along dim;  dL/dx_i = y_i * (G_i - sum_j G_j y_j).
// log = true (LogSoftmax): y_i = x_i - log sum_j exp(x_j);  dL/dx_i = G_i - softmax(x)_i * sum_j G_j.
// dtype ("float32", "float64" or none) is kept for the checkpoint: the C++ computes in float32 with
// float64 sums either way.
class Softmax : public Activation<functional::SoftmaxCache> {
public:
    explicit Softmax(int dim = -1, std::optional<std::string> dtype = {}, bool log = false)
        : dim(dim), dtype(std::move(dtype)), log(log) {}
    std::string type() const override { return log ? "LogSoftmax" : "Softmax"; }
    std::string extra_repr() const override { return "dim=" + std::to_string(dim) + (dtype ? ", dtype=" + *dtype : ""); }
    int dim;
    std::optional<std::string> dtype;

protected:
    std::pair<Tensor, functional::SoftmaxCache> run_forward(const Tensor& x) const override {
        if (dim < -x.ndim() || dim >= std::max(x.ndim(), 1))
            throw HandgradError(repr(), "dim " + std::to_string(dim) + " is out of range for input of shape " +
                                            fmt_shape(x.shape));
        return functional::softmax_forward(x, dim, log);
    }
    Tensor run_backward(const Tensor& g, const functional::SoftmaxCache& c) const override {
        return functional::softmax_backward(g, c, log);
    }

private:
    bool log;
};

class LogSoftmax : public Softmax {
public:
    explicit LogSoftmax(int dim = -1, std::optional<std::string> dtype = {}) : Softmax(dim, std::move(dtype), true) {}
};

}  // namespace handgrad::nn
