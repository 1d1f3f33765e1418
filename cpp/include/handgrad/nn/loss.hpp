// Losses as layers over functional/loss.hpp (mirrors src/handgrad/nn/loss.py).
#pragma once

#include "handgrad/functional/loss.hpp"
#include "handgrad/tensor.hpp"

#include <optional>

namespace handgrad::nn {

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

}  // namespace handgrad::nn
