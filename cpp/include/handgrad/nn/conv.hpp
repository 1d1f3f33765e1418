// Conv2d (mirrors src/handgrad/nn/conv.py).
#pragma once

#include "handgrad/functional/conv.hpp"
#include "handgrad/kernels/conv.hpp"
#include "handgrad/nn/unbatched.hpp"

#include <algorithm>

namespace handgrad::nn {

struct Conv2dOptions {
    int64_t in_channels = 0, out_channels = 0;
    Pair kernel_size{3, 3}, stride{1, 1}, padding{0, 0};
    bool bias = true;
    Pair dilation{1, 1};
    int64_t groups = 1;  // dividing both channel counts
    functional::PaddingMode padding_mode = functional::PaddingMode::zeros;
    std::string padding_name;  // "same" or "valid" in place of the numbers in padding; "" for them
    bool operator==(const Conv2dOptions&) const = default;
};

// y[n, o] = bias[o] + sum_c weight[o, c] (cross-correlated with) x_padded[n, c], with stride.
// Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1; weight (C_out, C_in, kH, kW).
// Gradients, per sample with cols = unfold(x): grad_weight = G @ cols.T, grad_bias = G.sum(columns),
// grad_input = fold(W.T @ G).
//     nn::Conv2d conv({.in_channels = 1, .out_channels = 8, .kernel_size = {3, 3}, .padding = {1, 1}});
class Conv2d : public WeightedLayer, UnbatchedMaps {
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
        check_options();
        make_parameters({options.out_channels, options.in_channels / options.groups, options.kernel_size[0],
                         options.kernel_size[1]},
                        options.bias);
    }

    // x (N, C_in, H, W), or unbatched (C_in, H, W) run as a batch of one
    Tensor forward(const Tensor& x) override {
        const std::string channels = std::to_string(options.in_channels);
        if ((x.ndim() != 3 && x.ndim() != 4) || x.shape[x.ndim() - 3] != options.in_channels)
            throw ShapeError(repr(), "input", "(N, " + channels + ", H, W) or (" + channels + ", H, W)", x.shape);
        return forward_maps(x, [this](const Tensor& batch) { return batched_forward(batch); });
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        return backward_maps(repr(), grad_output, [&](const Tensor& g) { return batched_backward(g, input_grad); });
    }
    std::string type() const override { return "Conv2d"; }
    std::string extra_repr() const override {
        std::string s = std::to_string(options.in_channels) + ", " + std::to_string(options.out_channels) +
                        ", kernel_size=" + fmt_pair(options.kernel_size) + ", stride=" + fmt_pair(options.stride);
        if (!options.padding_name.empty()) s += ", padding='" + options.padding_name + "'";
        else if (options.padding != Pair{0, 0}) s += ", padding=" + fmt_pair(options.padding);
        if (options.dilation != Pair{1, 1}) s += ", dilation=" + fmt_pair(options.dilation);
        if (options.groups != 1) s += ", groups=" + std::to_string(options.groups);
        if (options.padding_mode != functional::PaddingMode::zeros)
            s += ", padding_mode='" + functional::padding_mode_name(options.padding_mode) + "'";
        return s + (options.bias ? "" : ", bias=False");
    }
    // (top, bottom, left, right) of padding, from the numbers or "same" / "valid"
    functional::Pads pads() const {
        return functional::conv_padding(options.padding, options.padding_name, options.kernel_size, options.dilation);
    }

    // Every option but the sizes at its default: what the fused kernels compute (nn::Sequential).
    bool fusable() const {
        return options == Conv2dOptions{.in_channels = options.in_channels, .out_channels = options.out_channels,
                                        .kernel_size = options.kernel_size, .stride = options.stride,
                                        .padding = options.padding, .bias = options.bias};
    }

