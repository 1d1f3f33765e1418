"""Activations: each a forward that keeps what its derivative needs, and the backward beside it.

All are element-wise except softmax and log_softmax, which couple the entries along ``dim``. This is
the readable definition; ``handgrad.kernels.activation`` computes the element-wise ones in one pass each.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import DTypeError, HandgradError
from .spec import Bridge, Case, OpSpec, refuse_inplace, register


def relu_forward(x) -> tuple[np.ndarray, Any]:
    """y = max(x, 0)"""
    out = np.maximum(x, x.dtype.type(0))
    return out, out  # the derivative reads off the output: y > 0 exactly where x > 0


def relu_backward(grad_output, out) -> np.ndarray:
    """dL/dx = G * [x > 0] = G where y > 0, else 0   (0 at x = 0, as PyTorch)"""
    return np.where(out > 0, grad_output, grad_output.dtype.type(0))


def leaky_relu_forward(x, negative_slope=0.01) -> tuple[np.ndarray, Any]:
    """y = x if x > 0 else negative_slope * x"""
    positive = x > 0
    return np.where(positive, x, x * x.dtype.type(negative_slope)), (positive, negative_slope)


def leaky_relu_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G * (1 if x > 0 else negative_slope)"""
    positive, negative_slope = cache
    return np.where(positive, grad_output, grad_output * grad_output.dtype.type(negative_slope))


def elu_forward(x, alpha=1.0) -> tuple[np.ndarray, Any]:
    """y = x if x > 0 else alpha * (exp(x) - 1)"""
    positive = x > 0
    # expm1 of min(x, 0): exact near 0, and no overflow where x > 0 (that branch is not taken there)
    out = np.where(positive, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))
    return out, (positive, out, alpha)  # where x <= 0, dy/dx = alpha * exp(x) = y + alpha: no exp backward


def elu_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G * (1 if x > 0 else alpha * exp(x)) = G * (1 if x > 0 else y + alpha)   (alpha at x = 0, as PyTorch)"""
    positive, out, alpha = cache
    return np.where(positive, grad_output, grad_output * (out + out.dtype.type(alpha)))


def sigmoid_forward(x) -> tuple[np.ndarray, Any]:
    """y = 1 / (1 + exp(-x)), computed as e/(1+e) with e = exp(-|x|) so no exp overflows."""
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1, e) / (1 + e)
    return out, out  # dy/dx = y (1 - y): the output is all backward needs


def sigmoid_backward(grad_output, out) -> np.ndarray:
    """dL/dx = G * y * (1 - y)"""
    return grad_output * out * (1 - out)


def tanh_forward(x) -> tuple[np.ndarray, Any]:
    """y = tanh(x)"""
    out = np.tanh(x)
    return out, out


def tanh_backward(grad_output, out) -> np.ndarray:
    """dL/dx = G * (1 - y^2)"""
    return grad_output * (1 - out * out)


def _softmax_input(x, dtype):
    """x cast to ``dtype`` first, as torch's ``dtype=`` (None: x as it is)."""
    return x if dtype is None else x.astype(dtype, copy=False)


def _cast_back(grad, dtype):
    """The gradient of x for the cast x -> dtype: the same values in x's own dtype."""
    return grad.astype(dtype, copy=False)


def softmax_forward(x, dim=-1, dtype=None) -> tuple[np.ndarray, Any]:
    """y_i = exp(x_i - m) / sum_j exp(x_j - m) along ``dim``, with m = max_j x_j for stability.

    ``dtype``: x is cast to it first (the output has that dtype; the gradient comes back in x's).
    An empty x has nothing to normalise: its output is empty too, as torch's.
    """
    source, x = x.dtype, _softmax_input(x, dtype)
    if x.size == 0:
        return x.copy(), (x, dim, source)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    out = e / e.sum(axis=dim, keepdims=True)
    return out, (out, dim, source)


def softmax_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_i = y_i * (G_i - sum_j G_j y_j)   (the Jacobian diag(y) - y y^T applied to G)"""
    out, dim, source = cache
    return _cast_back(out * (grad_output - (grad_output * out).sum(axis=dim, keepdims=True)), source)


def log_softmax_forward(x, dim=-1, dtype=None) -> tuple[np.ndarray, Any]:
    """y_i = x_i - m - log sum_j exp(x_j - m), with m = max_j x_j (stable for logits of any size).

    ``dtype``: x is cast to it first, as in ``softmax_forward``; an empty x gives an empty output.
    """
    source, x = x.dtype, _softmax_input(x, dtype)
    if x.size == 0:
        return x.copy(), (x, dim, source)
    shifted = x - x.max(axis=dim, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
    return out, (out, dim, source)


def log_softmax_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_i = G_i - softmax(x)_i * sum_j G_j,   with softmax(x) = exp(y)."""
    out, dim, source = cache
    return _cast_back(grad_output - np.exp(out) * grad_output.sum(axis=dim, keepdims=True), source)


