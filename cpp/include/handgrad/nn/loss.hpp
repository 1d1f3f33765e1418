// Losses as layers over functional/loss.hpp (mirrors src/handgrad/nn/loss.py):
//     const float value = loss.forward(input, target)[0];   Tensor grad = loss.backward();
// forward returns a 0-d tensor for 'mean' and 'sum', the per-sample losses for 'none'; backward
// takes dL/dloss of that shape (a number, 1 by default, for 'mean' and 'sum').
#pragma once

#include "handgrad/functional/loss.hpp"
#include "handgrad/nn/module.hpp"

#include <optional>
#include <vector>

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
        std::vector<std::string> parts = options_repr();
        if (reduction != Reduction::mean)
            parts.insert(parts.begin() + reduction_at, "reduction='" + functional::reduction_name(reduction) + "'");
        std::string joined;
        for (auto& part : parts) joined += (joined.empty() ? "" : ", ") + part;
        return name + "(" + joined + ")";
    }
    Reduction reduction;

protected:
    Tensor keep(std::pair<Tensor, Cache> result) {
        cache = std::move(result.second);
        loss_shape = result.first.shape;
        return std::move(result.first);
    }
    virtual Tensor run_backward(const Tensor& grad_output, const Cache& cache) const = 0;
    // The options as repr shows them, Python's order; the reduction goes in at reduction_at.
    virtual std::vector<std::string> options_repr() const { return {}; }
    size_t reduction_at = 0;

private:
    std::string name;
    std::optional<Cache> cache;
    Shape loss_shape;
};

// The class losses' bookkeeping: their options (class weights, ignore_index, label smoothing) and
// the checks of Python's check_class_targets.
template <class Cache>
class ClassLoss : public Loss<Cache> {
public:
    ClassLoss(std::string name, Reduction reduction, functional::ClassLossOptions options)
        : Loss<Cache>(std::move(name), reduction), options(std::move(options)) {
        this->reduction_at = (this->options.weight ? 1 : 0) + (this->options.ignore_index != -100 ? 1 : 0);
        if (!(this->options.label_smoothing >= 0.0f && this->options.label_smoothing <= 1.0f))
            throw HandgradError(this->repr(), "label_smoothing must be in [0, 1], got " + py_repr(this->options.label_smoothing));
        if (this->options.weight && this->options.weight->ndim() != 1)
            throw ShapeError(this->repr(), "weight", "(C,), one per class", this->options.weight->shape);
    }
    functional::ClassLossOptions options;

protected:
    std::vector<std::string> options_repr() const override {
        std::vector<std::string> parts;
        if (options.weight) {
            std::string listed;
            for (float w : options.weight->data) listed += (listed.empty() ? "" : ", ") + py_repr(w);
            parts.push_back("weight=[" + listed + "]");
        }
        if (options.ignore_index != -100) parts.push_back("ignore_index=" + std::to_string(options.ignore_index));
        if (options.label_smoothing != 0) parts.push_back("label_smoothing=" + py_repr(options.label_smoothing));
        return parts;
    }
    // input (N, C, d1, ...) or (C,), with a weight of C; target class indices, one per sample
    // (N * d1 * ...), each in [0, C) or ignore_index. Whether the plain (N, C) loss computes this:
    // no option at work, every sample counted.
    bool check_class_targets(const Tensor& input, const std::vector<int64_t>& target) const {
        const int64_t C = check_class_input(input);
        const Shape samples = functional::class_sample_shape(input.shape);
        if (static_cast<int64_t>(target.size()) != Tensor::count(samples))
            throw ShapeError(this->repr(), "target", fmt_shape(samples) + " (the input's without the class axis 1)",
                             {static_cast<int64_t>(target.size())});
        bool ignored = false;
        for (auto t : target) {
            ignored = ignored || t == options.ignore_index;
            if ((t < 0 || t >= C) && t != options.ignore_index)
                throw HandgradError(this->repr(), "target class indices must be in [0, " + std::to_string(C - 1) +
                                                      "] (C=" + std::to_string(C) + ") or ignore_index (" +
                                                      std::to_string(options.ignore_index) + "), got " + std::to_string(t));
        }
        return input.ndim() == 2 && !options.weight && options.label_smoothing == 0 && !ignored;
    }
    // probabilities of the input's shape, with ignore_index left at -100
    void check_probability_targets(const Tensor& input, const Tensor& target) const {
        check_class_input(input);
        if (target.shape != input.shape)
            throw ShapeError(this->repr(), "probability target", "of the input's " + fmt_shape(input.shape), target.shape);
        if (options.ignore_index != -100)
            throw HandgradError(this->repr(), "ignore_index (" + std::to_string(options.ignore_index) +
                                                  ") applies to class indices, not probability targets; leave it -100");
    }

private:
    int64_t check_class_input(const Tensor& input) const {
        if (input.ndim() < 1) throw ShapeError(this->repr(), "input", "(N, C, d1, ...) or (C,)", input.shape);
        const int64_t C = input.ndim() == 1 ? input.shape[0] : input.shape[1];
        if (options.weight && options.weight->numel() != C)
            throw ShapeError(this->repr(), "weight", "(" + std::to_string(C) + ",), one per class", options.weight->shape);
        return C;
    }
};

