// BatchNorm1d and BatchNorm2d (mirrors src/handgrad/nn/normalization.py; the math is in
// functional/normalization.hpp).
#pragma once

#include "handgrad/functional/normalization.hpp"
#include "handgrad/nn/module.hpp"

#include <algorithm>

namespace handgrad::nn {

// The optional weight and bias of a normalisation layer: which gradients its backward computes,
// adding them to the parameters (each checked against its shape), and their state_dict names.
inline NeedsGrad affine_needs(bool input_grad, const std::optional<Parameter>& weight, const std::optional<Parameter>& bias) {
    return {.input = input_grad, .weight = weight && weight->requires_grad, .bias = bias && bias->requires_grad};
}
inline Tensor accumulate_affine(functional::BatchNormGrads& g, std::optional<Parameter>& weight,
                                std::optional<Parameter>& bias, const std::string& where) {
    if (weight) weight->accumulate_grad(std::move(g.grad_weight), where, "grad_weight");
    if (bias) bias->accumulate_grad(std::move(g.grad_bias), where, "grad_bias");
    return std::move(g.grad_input);
}
inline std::vector<std::pair<std::string, Parameter*>> affine_parameters(std::optional<Parameter>& weight,
                                                                         std::optional<Parameter>& bias) {
    std::vector<std::pair<std::string, Parameter*>> p;
    if (weight) p.emplace_back("weight", &*weight);
    if (bias) p.emplace_back("bias", &*bias);
    return p;
}

struct BatchNormOptions {
    int64_t num_features = 0;
    double eps = 1e-5;
    std::optional<double> momentum = 0.1;  // none: a cumulative average over the batches, as PyTorch
    bool affine = true;
    bool track_running_stats = true;
};

// y = (x - mean) / sqrt(var + eps) * weight + bias per channel (axis 1). Train: the batch's
// statistics, the running ones updated with momentum; eval: the running statistics.
// weight starts at 1, bias at 0, running_mean at 0, running_var at 1.
class BatchNormBase : public Module {
public:
    BatchNormBase(BatchNormOptions options, std::string name, std::vector<int> ndims, std::string layout)
        : options(options), name(std::move(name)), ndims(std::move(ndims)), layout(std::move(layout)) {
        const int64_t C = options.num_features;
        if (C < 1) throw HandgradError(this->name, "num_features must be >= 1, got " + std::to_string(C));
        if (!(options.eps > 0)) throw HandgradError(this->name, "eps must be > 0, got " + py_repr(options.eps));
        if (options.momentum && !(*options.momentum >= 0 && *options.momentum <= 1))
            throw HandgradError(this->name, "momentum must be None or in [0, 1], got " + py_repr(*options.momentum));
        if (options.affine) weight = Parameter{.data = Tensor({C}, 1.0f)}, bias = Parameter{.data = Tensor({C})};
        if (options.track_running_stats) running_mean = Tensor({C}), running_var = Tensor({C}, 1.0f);
    }

    Tensor forward(const Tensor& x) override {
        if (std::find(ndims.begin(), ndims.end(), x.ndim()) == ndims.end()) {
            std::string expected;  // the layout with C spelled out, as Python's
            for (char ch : layout) expected += ch == 'C' ? std::to_string(options.num_features) : std::string(1, ch);
            throw ShapeError(repr(), "input", expected, x.shape);
        }
        if (x.shape[1] != options.num_features)
            throw HandgradError(repr(), "expected " + std::to_string(options.num_features) +
                                            " channels (num_features) on axis 1, got input " + fmt_shape(x.shape));
        const bool batch_stats = training || !options.track_running_stats;
        if (batch_stats && x.numel() / x.shape[1] < 2)
            throw HandgradError(repr(), "expected more than 1 value per channel when training, got input " +
                                            fmt_shape(x.shape));
        double momentum = options.momentum.value_or(0.0);
        if (training && options.track_running_stats) {
            ++num_batches_tracked;
            if (!options.momentum) momentum = 1.0 / static_cast<double>(num_batches_tracked);
        }
        const bool update = training && options.track_running_stats;
        auto [out, c] = functional::batch_norm_forward(
            x, weight ? &weight->data : nullptr, bias ? &bias->data : nullptr, update || !batch_stats ? &running_mean : nullptr,
            update || !batch_stats ? &running_var : nullptr, batch_stats, momentum, options.eps);
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        auto g = functional::batch_norm_backward(grad_output, saved(cache, grad_output), affine_needs(input_grad, weight, bias));
        return accumulate_affine(g, weight, bias, repr());
    }
    std::vector<std::pair<std::string, Parameter*>> named_parameters() override { return affine_parameters(weight, bias); }
    std::vector<std::pair<std::string, Buffer>> named_buffers() override {
        if (!options.track_running_stats) return {};
        return {{"running_mean", {.values = &running_mean}},
                {"running_var", {.values = &running_var}},
                {"num_batches_tracked", {.count = &num_batches_tracked}}};
    }
    std::string type() const override { return name; }
    std::string extra_repr() const override {
        auto flag = [](bool b) { return b ? "True" : "False"; };
        return std::to_string(options.num_features) + ", eps=" + py_repr(options.eps) +
               ", momentum=" + (options.momentum ? py_repr(*options.momentum) : "None") +
               ", affine=" + flag(options.affine) + ", track_running_stats=" + flag(options.track_running_stats);
    }

