"""Linear (fully connected) layer: the math, once, as a forward/backward pair."""
from __future__ import annotations

import numpy as np

ALL = (True, True, True)


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """y = x @ weight.T + bias

    Shapes: x (*, in_features), weight (out_features, in_features), bias (out_features,)
    -> y (*, out_features).
    """
    out = x @ weight.T
    if bias is not None:
        out += bias
    # backward needs x (for grad_weight) and weight (for grad_input); nothing else.
    return out, (x, weight, bias is not None)


def linear_backward(grad_output: np.ndarray, cache, needs_input_grad=ALL):
    """Gradients of L through y = x @ weight.T + bias, with G = dL/dy of shape (*, out_features):

        grad_input  = G @ weight            (*, in_features)
        grad_weight = G.T @ x               (out_features, in_features), summed over all rows
        grad_bias   = G.sum(rows)           (out_features,)

    Returns (grad_input, grad_weight, grad_bias); an entry is None when ``needs_input_grad`` says
    it is not wanted (or the layer has no bias).
    """
    x, weight, has_bias = cache
    grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
    grad_input = grad_output @ weight if needs_input_grad[0] else None
    grad_weight = grad_rows.T @ x.reshape(-1, x.shape[-1]) if needs_input_grad[1] else None
    grad_bias = grad_rows.sum(axis=0) if has_bias and needs_input_grad[2] else None
    return grad_input, grad_weight, grad_bias
