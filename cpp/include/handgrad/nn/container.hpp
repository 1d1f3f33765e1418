// Sequential (mirrors src/handgrad/nn/container.py).
#pragma once

#include "handgrad/nn/module.hpp"

#include <memory>

namespace handgrad::nn {

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
        // has_params_before[i]: does some layer before i hold a trainable parameter?
        std::vector<bool> has_params_before;
        bool seen = false;
        for (auto& layer : layers) {
            has_params_before.push_back(seen);
            seen = seen || trainable(*layer);
        }
        Tensor g = grad_output;
        for (size_t i = layers.size(); i-- > 0;) {
            const bool needs = input_grad || has_params_before[i];
            if (!needs && !trainable(*layers[i])) return Tensor();  // nothing from here down needs a gradient
            g = layers[i]->backward(g, needs);
        }
        return g;
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
    static bool trainable(Module& layer) {
        for (auto& [_, p] : layer.named_parameters())
            if (p->requires_grad) return true;
        return false;
    }
};

}  // namespace handgrad::nn
