// Layers as thin wrappers over functional/: each forward keeps its cache, each backward turns
// dL/d(output) into dL/d(input) and adds the parameter gradients (mirrors src/handgrad/nn/).
#pragma once

#include "handgrad/functional/activation.hpp"
#include "handgrad/functional/conv.hpp"
#include "handgrad/functional/dropout.hpp"
#include "handgrad/functional/linear.hpp"
#include "handgrad/functional/loss.hpp"
#include "handgrad/functional/pool.hpp"

#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <string>

namespace handgrad {

// The generator behind initialisation and dropout, seeded by manual_seed (a C++ mt19937_64: the same
// distributions as handgrad's NumPy generator, not the same draws).
inline std::mt19937_64& default_generator() {
    static std::mt19937_64 generator(0);
    return generator;
}
inline void manual_seed(uint64_t seed) { default_generator().seed(seed); }

struct Parameter {
    Tensor data, grad;  // grad is empty until the first backward
    bool requires_grad = true;

    void accumulate_grad(const Tensor& g) {
        if (g.data.empty() && g.shape.empty()) return;
        if (grad.data.empty()) grad = g;
        else
            for (int64_t i = 0; i < grad.numel(); ++i) grad[i] += g[i];
    }
};

namespace nn {

using functional::Pair;

class Module {
public:
    virtual ~Module() = default;
    virtual Tensor forward(const Tensor& x) = 0;
    // dL/dx from dL/dy; input_grad=false skips dL/dx (the first layers of a model need none).
    virtual Tensor backward(const Tensor& grad_output, bool input_grad = true) = 0;
    // "weight", "bias" in the order of the PyTorch twin's state_dict
    virtual std::vector<std::pair<std::string, Parameter*>> named_parameters() { return {}; }
    virtual std::string type() const = 0;
    virtual std::string extra_repr() const { return ""; }
    std::string repr() const { return type() + "(" + extra_repr() + ")"; }
    void train(bool mode = true) { training = mode; }
    void eval() { train(false); }
    bool training = true;

protected:
    // The cache must exist before backward runs: a clear error instead of reading stale memory.
    template <class Cache>
    const Cache& saved(const std::optional<Cache>& cache) const {
        if (!cache) throw HandgradError(repr(), "backward called before forward (nothing saved for backward)");
        return *cache;
    }
};

inline void check_ndim(const Module& layer, const Tensor& x, int ndim, const std::string& expected) {
    if (x.ndim() != ndim) throw ShapeError(layer.repr(), "input", expected, x.shape);
}

inline std::string fmt_pair(Pair p) { return "(" + std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")"; }

// Kaiming-uniform with a = sqrt(5), PyTorch's default for Linear and Conv2d: weight and bias both
// from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
inline void default_linear_init(Parameter& weight, Parameter* bias, std::mt19937_64& generator) {
    const int64_t fan_in = weight.data.numel() / weight.data.shape[0];
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    std::uniform_real_distribution<double> uniform(-bound, bound);
    for (float& w : weight.data.data) w = static_cast<float>(uniform(generator));
    if (bias)
        for (float& b : bias->data.data) b = static_cast<float>(uniform(generator));
}

// A layer whose math is a functional forward/backward pair (run_forward, run_backward): it keeps
// what the forward caches until backward. Base is Module, or a Module with the layer's options.
template <class Cache, class Base = Module>
class FunctionalLayer : public Base {
public:
    using Base::Base;
    Tensor forward(const Tensor& x) override {
        auto [out, c] = run_forward(x);
        cache = std::move(c);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const auto& c = this->saved(cache);
        return input_grad ? run_backward(grad_output, c) : Tensor();
    }

protected:
    virtual std::pair<Tensor, Cache> run_forward(const Tensor& x) const = 0;
    virtual Tensor run_backward(const Tensor& grad_output, const Cache& cache) const = 0;

private:
    std::optional<Cache> cache;
};

// Linear and Conv2d: a weight whose first axis is the output features, an optional bias of that
// size, PyTorch's default init, and the same bookkeeping around their functional backward.
class WeightedLayer : public Module {
public:
    void reset_parameters(std::mt19937_64& generator) { default_linear_init(weight, bias ? &*bias : nullptr, generator); }
    std::vector<std::pair<std::string, Parameter*>> named_parameters() override {
        std::vector<std::pair<std::string, Parameter*>> p{{"weight", &weight}};
        if (bias) p.emplace_back("bias", &*bias);
        return p;
    }

