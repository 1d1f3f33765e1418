// Optimizers and schedulers with torch.optim's semantics, in order of increasing complexity
// (mirrors src/handgrad/optim/). Scalars are cast to float32 before they touch a parameter, as the
// Python does, so the two walk the same float32 path.
//
// Every FLUSH_EVERY-th step() the updates set subnormal state entries (0 < |v| < FLT_MIN) to zero,
// as the Python does: state that only decays (the momentum of a dead ReLU unit, whose gradient is 0)
// sinks into subnormal floats, which x86 CPUs compute 10-100x slower; a parameter then moves by at
// most lr * 1e-38, and the two stay equal bit for bit.
#pragma once

#include "handgrad/kernels/optim.hpp"
#include "handgrad/nn/parameter.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace handgrad::optim {

inline constexpr int64_t FLUSH_EVERY = 8;  // step() calls between flushes of subnormal state, as the Python's
using kernels::flush_threshold;
using kernels::flushed;

class Optimizer {
public:
    explicit Optimizer(std::vector<Parameter*> params, double lr) : params(std::move(params)), lr(lr) {}
    virtual ~Optimizer() = default;
    void zero_grad() {
        for (auto* p : params) p->grad = Tensor();
    }
    // One update of every parameter that has a gradient.
    virtual void step() = 0;

    std::vector<Parameter*> params;
    double lr;  // the schedulers set it between epochs
    int64_t step_count = 0;  // step() calls so far

protected:
    // Count this step(); whether its updates flush subnormal state (every FLUSH_EVERY-th step)
    bool count_step() { return ++step_count % FLUSH_EVERY == 0; }
};

struct SGDOptions {
    double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
    bool nesterov = false, maximize = false;
};

// For each parameter p with gradient g (-g with maximize):
//     d_p = g + weight_decay * p                    (L2 penalty)
//     buf = d_p                                     first step, when momentum != 0
//     buf = momentum * buf + (1 - dampening) * d_p  later steps
//     d_p = d_p + momentum * buf  with nesterov,  else  d_p = buf
//     p   = p - lr * d_p
class SGD : public Optimizer {
public:
    SGD(std::vector<Parameter*> params, SGDOptions options)
        : Optimizer(std::move(params), options.lr), options(options), momentum_buffer(this->params.size()) {
        if (options.lr < 0) throw HandgradError("SGD", "Invalid learning rate: " + std::to_string(options.lr));
        if (options.momentum < 0) throw HandgradError("SGD", "Invalid momentum value: " + std::to_string(options.momentum));
        if (options.weight_decay < 0)
            throw HandgradError("SGD", "Invalid weight_decay value: " + std::to_string(options.weight_decay));
        if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
            throw HandgradError("SGD", "Nesterov momentum requires a momentum and zero dampening");
    }

    void step() override {
        const bool flush = count_step();
        const float tiny = flush_threshold(flush);  // for the reference loops' flushed(v, tiny)
        const float lr_ = static_cast<float>(lr), momentum = static_cast<float>(options.momentum);
        const float dampening = static_cast<float>(options.dampening);
        const float weight_decay = static_cast<float>(options.weight_decay);
        for (size_t k = 0; k < params.size(); ++k) {
            Parameter& p = *params[k];
            if (p.grad.data.empty()) continue;
            if (kernels::enabled()) {  // the same update in one pass
                Tensor& buf = momentum_buffer[k];
                const bool first = buf.data.empty();
                if (momentum != 0 && first) buf = Tensor(p.data.shape);
                kernels::sgd_update(p.data.ptr(), p.grad.ptr(), momentum != 0 ? buf.ptr() : nullptr, p.data.numel(),
                                    {.lr = lr_, .momentum = momentum, .dampening = dampening,
                                     .weight_decay = weight_decay, .nesterov = options.nesterov, .first = first,
                                     .maximize = options.maximize, .flush = flush});
                continue;
            }
            Tensor d_p = p.grad;
            if (options.maximize)
                for (float& v : d_p.data) v = -v;
            if (weight_decay != 0)
                for (int64_t i = 0; i < d_p.numel(); ++i) d_p[i] += weight_decay * p.data[i];
            if (momentum != 0) {
                Tensor& buf = momentum_buffer[k];
                if (buf.data.empty()) buf = d_p;  // buf = d_p on the first step
                else
                    for (int64_t i = 0; i < buf.numel(); ++i) {
                        buf[i] *= momentum;
                        buf[i] = flushed(buf[i] + (1 - dampening) * d_p[i], tiny);
                    }
                if (options.nesterov)
                    for (int64_t i = 0; i < d_p.numel(); ++i) d_p[i] += momentum * buf[i];
                else
                    d_p = buf;
            }
            for (int64_t i = 0; i < d_p.numel(); ++i) p.data[i] -= lr_ * d_p[i];
        }
    }

