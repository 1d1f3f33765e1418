// Sequential (mirrors src/handgrad/nn/container.py).
#pragma once

#include "handgrad/kernels/fused.hpp"
#include "handgrad/nn/activation.hpp"
#include "handgrad/nn/conv.hpp"
#include "handgrad/nn/linear.hpp"
#include "handgrad/nn/module.hpp"
#include "handgrad/nn/pooling.hpp"

#include <map>
#include <memory>
#include <variant>

namespace handgrad::nn {

// Layers run in order forward, in reverse order backward. Layers before the first one with
// parameters get input_grad=false unless dL/dx of the whole model is asked for.
//
// While the kernels are on, each run of layers a fused kernel computes as one op (kernels/fused.hpp)
// runs as that op, as FUSIONS in nn/container.py: Linear -> ReLU, and Conv2d -> ReLU -> MaxPool2d
// with every option but the sizes at its default and the pool's 2x2 windows of stride 2. The same
// outputs and gradients as the layers one by one; the layers' own saved state is marked out of date
// (a backward of one of them alone then fails as before any forward).
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

    // A stretch of layers [start, start + size) that forward runs as one: a fused op or one layer.
    struct Run {
        size_t start, size;
    };
    // The runs the last forward ran, in order (before any forward: every layer alone).
    std::vector<Run> runs() const {
        std::vector<Run> all;
        for (size_t i = 0; i < layers.size(); i += all.back().size) {
            auto found = fused.find(i);
            all.push_back({i, found == fused.end() ? 1 : found->second.size});
        }
        return all;
    }

    // x by value: a caller that moves its batch in saves a copy.
    Tensor forward(Tensor x) {
        Tensor h = std::move(x);
        for (size_t i = 0; i < layers.size();) {
            const size_t size = fused_size(i, h);
            h = forward_run({i, size}, std::move(h));
            i += size;
        }
        return h;
    }
    // The layers of one run forward (fused: as one op, keeping its cache until backward_run). x is
    // taken by value: a fused Linear -> ReLU keeps it for backward without a copy.
    Tensor forward_run(Run run, Tensor x) {
        if (run.size == 1) {
            fused.erase(run.start);
            return layers[run.start]->forward(std::move(x));
        }
        for (size_t i = run.start; i < run.start + run.size; ++i) layers[i]->forget_saved();
        if (auto* linear = dynamic_cast<Linear*>(layers[run.start].get())) {
            if (!is_grad_enabled()) {  // under NoGradGuard: y alone, neither x nor a copy of y kept
                Tensor out = kernels::linear_output(x, linear->weight.data, bias_of(*linear), true);
                fused[run.start] = {std::monostate{}, out.shape, run.size};
                return out;
            }
            auto [out, cache] = kernels::linear_relu_forward(std::move(x), linear->weight.data, bias_of(*linear));
            fused[run.start] = {std::move(cache), out.shape, run.size};
            return out;
        }
        auto& conv = dynamic_cast<Conv2d&>(*layers[run.start]);
        Fused& slot = fused[run.start];
        Tensor workspace;  // the previous step's columns
        if (auto* last = std::get_if<kernels::Conv2dReluMaxPool2dCache>(&slot.cache)) workspace = std::move(last->conv.cols);
        auto [out, cache] = kernels::conv2d_relu_max_pool2d_forward(x, conv.weight.data, bias_of(conv), conv.options.stride,
                                                                    conv.options.padding, std::move(workspace));
        slot = {std::move(cache), out.shape, run.size};
        return out;
    }

