// The base of every layer, and the two shapes layers share: a functional forward/backward pair
// with its cache, and a weight with an optional bias (mirrors src/handgrad/nn/module.py).
#pragma once

#include "handgrad/functional/conv.hpp"
#include "handgrad/grad_mode.hpp"
#include "handgrad/nn/init.hpp"
#include "handgrad/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace handgrad::nn {

using functional::Pair;

// State a layer saves but does not train (BatchNorm's running statistics and batch count): float
// values, or one integer count (stored as a 0-d I64 tensor, as PyTorch's num_batches_tracked).
struct Buffer {
    Tensor* values = nullptr;
    int64_t* count = nullptr;
};

class Module {
public:
    virtual ~Module() = default;
    virtual Tensor forward(const Tensor& x) = 0;
    // The same on an x the caller no longer needs: a layer that can reuse its memory (Flatten)
    // overrides this; the others compute from it as from any x.
    virtual Tensor forward(Tensor&& x) { return forward(static_cast<const Tensor&>(x)); }
    // dL/dx from dL/dy; input_grad=false skips dL/dx (the first layers of a model need none).
    virtual Tensor backward(const Tensor& grad_output, bool input_grad = true) = 0;
    // "weight", "bias" in the order of the PyTorch twin's state_dict
    virtual std::vector<std::pair<std::string, Parameter*>> named_parameters() { return {}; }
    // "running_mean", ... after the parameters in the state_dict, as PyTorch's buffers
    virtual std::vector<std::pair<std::string, Buffer>> named_buffers() { return {}; }
    virtual std::string type() const = 0;
    virtual std::string extra_repr() const { return ""; }
    std::string repr() const { return type() + "(" + extra_repr() + ")"; }
    void train(bool mode = true) { training = mode; }
    // Mark what the last forward saved as out of date (a fused op computed this layer's part, see
    // nn::Sequential): backward then fails as if no forward had run.
    void forget_saved() { has_saved = false; }
    void eval() { train(false); }
    bool training = true;

protected:
    // Keep the forward's cache and its output's shape, which grad_output must have (as
    // Module._save_for_backward).
    template <class Cache>
    void save_for_backward(std::optional<Cache>& slot, Cache cache, const Shape& out_shape) {
        if (!is_grad_enabled()) {  // under NoGradGuard: nothing kept, so backward fails as before a forward
            slot.reset();
            has_saved = false;
            return;
        }
        slot = std::move(cache);
        output_shape = out_shape;
        has_saved = true;
    }
    // The cache of the last forward, after checking that there was one and that grad_output fits it:
    // a clear error instead of reading stale memory or past the end of a buffer.
    template <class Cache>
    const Cache& saved(const std::optional<Cache>& cache, const Tensor& grad_output) const {
        if (!cache || !has_saved) throw HandgradError(repr(), "backward called before forward (nothing saved for backward)");
        check_grad_output(repr(), grad_output, output_shape);
        return *cache;
    }

private:
    Shape output_shape;
    bool has_saved = false;
};

inline void check_ndim(const Module& layer, const Tensor& x, int ndim, const std::string& expected) {
    if (x.ndim() != ndim) throw ShapeError(layer.repr(), "input", expected, x.shape);
}

// A number as Python's repr writes it: the shortest text that reads back the same ("1e-05", "0.1",
// "1.0"); a float is read back as a float, so 0.2f is "0.2" as the float64 0.2 is in Python.
template <class Real>
std::string py_repr(Real v) {
    char buf[48];
    int precision = 1;
    for (; precision <= 17; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, static_cast<double>(v));
        if (static_cast<Real>(std::strtod(buf, nullptr)) == v) break;
    }
    std::string s = buf;
    const double magnitude = std::fabs(static_cast<double>(v));
    if (s.find('e') != std::string::npos && magnitude >= 1e-4 && magnitude < 1e16) {
        // %g wrote "2e+01" where Python writes "20.0": positional from 1e-4 up to 1e16, as repr
        const int exponent = static_cast<int>(std::floor(std::log10(magnitude)));
        std::snprintf(buf, sizeof buf, "%.*f", std::max(std::min(precision, 17) - 1 - exponent, 0), static_cast<double>(v));
        s = buf;
    }
    if (s.find_first_of(".en") == std::string::npos) s += ".0";  // an integral float: "1.0", not "1"
    return s;
}

inline std::string fmt_pair(Pair p) {
    std::string s = "(";  // appended in steps: GCC 12 warns (-Wrestrict) about "(" + std::string&& inlined
    s += std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")";
    return s;
}

// A layer whose math is a functional forward/backward pair (run_forward, run_backward): it keeps
// what the forward caches until backward. Base is Module, or a Module with the layer's options.
template <class Cache, class Base = Module>
class FunctionalLayer : public Base {
public:
    using Base::Base;
    Tensor forward(const Tensor& x) override {
        auto [out, c] = run_forward(x);
        this->save_for_backward(cache, std::move(c), out.shape);
        return out;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const auto& c = this->saved(cache, grad_output);
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

    // (public for nn::Sequential, which runs fused ops in the layer's place)
    // Which gradients backward should compute: dL/dx if asked, each parameter's if it requires one.
    NeedsGrad needs(bool input_grad) const {
        return {.input = input_grad, .weight = weight.requires_grad, .bias = bias && bias->requires_grad};
    }
    // Accumulate grad_weight and grad_bias into the parameters (each checked against its shape);
    // hand grad_input on.
    template <class Grads>
    Tensor accumulate(Grads& g) {
        weight.accumulate_grad(std::move(g.grad_weight), repr(), "grad_weight");
        if (bias) bias->accumulate_grad(std::move(g.grad_bias), repr(), "grad_bias");
        return std::move(g.grad_input);
    }

protected:
    // Allocate and initialise the parameters (after the layer has checked its options).
    void make_parameters(std::vector<int64_t> weight_shape, bool has_bias) {
        weight.data = Tensor(weight_shape);
        if (has_bias) bias = Parameter{.data = Tensor({weight_shape[0]})};
        reset_parameters(default_generator());
    }
};

}  // namespace handgrad::nn
