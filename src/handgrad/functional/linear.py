"""Linear (fully connected) layer: the math, once, as a forward/backward pair."""

from __future__ import annotations

from typing import Any

import numpy as np

from .spec import Bridge, Case, OpSpec, check_input_weight_bias, register

ALL = (True, True, True)


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """y = x @ weight.T + bias

    Shapes: x (*, in_features), weight (out_features, in_features), bias (out_features,)
    -> y (*, out_features).
    """
    out = x @ weight.T
    if bias is not None:
        out += bias
    # backward needs x (for grad_weight) and weight (for grad_input); nothing else.
    return out, (x, weight, bias is not None)


def linear_backward(grad_output: np.ndarray, cache, needs_input_grad=ALL) -> tuple:
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


# -- spec -------------------------------------------------------------------------------------------
def _check_linear(where, arrays, options):
    x, weight = arrays["input"], arrays["weight"]
    layouts = "input (*, in_features), weight (out_features, in_features) and bias (out_features,)"
    check_input_weight_bias(where, arrays, weight.ndim == 2 and x.ndim >= 1, -1, layouts)
    return options


def _linear_cases(rng):
    for shape, out_features, bias in (((2, 4), 3, True), ((2, 4), 3, False), ((2, 3, 4), 5, True)):
        tensors = (rng.standard_normal(shape), rng.standard_normal((out_features, shape[-1])))
        yield Case(
            f"x {shape} -> {out_features}, bias={bias}",
            tensors + ((rng.standard_normal(out_features),) if bias else ()),
        )


register(
    OpSpec(
        "linear",
        linear_forward,
        linear_backward,
        lambda torch: torch.nn.functional.linear,
        _linear_cases,
        tensors=("input", "weight", "bias"),
        optional=("bias",),
        needs_input_grad=True,
        bridge=Bridge("Linear", check=_check_linear),
    ),
)