    SGDOptions options;
    std::vector<Tensor> momentum_buffer;  // per parameter; empty until its first step
};

struct AdamOptions {
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
    bool decoupled_weight_decay = false;  // true: AdamW
    bool amsgrad = false, maximize = false;
};

// For each parameter p with gradient g (-g with maximize); t counts this parameter's updates, one per step():
//     g = g + weight_decay * p                        (L2; or, decoupled, p = p * (1 - lr * weight_decay))
//     t = t + 1
//     m = beta1 * m + (1 - beta1) * g                 (exp_avg)
//     v = beta2 * v + (1 - beta2) * g * g             (exp_avg_sq)
//     v = v_max = max(v_max, v)                       (amsgrad only: max_exp_avg_sq)
//     denom = sqrt(v) / sqrt(1 - beta2**t) + eps      (eps outside the square root)
//     p = p - lr / (1 - beta1**t) * m / denom
class Adam : public Optimizer {
public:
    Adam(std::vector<Parameter*> params, AdamOptions options)
        : Optimizer(std::move(params), options.lr), options(options), steps(this->params.size(), 0),
          exp_avg(this->params.size()), exp_avg_sq(this->params.size()), max_exp_avg_sq(this->params.size()) {
        if (options.lr < 0) throw HandgradError("Adam", "Invalid learning rate: " + std::to_string(options.lr));
        if (options.eps < 0) throw HandgradError("Adam", "Invalid epsilon value: " + std::to_string(options.eps));
        if (!(options.beta1 >= 0 && options.beta1 < 1))
            throw HandgradError("Adam", "Invalid beta parameter at index 0: " + std::to_string(options.beta1));
        if (!(options.beta2 >= 0 && options.beta2 < 1))
            throw HandgradError("Adam", "Invalid beta parameter at index 1: " + std::to_string(options.beta2));
        if (options.weight_decay < 0)
            throw HandgradError("Adam", "Invalid weight_decay value: " + std::to_string(options.weight_decay));
    }

