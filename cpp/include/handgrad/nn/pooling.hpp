// MaxPool2d and AvgPool2d (mirrors src/handgrad/nn/pooling.py).
#pragma once

#include "handgrad/functional/pool.hpp"
#include "handgrad/kernels/pool.hpp"
#include "handgrad/nn/module.hpp"

#include <limits>

namespace handgrad::nn {

struct Pool2dOptions {
    Pair kernel_size{2, 2};
    std::optional<Pair> stride;  // default: kernel_size
    Pair padding{0, 0};
    Pair dilation{1, 1};  // MaxPool2d's
    bool ceil_mode = false;
    bool count_include_pad = true;          // AvgPool2d's
    std::optional<int64_t> divisor_override;  // AvgPool2d's (nonzero)
    bool operator==(const Pool2dOptions&) const = default;
};

class Pool2dBase : public Module {
public:
    explicit Pool2dBase(Pool2dOptions options, const std::string& name)
        : kernel_size(options.kernel_size), stride(options.stride.value_or(options.kernel_size)),
          padding(options.padding), options(options) {
        if (options.dilation[0] < 1 || options.dilation[1] < 1)
            throw HandgradError(name, "expected dilation >= 1, got " + fmt_pair(options.dilation));
        if (options.divisor_override && *options.divisor_override == 0)
            throw HandgradError(name, "divisor_override must be a nonzero int or None, got 0");
        for (int a = 0; a < 2; ++a) {
            if (kernel_size[a] < 1 || stride[a] < 1 || padding[a] < 0)
                throw HandgradError(name, "kernel_size and stride must be >= 1 and padding >= 0, got kernel_size " +
                                              fmt_pair(kernel_size) + ", stride " + fmt_pair(stride) + ", padding " +
                                              fmt_pair(padding));
            if (padding[a] > kernel_size[a] / 2)
                throw HandgradError(name, "padding " + fmt_pair(padding) + " should be at most half of kernel_size " +
                                              fmt_pair(kernel_size));
        }
        // the max-pool cache keeps each window's argmax as an int16
        if (kernel_size[0] > std::numeric_limits<int16_t>::max() / kernel_size[1])
            throw HandgradError(name, "kernel_size " + fmt_pair(kernel_size) + " has more than " +
                                          std::to_string(std::numeric_limits<int16_t>::max()) + " elements");
    }
    std::string extra_repr() const override {
        auto one = [](Pair p) { return p[0] == p[1] ? std::to_string(p[0]) : fmt_pair(p); };
        return "kernel_size=" + one(kernel_size) + ", stride=" + one(stride) + ", padding=" + one(padding);
    }
    Pair kernel_size, stride, padding;
    Pool2dOptions options;  // as given: also dilation, ceil_mode, count_include_pad, divisor_override

protected:
    void check(const Tensor& x) const {
        check_ndim(*this, x, 4, "(N, C, H, W)");
        const auto out = [&](int a) {
            return functional::pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a],
                                                options.dilation[a], options.ceil_mode);
        };
        if (out(0) < 1 || out(1) < 1)
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
//     nn::MaxPool2d pool({.kernel_size = {2, 2}});
// With dilation, the taps dH, dW apart; with ceil_mode, Ho rounded up as torch.
class MaxPool2d : public Pool2d<functional::MaxPool2dCache> {
public:
    explicit MaxPool2d(Pool2dOptions options = {}) : Pool2d(options, "MaxPool2d") {}
    std::string type() const override { return "MaxPool2d"; }
    // 2x2 windows of stride 2, every other option at its default: what the fused kernel computes
    // (nn::Sequential).
    bool plain_2x2() const {
        return options == Pool2dOptions{.kernel_size = {2, 2}, .stride = options.stride} && kernel_size == Pair{2, 2} &&
               stride == Pair{2, 2} && padding == Pair{0, 0};
    }
    std::string extra_repr() const override {
        const Pair d = options.dilation;
        return Pool2d::extra_repr() + (d != Pair{1, 1} ? ", dilation=" + (d[0] == d[1] ? std::to_string(d[0]) : fmt_pair(d)) : "") +
               (options.ceil_mode ? ", ceil_mode=True" : "");
    }

protected:
    std::pair<Tensor, functional::MaxPool2dCache> run_forward(const Tensor& x) const override {
        if (!plain()) return functional::max_pool2d_forward(x, kernel_size, stride, padding, options.dilation, options.ceil_mode);
        return kernels::enabled() ? kernels::max_pool2d_forward(x, kernel_size, stride, padding)
                                  : functional::max_pool2d_forward(x, kernel_size, stride, padding);
    }
    Tensor run_backward(const Tensor& g, const functional::MaxPool2dCache& c) const override {
        return kernels::enabled() && plain() ? kernels::max_pool2d_backward(g, c) : functional::max_pool2d_backward(g, c);
    }

private:
    bool plain() const { return options.dilation == Pair{1, 1} && !options.ceil_mode; }  // what the kernels compute
};

// y = sum of x over each window / divisor: kH*kW by default (zero padding counted), the window's
// pixels inside x with count_include_pad=false, or divisor_override;
// dL/dx_p = sum over windows holding p of G / divisor.
class AvgPool2d : public Pool2d<functional::AvgPool2dCache> {
public:
    explicit AvgPool2d(Pool2dOptions options = {}) : Pool2d(options, "AvgPool2d") {
        if (options.dilation != Pair{1, 1}) throw HandgradError("AvgPool2d", "takes no dilation, got " + fmt_pair(options.dilation));
    }
    std::string type() const override { return "AvgPool2d"; }
    std::string extra_repr() const override {
        if (!options.ceil_mode && options.count_include_pad && !options.divisor_override) return Pool2d::extra_repr();
        const auto flag = [](bool b) { return std::string(b ? "True" : "False"); };
        return Pool2d::extra_repr() + ", ceil_mode=" + flag(options.ceil_mode) + ", count_include_pad=" +
               flag(options.count_include_pad) + ", divisor_override=" +
               (options.divisor_override ? std::to_string(*options.divisor_override) : "None");
    }

protected:
    std::pair<Tensor, functional::AvgPool2dCache> run_forward(const Tensor& x) const override {
        return functional::avg_pool2d_forward(x, kernel_size, stride, padding, options.ceil_mode,
                                              options.count_include_pad, options.divisor_override.value_or(0));
    }
    Tensor run_backward(const Tensor& g, const functional::AvgPool2dCache& c) const override {
        return functional::avg_pool2d_backward(g, c);
    }
};

// y[..., i, j] = mean of x over rows floor(i*H/oH) to ceil((i+1)*H/oH) and the same columns along W:
// any (H, W) to (oH, oW); an output size left unset keeps the input's. dL/dx spreads each G evenly
// over its window.
//     nn::AdaptiveAvgPool2d pool({1, 1});
class AdaptiveAvgPool2d : public FunctionalLayer<functional::AdaptiveAvgPool2dCache> {
public:
    using Size = std::array<std::optional<int64_t>, 2>;
    explicit AdaptiveAvgPool2d(Size output_size) : output_size(output_size) {
        for (auto& o : output_size)
            if (o && *o < 0)
                throw HandgradError("AdaptiveAvgPool2d", "expected output_size an int >= 0 or a pair of them (or None), got " +
                                                             std::to_string(*o));
    }
    Tensor forward(const Tensor& x) override {
        check_ndim(*this, x, 4, "(N, C, H, W)");
        return FunctionalLayer::forward(x);
    }
    std::string type() const override { return "AdaptiveAvgPool2d"; }
    std::string extra_repr() const override {
        const auto one = [](const std::optional<int64_t>& o) { return o ? std::to_string(*o) : std::string("None"); };
        return "output_size=" + (output_size[0] == output_size[1] ? one(output_size[0])
                                                                    : "(" + one(output_size[0]) + ", " + one(output_size[1]) + ")");
    }
    Size output_size;

protected:
    std::pair<Tensor, functional::AdaptiveAvgPool2dCache> run_forward(const Tensor& x) const override {
        return functional::adaptive_avg_pool2d_forward(x, {output_size[0].value_or(x.shape[2]), output_size[1].value_or(x.shape[3])});
    }
    Tensor run_backward(const Tensor& g, const functional::AdaptiveAvgPool2dCache& c) const override {
        return functional::adaptive_avg_pool2d_backward(g, c);
    }
};

}  // namespace handgrad::nn