    Parameter weight;
    std::optional<Parameter> bias;

protected:
    // Allocate and initialise the parameters (after the layer has checked its options).
    void make_parameters(std::vector<int64_t> weight_shape, bool has_bias) {
        weight.data = Tensor(weight_shape);
        if (has_bias) bias = Parameter{Tensor({weight_shape[0]}), Tensor(), true};
        reset_parameters(default_generator());
    }
    // Which gradients backward should compute: dL/dx if asked, each parameter's if it requires one.
    NeedsGrad needs(bool input_grad) const { return {input_grad, weight.requires_grad, bias && bias->requires_grad}; }
    // Accumulate grad_weight and grad_bias into the parameters; hand grad_input on.
    template <class Grads>
    Tensor accumulate(Grads& g) {
        weight.accumulate_grad(g.grad_weight);
        if (bias) bias->accumulate_grad(g.grad_bias);
        return std::move(g.grad_input);
    }
};

struct LinearOptions {
    int64_t in_features = 0, out_features = 0;
    bool bias = true;
};

// y = x @ weight.T + bias;  grad_input = G @ weight, grad_weight = G.T @ x, grad_bias = G.sum(0).
// Shape: input (*, in_features) -> output (*, out_features); weight (out_features, in_features).
class Linear : public WeightedLayer {
public:
    explicit Linear(LinearOptions options) : options(options) {
        make_parameters({options.out_features, options.in_features}, options.bias);
    }

