// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d and MaxUnpool2d (mirrors src/handgrad/nn/pooling.py).
#pragma once

#include "handgrad/functional/pool.hpp"
#include "handgrad/kernels/pool.hpp"
#include "handgrad/nn/unbatched.hpp"

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

// kernel_size and stride >= 1, padding >= 0 and at most half the kernel, as torch's poolings check them.
inline void check_pool_sizes(const std::string& name, Pair kernel_size, Pair stride, Pair padding) {
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

// "kernel_size=2, stride=2, padding=0", each size as one number where both axes agree
inline std::string pool_sizes_repr(Pair kernel_size, Pair stride, Pair padding) {
    auto one = [](Pair p) { return p[0] == p[1] ? std::to_string(p[0]) : fmt_pair(p); };
    return "kernel_size=" + one(kernel_size) + ", stride=" + one(stride) + ", padding=" + one(padding);
}

class Pool2dBase : public Module {
public:
    explicit Pool2dBase(Pool2dOptions options, const std::string& name)
        : kernel_size(options.kernel_size), stride(options.stride.value_or(options.kernel_size)),
          padding(options.padding), options(options) {
        if (options.dilation[0] < 1 || options.dilation[1] < 1)
            throw HandgradError(name, "expected dilation >= 1, got " + fmt_pair(options.dilation));
        if (options.divisor_override && *options.divisor_override == 0)
            throw HandgradError(name, "divisor_override must be a nonzero int or None, got 0");
        check_pool_sizes(name, kernel_size, stride, padding);
        // the max-pool cache keeps each window's argmax as an int16
        if (kernel_size[0] > std::numeric_limits<int16_t>::max() / kernel_size[1])
            throw HandgradError(name, "kernel_size " + fmt_pair(kernel_size) + " has more than " +
                                          std::to_string(std::numeric_limits<int16_t>::max()) + " elements");
    }
    std::string extra_repr() const override { return pool_sizes_repr(kernel_size, stride, padding); }
    Pair kernel_size, stride, padding;
    Pool2dOptions options;  // as given: also dilation, ceil_mode, count_include_pad, divisor_override

protected:
    void check(const Tensor& x) const {
        if (x.ndim() != 3 && x.ndim() != 4) throw ShapeError(repr(), "input", "(N, C, H, W) or (C, H, W)", x.shape);
        const auto out = [&](int a) {
            return functional::pool_output_size(x.shape[x.ndim() - 2 + a], kernel_size[a], stride[a], padding[a],
                                                options.dilation[a], options.ceil_mode);
        };
        if (out(0) < 1 || out(1) < 1)
            throw ShapeError(repr(), "input", "at least the kernel size " + fmt_pair(kernel_size) + " once padded",
                             x.shape);
    }
};

// A pooling layer: checks its input, then runs its functional pair (on unbatched maps as a batch of one).
template <class Cache>
class Pool2d : public MapsLayer<Cache, Pool2dBase> {
public:
    using MapsLayer<Cache, Pool2dBase>::MapsLayer;

protected:
    void check_maps(const Tensor& x) const override { this->check(x); }
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

    // forward, and where each maximum was, as the Python's MaxPool2d(return_indices=True): the flat
    // position h*W + w in its input plane, of the output's shape. MaxUnpool2d takes them.
    std::pair<Tensor, functional::PoolIndices> forward_with_indices(const Tensor& x) {
        keep_indices = true;
        Tensor out;
        try {
            out = forward(x);
        } catch (...) {
            keep_indices = false;
            throw;
        }
        keep_indices = false;
        functional::PoolIndices indices = std::move(*last_indices);
        last_indices.reset();
        indices.shape = out.shape;  // (C, Ho, Wo) for an unbatched input
        return {std::move(out), std::move(indices)};
    }

protected:
    std::pair<Tensor, functional::MaxPool2dCache> run_forward(const Tensor& x) const override {
        auto result = !plain() ? functional::max_pool2d_forward(x, kernel_size, stride, padding, options.dilation,
                                                                options.ceil_mode)
                      : kernels::enabled() ? kernels::max_pool2d_forward(x, kernel_size, stride, padding)
                                           : functional::max_pool2d_forward(x, kernel_size, stride, padding);
        if (keep_indices) last_indices = functional::max_pool2d_indices(result.second);
        return result;
    }
    Tensor run_backward(const Tensor& g, const functional::MaxPool2dCache& c) const override {
        return kernels::enabled() && plain() ? kernels::max_pool2d_backward(g, c) : functional::max_pool2d_backward(g, c);
    }

private:
    bool plain() const { return options.dilation == Pair{1, 1} && !options.ceil_mode; }  // what the kernels compute
    bool keep_indices = false;  // forward_with_indices asks run_forward (const) to hand the indices out
    mutable std::optional<functional::PoolIndices> last_indices;
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
class AdaptiveAvgPool2d : public MapsLayer<functional::AdaptiveAvgPool2dCache> {
public:
    using Size = std::array<std::optional<int64_t>, 2>;
    explicit AdaptiveAvgPool2d(Size output_size) : output_size(output_size) {
        for (auto& o : output_size)
            if (o && *o < 0)
                throw HandgradError("AdaptiveAvgPool2d", "expected output_size an int >= 0 or a pair of them (or None), got " +
                                                             std::to_string(*o));
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

// y = zeros of (N, C, oH, oW) with y[n, c].flat[indices[n, c, k]] = x[n, c].flat[k]: puts each
// maximum of a MaxPool2d (forward_with_indices) back where it came from; (C, H, W) gives (C, oH, oW).
// (oH, oW) = (H - 1)*sH - 2*pH + kH unless output_size says ((oH, oW) or the whole shape, strictly
// within one stride of that, as torch). dL/dx[n, c].flat[k] = G[n, c].flat[indices[n, c, k]].
// It takes two inputs, so it runs beside a Sequential, never in one (as the Python's).
//     auto [y, indices] = pool.forward_with_indices(x);
//     nn::MaxUnpool2d unpool({.kernel_size = {2, 2}});  Tensor z = unpool.forward(y, indices, {4, 4});
class MaxUnpool2d : UnbatchedMaps {
public:
    explicit MaxUnpool2d(Pool2dOptions options)
        : kernel_size(options.kernel_size), stride(options.stride.value_or(options.kernel_size)), padding(options.padding) {
        check_pool_sizes("MaxUnpool2d", kernel_size, stride, padding);
        if (options.dilation != Pair{1, 1} || options.ceil_mode || !options.count_include_pad || options.divisor_override)
            throw HandgradError("MaxUnpool2d", "takes kernel_size, stride and padding only");
    }
    Tensor forward(const Tensor& x, const functional::PoolIndices& indices, const std::vector<int64_t>& output_size = {}) {
        if (x.ndim() != 3 && x.ndim() != 4) throw ShapeError(repr(), "input", "(N, C, H, W) or (C, H, W)", x.shape);
        const Pair size = functional::unpool_output_size(repr(), x.shape, kernel_size, stride, padding, output_size);
        if (indices.shape != x.shape || static_cast<int64_t>(indices.values.size()) != x.numel())
            throw ShapeError(repr(), "indices", "of the input's " + fmt_shape(x.shape) + " (MaxPool2d's indices)",
                             indices.shape);
        for (int64_t i : indices.values)
            if (i < 0 || i >= size[0] * size[1])
                throw HandgradError(repr(), "index " + std::to_string(i) + " is outside the output planes " + fmt_pair(size) +
                                                " (0 to " + std::to_string(size[0] * size[1] - 1) + ")");
        return forward_maps(x, [&](const Tensor& batch) {
            auto [out, c] = functional::max_unpool2d_forward(batch, indices.values, size);
            cache = std::move(c);
            return out;
        });
    }
    Tensor backward(const Tensor& grad_output) {
        if (!cache) throw HandgradError(repr(), "backward called before forward (nothing saved for backward)");
        return backward_maps(repr(), grad_output, [&](const Tensor& g) {
            check_grad_output(repr(), g, cache->out_shape);
            return functional::max_unpool2d_backward(g, *cache);
        });
    }
    std::string type() const { return "MaxUnpool2d"; }
    std::string repr() const { return type() + "(" + pool_sizes_repr(kernel_size, stride, padding) + ")"; }
    Pair kernel_size, stride, padding;

private:
    std::optional<functional::MaxUnpool2dCache> cache;
};

}  // namespace handgrad::nn