    void step() override {
        const bool flush = count_step();
        const float tiny = flush_threshold(flush);  // for the reference loops' flushed(v, tiny)
        const float beta1 = static_cast<float>(options.beta1), beta2 = static_cast<float>(options.beta2);
        const float one_minus_beta1 = static_cast<float>(1 - options.beta1);
        const float one_minus_beta2 = static_cast<float>(1 - options.beta2);
        for (size_t k = 0; k < params.size(); ++k) {
            Parameter& p = *params[k];
            if (p.grad.data.empty()) continue;
            if (exp_avg[k].data.empty()) exp_avg[k] = exp_avg_sq[k] = Tensor(p.data.shape);
            if (options.amsgrad && max_exp_avg_sq[k].data.empty()) max_exp_avg_sq[k] = Tensor(p.data.shape);
            float* v_max = options.amsgrad ? max_exp_avg_sq[k].ptr() : nullptr;
            const int64_t t = ++steps[k];
            const double bias_correction1 = 1 - std::pow(options.beta1, static_cast<double>(t));
            const double bias_correction2 = 1 - std::pow(options.beta2, static_cast<double>(t));
            const float sqrt_bc2 = static_cast<float>(std::sqrt(bias_correction2));
            const float step_size = static_cast<float>(lr / bias_correction1), eps = static_cast<float>(options.eps);
            const bool decoupled = options.decoupled_weight_decay && options.weight_decay != 0;
            const float shrink = decoupled ? static_cast<float>(1 - lr * options.weight_decay) : 1.0f;
            const float wd = decoupled ? 0.0f : static_cast<float>(options.weight_decay);
            if (kernels::enabled()) {  // the same update in one pass
                kernels::adam_update(p.data.ptr(), p.grad.ptr(), exp_avg[k].ptr(), exp_avg_sq[k].ptr(), v_max,
                                     p.data.numel(),
                                     {.beta1 = beta1, .one_minus_beta1 = one_minus_beta1, .beta2 = beta2,
                                      .one_minus_beta2 = one_minus_beta2, .step_size = step_size,
                                      .sqrt_bias_correction2 = sqrt_bc2, .eps = eps, .weight_decay = wd,
                                      .shrink = shrink, .maximize = options.maximize, .flush = flush});
                continue;
            }
            Tensor g = p.grad;
            if (options.maximize)
                for (float& v : g.data) v = -v;
            if (shrink != 1.0f)
                for (float& w : p.data.data) w *= shrink;
            if (wd != 0)
                for (int64_t i = 0; i < g.numel(); ++i) g[i] += wd * p.data[i];
            Tensor &m = exp_avg[k], &v = exp_avg_sq[k];
            for (int64_t i = 0; i < g.numel(); ++i) {
                m[i] = flushed(m[i] * beta1 + one_minus_beta1 * g[i], tiny);
                v[i] = flushed(v[i] * beta2 + one_minus_beta2 * g[i] * g[i], tiny);
                float v_used = v[i];
                if (v_max) v_used = v_max[i] = std::isnan(v[i]) ? v[i] : std::max(v_max[i], v[i]);  // NaN wins, as np.maximum
                const float denom = std::sqrt(v_used) / sqrt_bc2 + eps;
                p.data[i] -= step_size * (m[i] / denom);
            }
        }
    }

    AdamOptions options;
    std::vector<int64_t> steps;
    std::vector<Tensor> exp_avg, exp_avg_sq, max_exp_avg_sq;  // max_exp_avg_sq: amsgrad only
};

struct RMSpropOptions {
    double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
    bool centered = false, maximize = false;
};

// For each parameter p with gradient g (-g with maximize); v, m and buf start at zero:
//     g = g + weight_decay * p                           (L2 penalty)
//     v = alpha * v + (1 - alpha) * g * g                (square_avg)
//     m = lerp(m, g, 1 - alpha) = alpha * m + (1 - alpha) * g      (grad_avg, centered only)
//     avg = sqrt(v - m * m) + eps  centered,  else  sqrt(v) + eps  (eps outside the square root)
//     buf = momentum * buf + g / avg;  p = p - lr * buf  (momentum > 0)
//     p = p - lr * g / avg                               (otherwise)
class RMSprop : public Optimizer {
public:
    RMSprop(std::vector<Parameter*> params, RMSpropOptions options)
        : Optimizer(std::move(params), options.lr), options(options), square_avg(this->params.size()),
          grad_avg(this->params.size()), momentum_buffer(this->params.size()) {
        for (auto [name, value] : {std::pair<const char*, double>{"learning rate", options.lr}, {"epsilon value", options.eps},
                                   {"momentum value", options.momentum}, {"weight_decay value", options.weight_decay},
                                   {"alpha value", options.alpha}})
            if (!(value >= 0)) throw HandgradError("RMSprop", std::string("Invalid ") + name + ": " + std::to_string(value));
    }