    Conv2dOptions options;

private:
    // The layer on (N, C_in, H, W): the kernels for the plain convolution, the reference otherwise.
    Tensor batched_forward(const Tensor& x) {
        if (!plain()) return general_forward(x);
        const Pair padding{pads()[0], pads()[2]};  // plain: the same on both sides
        if (x.shape[2] + 2 * padding[0] < options.kernel_size[0] || x.shape[3] + 2 * padding[1] < options.kernel_size[1])
            throw ShapeError(repr(), "input", "at least the kernel size " + fmt_pair(options.kernel_size) +
                                                  " once padded by " + fmt_pair(padding), x.shape);
        const Tensor* b = bias ? &bias->data : nullptr;
        Tensor workspace = kernel_cache ? std::move(kernel_cache->cols) : Tensor();  // the last step's columns
        cache.reset(), kernel_cache.reset();  // backward runs on the side this forward ran
        if (kernels::enabled()) {
            auto [out, c] = kernels::conv2d_forward(x, weight.data, b, options.stride, padding, false,
                                                    std::move(workspace));
            save_for_backward(kernel_cache, std::move(c), out.shape);
            return out;
        }
        auto [out, c] = functional::conv2d_forward(x, weight.data, b, options.stride, padding);
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor batched_backward(const Tensor& grad_output, bool input_grad) {
        if (!plain()) {
            auto g = functional::conv2d_backward(grad_output, saved(cache, grad_output), needs(input_grad));
            return accumulate(g);
        }
        auto g = kernel_cache ? kernels::conv2d_backward(grad_output, saved(kernel_cache, grad_output), needs(input_grad))
                              : functional::conv2d_backward(grad_output, saved(cache, grad_output), needs(input_grad));
        return accumulate(g);
    }
    // The convolution the kernels compute: no dilation, one group, zero padding alike on both sides.
    bool plain() const {
        const auto p = pads();
        return options.dilation == Pair{1, 1} && options.groups == 1 &&
               options.padding_mode == functional::PaddingMode::zeros && p[0] == p[1] && p[2] == p[3];
    }
    void check_options() const {
        if (options.dilation[0] < 1 || options.dilation[1] < 1)
            throw HandgradError("Conv2d", "expected dilation >= 1, got " + fmt_pair(options.dilation));
        if (options.groups < 1) throw HandgradError("Conv2d", "expected groups to be an int >= 1, got " + std::to_string(options.groups));
        if (options.in_channels % options.groups || options.out_channels % options.groups)
            throw HandgradError("Conv2d", "in_channels (" + std::to_string(options.in_channels) + ") and out_channels (" +
                                              std::to_string(options.out_channels) + ") must both be divisible by groups (" +
                                              std::to_string(options.groups) + ")");
        if (!options.padding_name.empty() && options.padding_name != "same" && options.padding_name != "valid")
            throw HandgradError("Conv2d", "expected padding 'same', 'valid', an int or a pair of ints, got '" +
                                              options.padding_name + "'");
        if (options.padding_name == "same" && options.stride != Pair{1, 1})
            throw HandgradError("Conv2d", "padding='same' needs stride 1 (as in torch), got stride " +
                                              fmt_pair(options.stride) + "; give the padding as numbers");
    }
    // Any other convolution: the readable reference (functional::conv2d_forward with its geometry),
    // after the checks of Python's check_conv2d_size.
    Tensor general_forward(const Tensor& x) {
        const auto p = pads();
        const auto mode = options.padding_mode;
        const char* axes[2] = {"height", "width"};
        for (int a = 0; a < 2; ++a) {
            const int64_t size = x.shape[2 + a], most = std::max(p[2 * a], p[2 * a + 1]);
            if ((mode == functional::PaddingMode::reflect && most >= size) ||
                (mode == functional::PaddingMode::circular && most > size))
                throw HandgradError(repr(), "padding_mode='" + functional::padding_mode_name(mode) + "' needs padding " +
                                                (mode == functional::PaddingMode::reflect ? "<" : "<=") + " the input's " +
                                                axes[a] + ", got padding " + std::to_string(most) + " for " + axes[a] +
                                                " " + std::to_string(size) + " (input " + fmt_shape(x.shape) + ")");
        }
        const Pair padded{x.shape[2] + p[0] + p[1], x.shape[3] + p[2] + p[3]};
        if (padded[0] > (int64_t{1} << 26) / std::max<int64_t>(padded[1], 1))  // a copy of the padded input is made
            throw HandgradError(repr(), "padding " + fmt_pair({std::max(p[0], p[1]), std::max(p[2], p[3])}) +
                                            " makes maps of " + fmt_pair(padded) + ", more than 2^26 pixels");
        const Pair spans{functional::dilated_size(options.kernel_size[0], options.dilation[0]),
                         functional::dilated_size(options.kernel_size[1], options.dilation[1])};
        if (padded[0] < spans[0] || padded[1] < spans[1])
            throw HandgradError(repr(), "kernel size " + fmt_pair(options.kernel_size) +
                                            (options.dilation != Pair{1, 1}
                                                 ? " dilated by " + fmt_pair(options.dilation) + " spans " + fmt_pair(spans) + ","
                                                 : std::string()) +
                                            " is larger than the padded input " + fmt_pair(padded) + " (input " +
                                            fmt_shape(x.shape) + ")");
        cache.reset(), kernel_cache.reset();
        auto [out, c] = functional::conv2d_forward(
            x, weight.data, bias ? &bias->data : nullptr,
            functional::Conv2dGeometry{.stride = options.stride, .pads = p, .dilation = options.dilation,
                                       .groups = options.groups, .padding_mode = mode});
        save_for_backward(cache, std::move(c), out.shape);
        return out;
    }

    std::optional<functional::Conv2dCache> cache;
    std::optional<kernels::Conv2dCache> kernel_cache;  // the kernel's columns are laid out for one product
};

}  // namespace handgrad::nn
