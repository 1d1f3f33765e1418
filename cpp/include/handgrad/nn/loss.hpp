// Losses as layers over functional/loss.hpp (mirrors src/handgrad/nn/loss.py):
//     const float value = loss.forward(input, target)[0];   Tensor grad = loss.backward();
// forward returns a 0-d tensor for 'mean' and 'sum', the per-sample losses for 'none'; backward
// takes dL/dloss of that shape (a number, 1 by default, for 'mean' and 'sum').
#pragma once

#include "handgrad/functional/loss.hpp"
#include "handgrad/tensor.hpp"

#include <optional>

namespace handgrad::nn {

using functional::Reduction;

// The bookkeeping every loss shares: its reduction, the cache of the last forward and the loss's
// shape, which dL/dloss must have.
template <class Cache>
class Loss {
public:
    Loss(std::string name, Reduction reduction) : reduction(reduction), name(std::move(name)) {}
    virtual ~Loss() = default;
    Tensor backward(const Tensor& grad_output) {
        if (!cache) throw HandgradError(repr(), "backward called before forward");
        check_grad_output(repr(), grad_output, loss_shape);
        return run_backward(grad_output, *cache);
    }
    // dL/dloss as a number: for 'mean' and 'sum' (with 'none', give one per sample)
    Tensor backward(float grad_output = 1.0f) {
        if (reduction == Reduction::none && cache)
            throw ShapeError(repr(), "grad_output", fmt_shape(loss_shape) + " (one per sample, as reduction='none')", {});
        return backward(Tensor(Shape{}, grad_output));
    }
    std::string repr() const {
        return name + "(" + (reduction == Reduction::mean ? "" : "reduction='" + functional::reduction_name(reduction) + "'") + ")";
    }
    Reduction reduction;

protected:
    Tensor keep(std::pair<Tensor, Cache> result) {
        cache = std::move(result.second);
        loss_shape = result.first.shape;
        return std::move(result.first);
    }
    virtual Tensor run_backward(const Tensor& grad_output, const Cache& cache) const = 0;
    // input (N, C) and target (N,) class indices in [0, C), as check_class_targets
    void check_class_targets(const Tensor& input, const std::vector<int64_t>& target) const {
        if (input.ndim() != 2) throw ShapeError(repr(), "input", "(N, C)", input.shape);
        if (static_cast<int64_t>(target.size()) != input.shape[0])
            throw ShapeError(repr(), "target", "(" + std::to_string(input.shape[0]) + ",)", {static_cast<int64_t>(target.size())});
        for (auto t : target)
            if (t < 0 || t >= input.shape[1])
                throw HandgradError(repr(), "target class indices must be in [0, " + std::to_string(input.shape[1] - 1) +
                                                "], got " + std::to_string(t));
    }

private:
    std::string name;
    std::optional<Cache> cache;
    Shape loss_shape;
};

// loss_n = logsumexp(x_n) - x_n[target_n];  dL/dx_n = (softmax(x_n) - onehot(target_n)) * dL/dloss_n
// (/ N for 'mean'). Shape: input (N, C), target (N,) -> () or (N,) for 'none'.
class CrossEntropyLoss : public Loss<functional::CrossEntropyCache> {
public:
    explicit CrossEntropyLoss(Reduction reduction = Reduction::mean) : Loss("CrossEntropyLoss", reduction) {}
    Tensor forward(const Tensor& input, const std::vector<int64_t>& target) {
        check_class_targets(input, target);
        return keep(functional::cross_entropy_forward(input, target, reduction));
    }

protected:
    Tensor run_backward(const Tensor& g, const functional::CrossEntropyCache& c) const override {
        return functional::cross_entropy_backward(g, c);
    }
};

// loss_n = -input[n, target_n] for log-probabilities (e.g. from LogSoftmax);
// dL/dinput[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean').
class NLLLoss : public Loss<functional::NLLLossCache> {
public:
    explicit NLLLoss(Reduction reduction = Reduction::mean) : Loss("NLLLoss", reduction) {}
    Tensor forward(const Tensor& input, const std::vector<int64_t>& target) {
        check_class_targets(input, target);
        return keep(functional::nll_loss_forward(input, target, reduction));
    }

protected:
    Tensor run_backward(const Tensor& g, const functional::NLLLossCache& c) const override {
        return functional::nll_loss_backward(g, c);
    }
};

// loss = mean (or sum) of (input - target)^2, or each of them ('none');
// dL/dinput = 2 (input - target) * dL/dloss   (/ numel for 'mean').
class MSELoss : public Loss<functional::MSELossCache> {
public:
    explicit MSELoss(Reduction reduction = Reduction::mean) : Loss("MSELoss", reduction) {}
    Tensor forward(const Tensor& input, const Tensor& target) {
        if (input.shape != target.shape)
            throw ShapeError(repr(), "target", "of the input's shape " + fmt_shape(input.shape), target.shape);
        return keep(functional::mse_loss_forward(input, target, reduction));
    }

protected:
    Tensor run_backward(const Tensor& g, const functional::MSELossCache& c) const override {
        return functional::mse_loss_backward(g, c);
    }
};

}  // namespace handgrad::nn