    void step() override {
        const bool flush = count_step();
        const float tiny = flush_threshold(flush);  // for the reference loops' flushed(v, tiny)
        const float alpha = static_cast<float>(options.alpha), one_minus_alpha = static_cast<float>(1 - options.alpha);
        const float eps = static_cast<float>(options.eps), lr_ = static_cast<float>(lr);
        const float weight_decay = static_cast<float>(options.weight_decay), momentum = static_cast<float>(options.momentum);
        for (size_t k = 0; k < params.size(); ++k) {
            Parameter& p = *params[k];
            if (p.grad.data.empty()) continue;
            Tensor &v = square_avg[k], &m = grad_avg[k], &buf = momentum_buffer[k];
            if (v.data.empty()) v = Tensor(p.data.shape);
            if (options.centered && m.data.empty()) m = Tensor(p.data.shape);
            if (momentum > 0 && buf.data.empty()) buf = Tensor(p.data.shape);
            for (int64_t i = 0; i < p.data.numel(); ++i) {
                const float grad = options.maximize ? -p.grad[i] : p.grad[i];
                const float g = weight_decay != 0 ? grad + weight_decay * p.data[i] : grad;
                v[i] = flushed(v[i] * alpha + one_minus_alpha * g * g, tiny);
                if (options.centered) m[i] = flushed(lerp(m[i], g, one_minus_alpha, 1 - options.alpha), tiny);
                const float avg = std::sqrt(options.centered ? v[i] - m[i] * m[i] : v[i]) + eps;
                if (momentum > 0) {
                    buf[i] = flushed(buf[i] * momentum + g / avg, tiny);
                    p.data[i] -= lr_ * buf[i];
                } else {
                    p.data[i] -= (lr_ * g) / avg;
                }
            }
        }
    }

    RMSpropOptions options;
    std::vector<Tensor> square_avg, grad_avg, momentum_buffer;  // per parameter; empty until needed

private:
    // start moved the fraction `weight` of the way to end, in the form torch.lerp rounds least
    static float lerp(float start, float end, float weight, double exact_weight) {
        return std::fabs(exact_weight) < 0.5 ? start + weight * (end - start)
                                             : end - (end - start) * static_cast<float>(1 - exact_weight);
    }
};

struct AdagradOptions {
    double lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, initial_accumulator_value = 0.0, eps = 1e-10;
    bool maximize = false;
};

// For each parameter p with gradient g (-g with maximize); t counts this parameter's updates, one per
// step(), and s starts at initial_accumulator_value (s only grows: nothing to flush):
//     g   = g + weight_decay * p                 (L2 penalty)
//     clr = lr / (1 + (t - 1) * lr_decay)
//     s   = s + g * g
//     p   = p - clr * g / (sqrt(s) + eps)
class Adagrad : public Optimizer {
public:
    Adagrad(std::vector<Parameter*> params, AdagradOptions options)
        : Optimizer(std::move(params), options.lr), options(options), steps(this->params.size(), 0),
          state_sum(this->params.size()) {
        for (auto [name, value] : {std::pair<const char*, double>{"learning rate", options.lr}, {"lr_decay value", options.lr_decay},
                                   {"weight_decay value", options.weight_decay},
                                   {"initial_accumulator_value value", options.initial_accumulator_value},
                                   {"epsilon value", options.eps}})
            if (!(value >= 0)) throw HandgradError("Adagrad", std::string("Invalid ") + name + ": " + std::to_string(value));
    }

    void step() override {
        count_step();
        const float weight_decay = static_cast<float>(options.weight_decay), eps = static_cast<float>(options.eps);
        for (size_t k = 0; k < params.size(); ++k) {
            Parameter& p = *params[k];
            if (p.grad.data.empty()) continue;
            Tensor& s = state_sum[k];
            if (s.data.empty()) s = Tensor(p.data.shape, static_cast<float>(options.initial_accumulator_value));
            const int64_t t = ++steps[k];
            const float clr = static_cast<float>(lr / (1 + static_cast<double>(t - 1) * options.lr_decay));
            for (int64_t i = 0; i < p.data.numel(); ++i) {
                const float grad = options.maximize ? -p.grad[i] : p.grad[i];
                const float g = weight_decay != 0 ? grad + weight_decay * p.data[i] : grad;
                s[i] += g * g;
                p.data[i] -= (clr * g) / (std::sqrt(s[i]) + eps);
            }
        }
    }

    AdagradOptions options;
    std::vector<int64_t> steps;
    std::vector<Tensor> state_sum;
};

// lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, set once per epoch.
class CosineAnnealingLR {
public:
    CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0)
        : optimizer(optimizer), base_lr(optimizer.lr), T_max(T_max), eta_min(eta_min) {
        if (T_max <= 0) throw HandgradError("CosineAnnealingLR", "T_max must be positive, got " + std::to_string(T_max));
    }
    void step() {
        ++last_epoch;
        const double cosine = (1 + std::cos(M_PI * static_cast<double>(last_epoch) / static_cast<double>(T_max))) / 2;
        optimizer.lr = eta_min + (base_lr - eta_min) * cosine;
    }
    Optimizer& optimizer;
    double base_lr;
    int64_t T_max, last_epoch = 0;
    double eta_min;
};

// lr = initial_lr * gamma ** (epoch // step_size)
class StepLR {
public:
    StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1)
        : optimizer(optimizer), base_lr(optimizer.lr), step_size(step_size), gamma(gamma) {
        if (step_size < 1) throw HandgradError("StepLR", "step_size must be a positive integer, got " + std::to_string(step_size));
    }
    void step() {
        ++last_epoch;
        optimizer.lr = base_lr * std::pow(gamma, static_cast<double>(last_epoch / step_size));
    }
    Optimizer& optimizer;
    double base_lr;
    int64_t step_size, last_epoch = 0;
    double gamma;
};

// lr = initial_lr * gamma ** (the number of milestones <= epoch), from epoch 0 on (a milestone
// listed twice decays twice; one at 0 decays from the start, as torch's).
class MultiStepLR {
public:
    MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1)
        : optimizer(optimizer), base_lr(optimizer.lr), milestones(std::move(milestones)), gamma(gamma) {
        set_lr();
    }
    void step() {
        ++last_epoch;
        set_lr();
    }
    Optimizer& optimizer;
    double base_lr;
    std::vector<int64_t> milestones;
    double gamma;
    int64_t last_epoch = 0;

private:
    void set_lr() {
        const auto passed = std::count_if(milestones.begin(), milestones.end(), [&](int64_t m) { return m <= last_epoch; });
        optimizer.lr = base_lr * std::pow(gamma, static_cast<double>(passed));
    }
};

struct ReduceLROnPlateauOptions {
    double factor = 0.1;
    int64_t patience = 10;
    double threshold = 1e-4;  // relative, mode 'min'
    int64_t cooldown = 0;
    double min_lr = 0.0, eps = 1e-8;
};

// Multiply the lr by factor once the metric given to step(metric) (a loss: mode 'min') has not
// improved for more than patience epochs:
//     improved   = metric < best * (1 - threshold)
//     bad_epochs = 0 if improved (and best = metric) else bad_epochs + 1;  0 during a cooldown
//     bad_epochs > patience:  lr = max(lr * factor, min_lr) (unless that changes lr by eps or less),
//                             then a cooldown of `cooldown` epochs and bad_epochs = 0
class ReduceLROnPlateau {
public:
    ReduceLROnPlateau(Optimizer& optimizer, ReduceLROnPlateauOptions options) : optimizer(optimizer), options(options) {
        if (options.factor >= 1.0)
            throw HandgradError("ReduceLROnPlateau", "factor must be < 1.0, got " + std::to_string(options.factor));
    }
    void step(double metric) {
        if (metric < best * (1 - options.threshold)) best = metric, bad_epochs = 0;
        else ++bad_epochs;
        if (cooldown_counter > 0) --cooldown_counter, bad_epochs = 0;
        if (bad_epochs > options.patience) {
            const double reduced = std::max(optimizer.lr * options.factor, options.min_lr);
            if (optimizer.lr - reduced > options.eps) optimizer.lr = reduced;
            cooldown_counter = options.cooldown, bad_epochs = 0;
        }
    }
    Optimizer& optimizer;
    ReduceLROnPlateauOptions options;
    double best = std::numeric_limits<double>::infinity();
    int64_t bad_epochs = 0, cooldown_counter = 0;
};

}  // namespace handgrad::optim