    Tensor backward(const Tensor& grad_output, bool input_grad = true) {
        // has_params_before[i]: does some layer before i hold a trainable parameter?
        std::vector<bool> has_params_before;
        bool seen = false;
        for (auto& layer : layers) {
            has_params_before.push_back(seen);
            seen = seen || trainable(*layer);
        }
        Tensor g = grad_output;
        for (size_t end = layers.size(); end > 0;) {
            const size_t start = run_ending_at(end - 1);
            const bool needs = input_grad || has_params_before[start];
            if (!needs && !trainable(*layers[start])) return Tensor();  // nothing from here down needs a gradient
            g = backward_run({start, end - start}, g, needs);
            end = start;
        }
        return g;
    }
    // The layers of one run backward, in reverse; input_grad: whether dL/dx of the run is wanted.
    Tensor backward_run(Run run, const Tensor& grad_output, bool input_grad) {
        if (run.size == 1) return layers[run.start]->backward(grad_output, input_grad);
        auto found = fused.find(run.start);
        if (found == fused.end())
            throw HandgradError("Sequential", "backward called before forward (nothing saved for backward)");
        const Fused& f = found->second;
        if (std::holds_alternative<std::monostate>(f.cache))
            throw HandgradError("Sequential", "backward called before forward (nothing saved for backward: the last forward ran under NoGradGuard)");
        check_grad_output(layers[run.start + run.size - 1]->repr(), grad_output, f.out_shape);
        auto& layer = dynamic_cast<WeightedLayer&>(*layers[run.start]);
        const NeedsGrad needs = layer.needs(input_grad);
        if (const auto* c = std::get_if<kernels::LinearReluCache>(&f.cache)) {
            auto g = kernels::linear_relu_backward(grad_output, *c, needs);
            return layer.accumulate(g);
        }
        auto g = kernels::conv2d_relu_max_pool2d_backward(grad_output, std::get<kernels::Conv2dReluMaxPool2dCache>(f.cache),
                                                          needs);
        return layer.accumulate(g);
    }
    // "0.weight", "0.bias", "2.weight", ...: the state_dict names of the PyTorch twin
    std::vector<std::pair<std::string, Parameter*>> named_parameters() {
        std::vector<std::pair<std::string, Parameter*>> all;
        for (size_t i = 0; i < layers.size(); ++i)
            for (auto& [name, p] : layers[i]->named_parameters()) all.emplace_back(std::to_string(i) + "." + name, p);
        return all;
    }
    // "1.running_mean", ...: the buffers under the same names as the twin's state_dict
    std::vector<std::pair<std::string, Buffer>> named_buffers() {
        std::vector<std::pair<std::string, Buffer>> all;
        for (size_t i = 0; i < layers.size(); ++i)
            for (auto& [name, b] : layers[i]->named_buffers()) all.emplace_back(std::to_string(i) + "." + name, b);
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

private:
    // A fused run's cache and its output's shape (which grad_output must have), by its first layer.
    struct Fused {
        std::variant<std::monostate, kernels::LinearReluCache, kernels::Conv2dReluMaxPool2dCache> cache;
        Shape out_shape;
        size_t size = 1;  // how many layers it runs
    };
    std::map<size_t, Fused> fused;

    static const Tensor* bias_of(const WeightedLayer& layer) { return layer.bias ? &layer.bias->data : nullptr; }
    template <class Layer>
    Layer* layer_at(size_t i) const {
        return i < layers.size() ? dynamic_cast<Layer*>(layers[i].get()) : nullptr;
    }
    // How many layers from i forward runs as one on x: 2 or 3 for a fused run, else 1.
    size_t fused_size(size_t i, const Tensor& x) const {
        if (!kernels::enabled() || !layer_at<ReLU>(i + 1)) return 1;
        if (auto* linear = layer_at<Linear>(i))
            return x.ndim() >= 1 && x.shape.back() == linear->options.in_features ? 2 : 1;
        auto* conv = layer_at<Conv2d>(i);
        auto* pool = layer_at<MaxPool2d>(i + 2);
        if (!conv || !pool || !pool->plain_2x2() || !conv->fusable() || x.ndim() != 4 || x.shape[1] != conv->options.in_channels)
            return 1;
        const auto& o = conv->options;
        const int64_t Ho = functional::conv_output_size(x.shape[2], o.kernel_size[0], o.stride[0], o.padding[0]);
        const int64_t Wo = functional::conv_output_size(x.shape[3], o.kernel_size[1], o.stride[1], o.padding[1]);
        return Ho >= 2 && Wo >= 2 ? 3 : 1;  // else a layer raises its error (a too small input)
    }
    // The first layer of the run that ends at layer `last`, as the last forward ran it.
    size_t run_ending_at(size_t last) const {
        for (auto& [start, f] : fused)
            if (start + f.size - 1 == last) return start;
        return last;
    }

    static bool trainable(Module& layer) {
        for (auto& [_, p] : layer.named_parameters())
            if (p->requires_grad) return true;
        return false;
    }
};

}  // namespace handgrad::nn