    Tensor forward(const Tensor& x) override {
        if (x.ndim() < 1 || x.shape.back() != options.in_features)
            throw ShapeError(repr(), "input", "(*, " + std::to_string(options.in_features) + ")", x.shape);
        auto [out, c] = functional::linear_forward(x, weight.data, bias ? &bias->data : nullptr);
        cache = std::move(c);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        auto g = functional::linear_backward(grad_output, saved(cache), needs(input_grad));
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

struct Conv2dOptions {
    int64_t in_channels = 0, out_channels = 0;
    Pair kernel_size{3, 3}, stride{1, 1}, padding{0, 0};
    bool bias = true;
};

// y[n, o] = bias[o] + sum_c weight[o, c] (cross-correlated with) x_padded[n, c], with stride.
// Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1; weight (C_out, C_in, kH, kW).
// Gradients, per sample with cols = unfold(x): grad_weight = G @ cols.T, grad_bias = G.sum(columns),
// grad_input = fold(W.T @ G).
class Conv2d : public WeightedLayer {
public:
    explicit Conv2d(Conv2dOptions options) : options(options) {
        for (auto v : {options.kernel_size[0], options.kernel_size[1], options.stride[0], options.stride[1]})
            if (v < 1) throw HandgradError("Conv2d", "kernel_size and stride must be >= 1, got " + std::to_string(v));
        if (options.padding[0] < 0 || options.padding[1] < 0)
            throw HandgradError("Conv2d", "padding must be >= 0, got " + fmt_pair(options.padding));
        make_parameters({options.out_channels, options.in_channels, options.kernel_size[0], options.kernel_size[1]},
                        options.bias);
    }

    Tensor forward(const Tensor& x) override {
        const std::string expected = "(N, " + std::to_string(options.in_channels) + ", H, W)";
        check_ndim(*this, x, 4, expected);
        if (x.shape[1] != options.in_channels) throw ShapeError(repr(), "input", expected, x.shape);
        if (x.shape[2] + 2 * options.padding[0] < options.kernel_size[0] ||
            x.shape[3] + 2 * options.padding[1] < options.kernel_size[1])
            throw ShapeError(repr(), "input", "at least the kernel size " + fmt_pair(options.kernel_size) +
                                                  " once padded by " + fmt_pair(options.padding), x.shape);
        auto [out, c] = functional::conv2d_forward(x, weight.data, bias ? &bias->data : nullptr, options.stride,
                                                   options.padding);
        cache = std::move(c);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        auto g = functional::conv2d_backward(grad_output, saved(cache), needs(input_grad));
        return accumulate(g);
    }
    std::string type() const override { return "Conv2d"; }
    std::string extra_repr() const override {
        std::string s = std::to_string(options.in_channels) + ", " + std::to_string(options.out_channels) +
                        ", kernel_size=" + fmt_pair(options.kernel_size) + ", stride=" + fmt_pair(options.stride);
        if (options.padding != Pair{0, 0}) s += ", padding=" + fmt_pair(options.padding);
        return s + (options.bias ? "" : ", bias=False");
    }

    Conv2dOptions options;

private:
    std::optional<functional::Conv2dCache> cache;
};

struct Pool2dOptions {
    Pair kernel_size{2, 2};
    std::optional<Pair> stride;  // default: kernel_size
    Pair padding{0, 0};
};

class Pool2dBase : public Module {
public:
    explicit Pool2dBase(Pool2dOptions options, const std::string& name)
        : kernel_size(options.kernel_size), stride(options.stride.value_or(options.kernel_size)),
          padding(options.padding) {
        for (int a = 0; a < 2; ++a) {
            if (kernel_size[a] < 1 || stride[a] < 1 || padding[a] < 0)
                throw HandgradError(name, "kernel_size and stride must be >= 1 and padding >= 0, got kernel_size " +
                                              fmt_pair(kernel_size) + ", stride " + fmt_pair(stride) + ", padding " +
                                              fmt_pair(padding));
            if (padding[a] > kernel_size[a] / 2)
                throw HandgradError(name, "padding " + fmt_pair(padding) + " should be at most half of kernel_size " +
                                              fmt_pair(kernel_size));
        }
    }
    std::string extra_repr() const override {
        auto one = [](Pair p) { return p[0] == p[1] ? std::to_string(p[0]) : fmt_pair(p); };
        return "kernel_size=" + one(kernel_size) + ", stride=" + one(stride) + ", padding=" + one(padding);
    }
    Pair kernel_size, stride, padding;

protected:
    void check(const Tensor& x) const {
        check_ndim(*this, x, 4, "(N, C, H, W)");
        if (x.shape[2] + 2 * padding[0] < kernel_size[0] || x.shape[3] + 2 * padding[1] < kernel_size[1])
            throw ShapeError(repr(), "input", "at least the kernel size " + fmt_pair(kernel_size) + " once padded",
                             x.shape);
    }
};

// A pooling layer: checks its input, then runs its functional pair.
template <class Cache>
class Pool2d : public FunctionalLayer<Cache, Pool2dBase> {
public:
    using FunctionalLayer<Cache, Pool2dBase>::FunctionalLayer;
    Tensor forward(const Tensor& x) override {
        this->check(x);
        return FunctionalLayer<Cache, Pool2dBase>::forward(x);
    }
};

// y = max of x over each kH x kW window; backward sends each window's gradient to its first maximum.
class MaxPool2d : public Pool2d<functional::MaxPool2dCache> {
public:
    explicit MaxPool2d(Pool2dOptions options = {}) : Pool2d(options, "MaxPool2d") {}
    std::string type() const override { return "MaxPool2d"; }

protected:
    std::pair<Tensor, functional::MaxPool2dCache> run_forward(const Tensor& x) const override {
        return functional::max_pool2d_forward(x, kernel_size, stride, padding);
    }
    Tensor run_backward(const Tensor& g, const functional::MaxPool2dCache& c) const override {
        return functional::max_pool2d_backward(g, c);
    }
};

// y = mean of x over each window (zero padding counted);  dL/dx_p = sum over windows holding p of G / (kH*kW).
class AvgPool2d : public Pool2d<functional::AvgPool2dCache> {
public:
    explicit AvgPool2d(Pool2dOptions options = {}) : Pool2d(options, "AvgPool2d") {}
    std::string type() const override { return "AvgPool2d"; }

protected:
    std::pair<Tensor, functional::AvgPool2dCache> run_forward(const Tensor& x) const override {
        return functional::avg_pool2d_forward(x, kernel_size, stride, padding);
    }
    Tensor run_backward(const Tensor& g, const functional::AvgPool2dCache& c) const override {
        return functional::avg_pool2d_backward(g, c);
    }
};

// Collapse dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default.
class Flatten : public Module {
public:
    explicit Flatten(int start_dim = 1, int end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
    Tensor forward(const Tensor& x) override {
        const int start = (start_dim + x.ndim()) % x.ndim(), end = (end_dim + x.ndim()) % x.ndim();
        Shape shape(x.shape.begin(), x.shape.begin() + start);
        int64_t merged = 1;
        for (int d = start; d <= end; ++d) merged *= x.shape[d];
        shape.push_back(merged);
        shape.insert(shape.end(), x.shape.begin() + end + 1, x.shape.end());
        input_shape = x.shape;  // backward needs only the input's shape
        return x.reshape(shape);
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        return input_grad ? grad_output.reshape(saved(input_shape)) : Tensor();
    }
    std::string type() const override { return "Flatten"; }
    std::string extra_repr() const override {
        return "start_dim=" + std::to_string(start_dim) + ", end_dim=" + std::to_string(end_dim);
    }
    int start_dim, end_dim;

private:
    std::optional<Shape> input_shape;
};

// An activation whose math is a functional forward/backward pair: each activation only names its
// pair (as _Activation in nn/activation.py).
template <typename Cache>
using Activation = FunctionalLayer<Cache>;

// y = max(x, 0);  dL/dx = G * [y > 0]
class ReLU : public Activation<Tensor> {
public:
    std::string type() const override { return "ReLU"; }

protected:
    std::pair<Tensor, Tensor> run_forward(const Tensor& x) const override { return functional::relu_forward(x); }
    Tensor run_backward(const Tensor& g, const Tensor& out) const override { return functional::relu_backward(g, out); }
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

// Train: y = x * mask, mask = [u >= p] / (1 - p).  Eval: y = x.  dL/dx = G * mask (G in eval).
class Dropout : public Module {
public:
    explicit Dropout(float p = 0.5f) : p(p) {
        if (p < 0.0f || p > 1.0f)
            throw HandgradError("Dropout", "dropout probability has to be between 0 and 1, but got " + std::to_string(p));
    }
    Tensor forward(const Tensor& x) override {
        if (training && p > 0.0f) {
            auto [out, m] = functional::dropout_forward(x, p, default_generator());
            mask = std::move(m);
            return out;
        }
        mask = Tensor();  // empty: the identity
        return x;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const auto& m = saved(mask);
        if (!input_grad) return Tensor();
        return m.data.empty() ? grad_output : functional::dropout_backward(grad_output, m);
    }
    std::string type() const override { return "Dropout"; }
    std::string extra_repr() const override { return "p=" + std::to_string(p); }
    float p;

private:
    std::optional<Tensor> mask;
};

// Layers run in order forward, in reverse order backward. Layers before the first one with
// parameters get input_grad=false unless dL/dx of the whole model is asked for.
class Sequential {
public:
    Sequential() = default;
    Sequential(Sequential&&) = default;
    Sequential& operator=(Sequential&&) = default;

    Sequential& append(std::unique_ptr<Module> layer) {
        layers.push_back(std::move(layer));
        return *this;
    }
    template <class Layer, class... Args>
    Sequential& add(Args&&... args) {
        return append(std::make_unique<Layer>(std::forward<Args>(args)...));
    }

    Tensor forward(const Tensor& x) {
        Tensor h = x;
        for (auto& layer : layers) h = layer->forward(h);
        return h;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) {
        size_t first_with_parameters = layers.size();
        for (size_t i = 0; i < layers.size(); ++i)
            if (!layers[i]->named_parameters().empty()) {
                first_with_parameters = i;
                break;
            }
        Tensor g = grad_output;
        for (size_t i = layers.size(); i-- > 0;) g = layers[i]->backward(g, input_grad || i > first_with_parameters);
        return g;
    }
    // "0.weight", "0.bias", "2.weight", ...: the state_dict names of the PyTorch twin
    std::vector<std::pair<std::string, Parameter*>> named_parameters() {
        std::vector<std::pair<std::string, Parameter*>> all;
        for (size_t i = 0; i < layers.size(); ++i)
            for (auto& [name, p] : layers[i]->named_parameters()) all.emplace_back(std::to_string(i) + "." + name, p);
        return all;
    }
    std::vector<Parameter*> parameters() {
        std::vector<Parameter*> all;
        for (auto& np : named_parameters()) all.push_back(np.second);
        return all;
    }
    int64_t num_parameters() {
        int64_t n = 0;
        for (auto* p : parameters()) n += p->data.numel();
        return n;
    }
    void train(bool mode = true) {
        for (auto& layer : layers) layer->train(mode);
    }
    void eval() { train(false); }
    void zero_grad() {
        for (auto* p : parameters()) p->grad = Tensor();
    }
    size_t size() const { return layers.size(); }
    Module& operator[](size_t i) { return *layers.at(i); }
    std::string repr() const {
        std::string s = "Sequential(\n";
        for (size_t i = 0; i < layers.size(); ++i) s += "  (" + std::to_string(i) + "): " + layers[i]->repr() + "\n";
        return s + ")";
    }

    std::vector<std::unique_ptr<Module>> layers;
};

// loss_n = logsumexp(x_n) - x_n[target_n], averaged over the batch;
// backward: dL/dx_n = (softmax(x_n) - onehot(target_n)) / N.
class CrossEntropyLoss {
public:
    float forward(const Tensor& input, const std::vector<int64_t>& target) {
        if (input.ndim() != 2) throw ShapeError("CrossEntropyLoss()", "input", "(N, C)", input.shape);
        if (static_cast<int64_t>(target.size()) != input.shape[0])
            throw ShapeError("CrossEntropyLoss()", "target", "(" + std::to_string(input.shape[0]) + ",)",
                             {static_cast<int64_t>(target.size())});
        for (auto t : target)
            if (t < 0 || t >= input.shape[1])
                throw HandgradError("CrossEntropyLoss()", "target class indices must be in [0, " +
                                                              std::to_string(input.shape[1] - 1) + "], got " +
                                                              std::to_string(t));
        auto [loss, c] = functional::cross_entropy_forward(input, target);
        cache = std::move(c);
        return loss;
    }
    Tensor backward(float grad_output = 1.0f) {
        if (!cache) throw HandgradError("CrossEntropyLoss()", "backward called before forward");
        return functional::cross_entropy_backward(grad_output, *cache);
    }

private:
    std::optional<functional::CrossEntropyCache> cache;
};

// loss = mean (or sum) of (input - target)^2;  backward: dL/dinput = 2 (input - target) * dL/dloss (/ numel for mean).
class MSELoss {
public:
    explicit MSELoss(functional::Reduction reduction = functional::Reduction::mean) : reduction(reduction) {}
    float forward(const Tensor& input, const Tensor& target) {
        if (input.shape != target.shape)
            throw ShapeError("MSELoss()", "target", "of the input's shape " + fmt_shape(input.shape), target.shape);
        auto [loss, c] = functional::mse_loss_forward(input, target, reduction);
        cache = std::move(c);
        return loss;
    }
    Tensor backward(float grad_output = 1.0f) {
        if (!cache) throw HandgradError("MSELoss()", "backward called before forward");
        return functional::mse_loss_backward(grad_output, *cache);
    }
    functional::Reduction reduction;

private:
    std::optional<functional::MSELossCache> cache;
};

}  // namespace nn
}  // namespace handgrad