def elementwise_forward(x, function) -> tuple[np.ndarray, Any]:
    """y = f(x) for a user-supplied element-wise f; x is kept for f'(x)."""
    return np.asarray(function(x), dtype=x.dtype), x


def elementwise_backward(grad_output, x, derivative) -> np.ndarray:
    """dL/dx = G * f'(x)"""
    return grad_output * np.asarray(derivative(x), dtype=grad_output.dtype)


# -- specs ------------------------------------------------------------------------------------------
def _float_option(name):
    """A bridge check that passes one numeric option on as a float (a torch.nn layer may hold an int)."""

    def check(where, arrays, options):
        return {name: float(options[name])}

    return check


def _input_cases(*options):
    """One (3, 5) input per set of options."""

    def cases(rng):
        for opts in options or ({},):
            yield Case(
                "x (3, 5)" + "".join(f", {k} {v}" for k, v in opts.items()), (rng.standard_normal((3, 5)),), opts
            )

    return cases


def _dim_cases(rng):
    for dim in (-1, 1):
        yield Case(f"x (2, 3, 4), dim {dim}", (rng.standard_normal((2, 3, 4)),), {"dim": dim})


def softmax_dtype(where, dtype):
    """``dtype=`` as NumPy names it: None, a NumPy floating dtype or its name, or a torch dtype
    (``torch.float64`` -> float64)."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.") if type(dtype).__module__ == "torch" else dtype
    try:
        resolved = np.dtype(name)
    except TypeError:
        resolved = None
    if resolved is None or resolved.kind != "f":
        raise DTypeError(where, f"expected dtype to be a floating dtype (float32, float64) or None, got {dtype!r}")
    return resolved


def _check_softmax(where, arrays, options):
    """torch's implicit dim (dim=None: 0 for inputs of 0, 1 or 3 dimensions, else 1, with its
    warning); ``_stacklevel`` only places that warning."""
    dim, ndim = options["dim"], arrays["input"].ndim
    if dim is None:
        warnings.warn(
            f"{where}: implicit dimension choice for softmax has been deprecated; pass dim explicitly",
            UserWarning,
            stacklevel=2,
        )
        dim = 0 if ndim in (0, 1, 3) else 1
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise HandgradError(
            where, f"dim must be in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] for input of {ndim} dimensions, got {dim}"
        )
    return {"dim": dim, "dtype": softmax_dtype(where, options["dtype"])}


# torch.nn.functional's signature: softmax(input, dim=None, _stacklevel=3, dtype=None)
_SOFTMAX_OPTIONS = (("dim", None), ("_stacklevel", 3), ("dtype", None))

register(
    OpSpec(
        "relu",
        relu_forward,
        relu_backward,
        lambda torch: torch.nn.functional.relu,
        _input_cases(),
        bridge=Bridge("ReLU", unsupported=refuse_inplace),
    ),
    OpSpec(
        "leaky_relu",
        leaky_relu_forward,
        leaky_relu_backward,
        lambda torch: torch.nn.functional.leaky_relu,
        _input_cases({"negative_slope": 0.1}),
        options=(("negative_slope", 0.01),),
        bridge=Bridge("LeakyReLU", check=_float_option("negative_slope"), unsupported=refuse_inplace),
    ),
    OpSpec(
        "elu",
        elu_forward,
        elu_backward,
        lambda torch: torch.nn.functional.elu,
        _input_cases({"alpha": 1.0}, {"alpha": 0.3}),
        options=(("alpha", 1.0),),
        bridge=Bridge("ELU", check=_float_option("alpha"), unsupported=refuse_inplace),
    ),
    OpSpec(
        "sigmoid",
        sigmoid_forward,
        sigmoid_backward,
        lambda torch: torch.sigmoid,
        _input_cases(),
        bridge=Bridge("Sigmoid"),
    ),
    OpSpec("tanh", tanh_forward, tanh_backward, lambda torch: torch.tanh, _input_cases(), bridge=Bridge("Tanh")),
    OpSpec(
        "softmax",
        softmax_forward,
        softmax_backward,
        lambda torch: torch.nn.functional.softmax,
        _dim_cases,
        options=_SOFTMAX_OPTIONS,
        bridge=Bridge("Softmax", check=_check_softmax),
    ),
    OpSpec(
        "log_softmax",
        log_softmax_forward,
        log_softmax_backward,
        lambda torch: torch.nn.functional.log_softmax,
        _dim_cases,
        options=_SOFTMAX_OPTIONS,
        bridge=Bridge("LogSoftmax", check=_check_softmax),
    ),
)
