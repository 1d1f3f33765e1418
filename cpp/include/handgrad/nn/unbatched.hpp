// Unbatched (C, H, W) maps, as torch's (and the Python core's) convolutions and poolings take them:
// the layer runs them as a batch of one, N = 1, and hands back (C, Ho, Wo); its backward then takes
// dL/dy of that shape and returns dL/dx as (C, H, W).
#pragma once

#include "handgrad/nn/module.hpp"

namespace handgrad::nn {

// x with a batch axis of one in front: (C, H, W) -> (1, C, H, W), and back.
inline Tensor with_batch_axis(Tensor x) {
    x.shape.insert(x.shape.begin(), 1);
    return x;
}
inline Tensor without_batch_axis(Tensor x) {
    x.shape.erase(x.shape.begin());
    return x;
}

// Remembers whether the last forward was unbatched, and wraps the layer's 4-D forward and backward.
class UnbatchedMaps {
protected:
    // forward4(x) on x, or on x as a batch of one when it is 3-D (the output then without the batch axis)
    template <class Forward>
    Tensor forward_maps(const Tensor& x, Forward&& forward4) {
        unbatched_output.reset();
        if (x.ndim() != 3) return forward4(x);
        Tensor out = without_batch_axis(forward4(with_batch_axis(x)));
        unbatched_output = out.shape;
        return out;
    }
    // backward4(grad_output) after a batched forward; after an unbatched one, grad_output must be
    // that forward's 3-D output shape, and dL/dx comes back 3-D (empty when not asked for).
    template <class Backward>
    Tensor backward_maps(const std::string& where, const Tensor& grad_output, Backward&& backward4) {
        if (!unbatched_output) return backward4(grad_output);
        check_grad_output(where, grad_output, *unbatched_output);
        Tensor grad_input = backward4(with_batch_axis(grad_output));
        return grad_input.ndim() == 4 ? without_batch_axis(std::move(grad_input)) : grad_input;
    }

private:
    std::optional<Shape> unbatched_output;  // the last forward's (C, Ho, Wo), when its input was (C, H, W)
};

// A layer over maps whose math is a functional pair (FunctionalLayer): checks its input
// (check_maps), then runs the pair on (N, C, H, W), or on unbatched (C, H, W) as a batch of one.
template <class Cache, class Base = Module>
class MapsLayer : public FunctionalLayer<Cache, Base>, UnbatchedMaps {
    using Layer = FunctionalLayer<Cache, Base>;

public:
    using Layer::Layer;
    Tensor forward(const Tensor& x) override {
        check_maps(x);
        return forward_maps(x, [this](const Tensor& batch) { return Layer::forward(batch); });
    }
    Tensor backward(const Tensor& grad_output, bool input_grad = true) override {
        return backward_maps(this->repr(), grad_output, [&](const Tensor& g) { return Layer::backward(g, input_grad); });
    }

protected:
    virtual void check_maps(const Tensor& x) const {
        if (x.ndim() != 3 && x.ndim() != 4) throw ShapeError(this->repr(), "input", "(N, C, H, W) or (C, H, W)", x.shape);
    }
};

}  // namespace handgrad::nn