// loss_n = logsumexp(x_n) - x_n[target_n];  dL/dx_n = (softmax(x_n) - onehot(target_n)) * dL/dloss_n
// (/ N for 'mean'). Shape: input (N, C), target (N,) -> () or (N,) for 'none'.
// With options (class weights, ignore_index, label smoothing), probability targets of the input's
// shape, or input (N, C, d1, ...) or (C,) (targets (N, d1, ...) or one), the Python's general form:
// loss_n = -sum_c q[n, c] log softmax(x_n)[c] (functional::class_mass), 'mean' over its divisor.
class CrossEntropyLoss : public ClassLoss<functional::CrossEntropyCache> {
public:
    explicit CrossEntropyLoss(Reduction reduction = Reduction::mean, functional::ClassLossOptions options = {})
        : ClassLoss("CrossEntropyLoss", reduction, std::move(options)) {}
    Tensor forward(const Tensor& input, const std::vector<int64_t>& target) {
        if (check_class_targets(input, target)) return keep(functional::cross_entropy_forward(input, target, reduction));
        return keep(functional::cross_entropy_forward(input, target, nullptr, reduction, options));
    }
    Tensor forward(const Tensor& input, const Tensor& probabilities) {
        check_probability_targets(input, probabilities);
        return keep(functional::cross_entropy_forward(input, {}, &probabilities, reduction, options));
    }

protected:
    Tensor run_backward(const Tensor& g, const functional::CrossEntropyCache& c) const override {
        return functional::cross_entropy_backward(g, c);
    }
};

// loss_n = -input[n, target_n] for log-probabilities (e.g. from LogSoftmax);
// dL/dinput[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean').
// With class weights or ignore_index at work, or input (N, C, d1, ...) or (C,): loss_n =
// -w[t_n] input[n, t_n], 0 where t_n is ignore_index, 'mean' over sum_n w[t_n] of the rest.
class NLLLoss : public ClassLoss<functional::NLLLossCache> {
public:
    explicit NLLLoss(Reduction reduction = Reduction::mean, functional::ClassLossOptions options = {})
        : ClassLoss("NLLLoss", reduction, std::move(options)) {
        if (this->options.label_smoothing != 0) throw HandgradError(repr(), "takes no label_smoothing");
    }
    Tensor forward(const Tensor& input, const std::vector<int64_t>& target) {
        if (check_class_targets(input, target)) return keep(functional::nll_loss_forward(input, target, reduction));
        return keep(functional::nll_loss_forward(input, target, reduction, options));
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
