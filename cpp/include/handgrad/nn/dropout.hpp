// Dropout (mirrors src/handgrad/nn/dropout.py).
#pragma once

#include "handgrad/functional/dropout.hpp"
#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

// Train: y = x * mask, mask = [u >= p] / (1 - p).  Eval: y = x.  dL/dx = G * mask (G in eval).
class Dropout : public Module {
public:
    explicit Dropout(double p = 0.5) : p(p) {
        if (!(p >= 0.0 && p <= 1.0))  // written so that NaN is refused too
            throw HandgradError("Dropout", "dropout probability has to be between 0 and 1, but got " + std::to_string(p));
    }
    Tensor forward(const Tensor& x) override {
        if (training && p > 0.0) {
            auto [out, m] = functional::dropout_forward(x, static_cast<float>(p), default_generator());
            save_for_backward(mask, std::move(m), out.shape);
            return out;
        }
        save_for_backward(mask, Tensor(), x.shape);  // empty: the identity
        return x;
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        const auto& m = saved(mask, grad_output);
        if (!input_grad) return Tensor();
        return m.data.empty() ? grad_output : functional::dropout_backward(grad_output, m);
    }
    std::string type() const override { return "Dropout"; }
    std::string extra_repr() const override { return "p=" + py_repr(p); }
    double p;  // as Python's float, so the checkpoint keeps it exactly

private:
    std::optional<Tensor> mask;
};

}  // namespace handgrad::nn
