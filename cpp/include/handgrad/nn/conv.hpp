// Conv2d (mirrors src/handgrad/nn/conv.py).
#pragma once

#include "handgrad/functional/conv.hpp"
#include "handgrad/kernels/conv.hpp"
#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

struct Conv2dOptions {
    int64_t in_channels = 0, out_channels = 0;
    Pair kernel_size{3, 3}, stride{1, 1}, padding{0, 0};
    bool bias = true;
    bool operator==(const Conv2dOptions&) const = default;
};

// y[n, o] = bias[o] + sum_c weight[o, c] (cross-correlated with) x_padded[n, c], with stride.
// Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1; weight (C_out, C_in, kH, kW).
// Gradients, per sample with cols = unfold(x): grad_weight = G @ cols.T, grad_bias = G.sum(columns),
// grad_input = fold(W.T @ G).
//     nn::Conv2d conv({.in_channels = 1, .out_channels = 8, .kernel_size = {3, 3}, .padding = {1, 1}});
class Conv2d : public WeightedLayer {
public:
    explicit Conv2d(Conv2dOptions options) : options(options) {
        if (options.in_channels < 0 || options.out_channels < 0)
            throw HandgradError("Conv2d", "in_channels and out_channels must be >= 0, got " +
                                              std::to_string(options.in_channels) + " and " +
                                              std::to_string(options.out_channels));
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
        const Tensor* b = bias ? &bias->data : nullptr;
        Tensor workspace = kernel_cache ? std::move(kernel_cache->cols) : Tensor();  // the last step's columns
        cache.reset(), kernel_cache.reset();  // backward runs on the side this forward ran
        if (kernels::enabled()) {
            auto [out, c] = kernels::conv2d_forward(x, weight.data, b, options.stride, options.padding, false,
                                                    std::move(workspace));
            save_for_backward(kernel_cache, std::move(c), out.shape);
            return out;
        }
        auto [out, c] = functional::conv2d_forward(x, weight.data, b, options.stride, options.padding);
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        auto g = kernel_cache ? kernels::conv2d_backward(grad_output, saved(kernel_cache, grad_output), needs(input_grad))
                              : functional::conv2d_backward(grad_output, saved(cache, grad_output), needs(input_grad));
        return accumulate(g);
    }
    std::string type() const override { return "Conv2d"; }
    std::string extra_repr() const override {
        std::string s = std::to_string(options.in_channels) + ", " + std::to_string(options.out_channels) +
                        ", kernel_size=" + fmt_pair(options.kernel_size) + ", stride=" + fmt_pair(options.stride);
        if (options.padding != Pair{0, 0}) s += ", padding=" + fmt_pair(options.padding);
        return s + (options.bias ? "" : ", bias=False");
    }

    // Every option but the sizes at its default: what the fused kernels compute (nn::Sequential).
    bool plain() const {
        return options == Conv2dOptions{.in_channels = options.in_channels, .out_channels = options.out_channels,
                                        .kernel_size = options.kernel_size, .stride = options.stride,
                                        .padding = options.padding, .bias = options.bias};
    }

    Conv2dOptions options;

private:
    std::optional<functional::Conv2dCache> cache;
    std::optional<kernels::Conv2dCache> kernel_cache;  // the kernel's columns are laid out for one product
};

}  // namespace handgrad::nn
