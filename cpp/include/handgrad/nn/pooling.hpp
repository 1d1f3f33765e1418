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
    bool operator==(const Pool2dOptions&) const = default;
};

class Pool2dBase : public Module {
public:
    explicit Pool2dBase(Pool2dOptions options, const std::string& name)
        : options(options), kernel_size(options.kernel_size), stride(options.stride.value_or(options.kernel_size)),
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
        // the max-pool cache keeps each window's argmax as an int16
        if (kernel_size[0] > std::numeric_limits<int16_t>::max() / kernel_size[1])
            throw HandgradError(name, "kernel_size " + fmt_pair(kernel_size) + " has more than " +
                                          std::to_string(std::numeric_limits<int16_t>::max()) + " elements");
    }
    std::string extra_repr() const override {
        auto one = [](Pair p) { return p[0] == p[1] ? std::to_string(p[0]) : fmt_pair(p); };
        return "kernel_size=" + one(kernel_size) + ", stride=" + one(stride) + ", padding=" + one(padding);
    }
    Pool2dOptions options;  // as given
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
//     nn::MaxPool2d pool({.kernel_size = {2, 2}});
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

protected:
    std::pair<Tensor, functional::MaxPool2dCache> run_forward(const Tensor& x) const override {
        return kernels::enabled() ? kernels::max_pool2d_forward(x, kernel_size, stride, padding)
                                  : functional::max_pool2d_forward(x, kernel_size, stride, padding);
    }
    Tensor run_backward(const Tensor& g, const functional::MaxPool2dCache& c) const override {
        return kernels::enabled() ? kernels::max_pool2d_backward(g, c) : functional::max_pool2d_backward(g, c);
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

}  // namespace handgrad::nn
