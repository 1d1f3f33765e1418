// Dropout (mirrors src/handgrad/nn/dropout.py).
#pragma once

#include "handgrad/functional/dropout.hpp"
#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

// Train: y = x * mask, mask = [u >= p] / (1 - p).  Eval: y = x.  dL/dx = G * mask (G in eval).
class Dropout : public Module {
public:
    explicit Dropout(double p = 0.5, const std::string& type_name = "Dropout") : p(p) {
        if (!(p >= 0.0 && p <= 1.0))  // written so that NaN is refused too
            throw HandgradError(type_name, "dropout probability has to be between 0 and 1, but got " + std::to_string(p));
    }
    Tensor forward(const Tensor& x) override {
        check_input(x);
        if (training && p > 0.0) {
            auto [out, m] = draw(x, static_cast<float>(p));
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

protected:
    virtual void check_input(const Tensor&) const {}
    virtual std::pair<Tensor, Tensor> draw(const Tensor& x, float probability) const {
        return functional::dropout_forward(x, probability, default_generator());
    }

private:
    std::optional<Tensor> mask;
};

// Channel-wise dropout: in training each channel of each sample is zeroed with probability p (all its
// positions together) and the rest scaled by 1 / (1 - p); eval: y = x. Shape (N, C, H, W), or
// (N, C, L) as torch.nn.Dropout2d takes a 3-D input. dL/dx = G * mask.
class Dropout2d : public Dropout {
public:
    explicit Dropout2d(double p = 0.5) : Dropout(p, "Dropout2d") {}
    std::string type() const override { return "Dropout2d"; }

protected:
    void check_input(const Tensor& x) const override {
        if (x.ndim() != 3 && x.ndim() != 4) throw ShapeError(repr(), "input", "(N, C, H, W) or (N, C, L)", x.shape);
    }
    std::pair<Tensor, Tensor> draw(const Tensor& x, float probability) const override {
        return functional::dropout2d_forward(x, probability, default_generator());
    }
};

}  // namespace handgrad::nn