    BatchNormOptions options;
    std::optional<Parameter> weight, bias;  // with affine
    Tensor running_mean, running_var;       // with track_running_stats
    int64_t num_batches_tracked = 0;

private:
    std::string name;
    std::vector<int> ndims;
    std::string layout;
    std::optional<functional::BatchNormCache> cache;
};

// BatchNorm over the features of (N, C) or (N, C, L).
class BatchNorm1d : public BatchNormBase {
public:
    explicit BatchNorm1d(BatchNormOptions options) : BatchNormBase(options, "BatchNorm1d", {2, 3}, "(N, C) or (N, C, L)") {}
};

// BatchNorm over the channels of (N, C, H, W): statistics over N, H and W per channel.
class BatchNorm2d : public BatchNormBase {
public:
    explicit BatchNorm2d(BatchNormOptions options) : BatchNormBase(options, "BatchNorm2d", {4}, "(N, C, H, W)") {}
};

struct LayerNormOptions {
    Shape normalized_shape;
    double eps = 1e-5;
    bool elementwise_affine = true;
    bool bias = true;  // with elementwise_affine
};

// y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) var over the last
// len(normalized_shape) axes of each sample, in training and eval alike. weight starts at 1 and
// bias at 0, both of normalized_shape. Shape: (*, *normalized_shape) -> the same.
// Gradients (functional/normalization.hpp): grad_input = invstd / m * (m * dxhat - sum(dxhat)
// - xhat * sum(dxhat * xhat)), dxhat = G * weight; grad_weight = sum(G * xhat), grad_bias = sum(G).
//     nn::LayerNorm norm({.normalized_shape = {16}});
class LayerNorm : public Module {
public:
    explicit LayerNorm(LayerNormOptions options) : options(std::move(options)) {
        const Shape& shape = this->options.normalized_shape;
        if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
            throw HandgradError("LayerNorm", "expected normalized_shape to be an int or a sequence of sizes >= 0, got " +
                                                 fmt_shape(shape));
        if (!(this->options.eps > 0)) throw HandgradError("LayerNorm", "eps must be > 0, got " + py_repr(this->options.eps));
        if (this->options.elementwise_affine) {
            weight = Parameter{.data = Tensor(shape, 1.0f)};
            if (this->options.bias) bias = Parameter{.data = Tensor(shape)};
        }
    }

    Tensor forward(const Tensor& x) override {
        const Shape& shape = options.normalized_shape;
        const size_t d = shape.size();
        if (x.shape.size() < d || !std::equal(shape.begin(), shape.end(), x.shape.end() - static_cast<int64_t>(d))) {
            std::string layout = "(*";
            for (int64_t v : shape) layout += ", " + std::to_string(v);
            throw HandgradError(repr(), "expected input of shape " + layout + ") (ending in normalized_shape " +
                                            fmt_shape(shape) + "), got " + fmt_shape(x.shape));
        }
        auto [out, c] = functional::layer_norm_forward(x, weight ? &weight->data : nullptr, bias ? &bias->data : nullptr,
                                                       d, options.eps);
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        auto g = functional::layer_norm_backward(grad_output, saved(cache, grad_output), affine_needs(input_grad, weight, bias));
        return accumulate_affine(g, weight, bias, repr());
    }
    std::vector<std::pair<std::string, Parameter*>> named_parameters() override { return affine_parameters(weight, bias); }
    std::string type() const override { return "LayerNorm"; }
    std::string extra_repr() const override {
        return fmt_shape(options.normalized_shape) + ", eps=" + py_repr(options.eps) +
               ", elementwise_affine=" + (options.elementwise_affine ? "True" : "False");
    }

    LayerNormOptions options;
    std::optional<Parameter> weight, bias;  // with elementwise_affine (bias unless options.bias is false)

private:
    std::optional<functional::LayerNormCache> cache;
};

}  // namespace handgrad::nn
