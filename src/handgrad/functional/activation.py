"""Activations: each a forward that keeps what its derivative needs, and the backward beside it.

All are element-wise except softmax and log_softmax, which couple the entries along ``dim``. This is
the readable definition; ``handgrad.kernels.activation`` computes the element-wise ones in one pass each.
"""

from __future__ import annotations

import math
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


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_SCALE = math.sqrt(2 / math.pi)  # GELU's tanh form: tanh(sqrt(2/pi) * (x + 0.044715 x^3))
_TANH_CUBIC = 0.044715
#: math.erfc on arrays; GELU's exact form needs the Gaussian CDF and NumPy has no erf
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
GELU_APPROXIMATIONS = ("none", "tanh")


def gelu_forward(x, approximate="none") -> tuple[np.ndarray, Any]:
    """y = x * Phi(x), Phi the standard normal CDF: Phi(x) = erfc(-x / sqrt(2)) / 2   ('none')
    y = x * (1 + t) / 2,  t = tanh(sqrt(2/pi) * (x + 0.044715 x^3))                     ('tanh')

    erfc of -x rather than 1 + erf(x): no cancellation where x is very negative and Phi(x) tiny.
    """
    if approximate == "tanh":
        t = np.tanh(x.dtype.type(_TANH_SCALE) * (x + x.dtype.type(_TANH_CUBIC) * x * x * x))
        return x * (1 + t) / 2, (x, t, approximate)  # backward needs x and t: dt/dx = (1 - t^2) * ...
    cdf = (_erfc(-x * _SQRT_HALF) / 2).astype(x.dtype, copy=False)
    return x * cdf, (x, cdf, approximate)  # backward needs x and Phi(x): dy/dx = Phi(x) + x phi(x)


def gelu_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)            ('none')
    dL/dx = G * ((1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2)           ('tanh')"""
    x, saved, approximate = cache
    cast = x.dtype.type
    if approximate == "tanh":
        inner = cast(_TANH_SCALE) * (1 + cast(3 * _TANH_CUBIC) * x * x)
        return grad_output * ((1 + saved) / 2 + x * (1 - saved * saved) * inner / 2)
    return grad_output * (saved + x * cast(_INV_SQRT_2PI) * np.exp(-x * x / 2))


def _sigmoid(x):
    """1 / (1 + exp(-x)) as e/(1+e) with e = exp(-|x|): no exp overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def silu_forward(x) -> tuple[np.ndarray, Any]:
    """y = x * sigmoid(x)"""
    s = _sigmoid(x)
    return x * s, (x, s)  # backward needs x and sigmoid(x)


def silu_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G * s * (1 + x * (1 - s)),  s = sigmoid(x)"""
    x, s = cache
    return grad_output * s * (1 + x * (1 - s))


def softplus_forward(x, beta=1.0, threshold=20.0) -> tuple[np.ndarray, Any]:
    """y = log(1 + exp(beta * x)) / beta,  and y = x where beta * x > threshold (as torch: linear there)"""
    bx = x * x.dtype.type(beta)
    linear = bx > threshold
    # logaddexp(0, z) = log(1 + exp(z)) with no overflow for a large threshold
    out = np.where(linear, x, np.logaddexp(0, bx) / x.dtype.type(beta))
    return out, (bx, linear)  # backward needs beta * x and where it is linear


def softplus_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G * sigmoid(beta * x),  and G where beta * x > threshold"""
    bx, linear = cache
    return np.where(linear, grad_output, grad_output * _sigmoid(bx))


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
def _float_option(*names):
    """A bridge check that passes numeric options on as floats (a torch.nn layer may hold an int)."""

    def check(where, arrays, options):
        return {name: float(options[name]) for name in names}

    return check


def _without_inplace(check=None):
    """A bridge check for an op with torch's ``inplace`` flag: accepted at False, its default, and
    refused at True; the rest of the options go on to ``check`` (None: to the pair as they are)."""

    def checked(where, arrays, options):
        options = dict(options)
        if options.pop("inplace"):
            raise HandgradError(
                where,
                "inplace=True is not supported: handgrad writes its output to a new tensor; "
                "pass inplace=False (the default)",
            )
        return options if check is None else check(where, arrays, options)

    return checked


def _check_gelu(where, arrays, options):
    approximate = options["approximate"]
    if approximate not in GELU_APPROXIMATIONS:
        raise HandgradError(where, f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return {"approximate": approximate}


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


# torch.nn.functional's signatures: relu(input, inplace=False), softmax(input, dim=None, _stacklevel=3, dtype=None)
_INPLACE = (("inplace", False),)
_SOFTMAX_OPTIONS = (("dim", None), ("_stacklevel", 3), ("dtype", None))


def _inplace_spec(name, forward, backward, module) -> OpSpec:
    """An element-wise op with no option but torch's ``inplace`` flag (relu, silu)."""
    return OpSpec(
        name,
        forward,
        backward,
        lambda torch: getattr(torch.nn.functional, name),
        _input_cases(),
        options=_INPLACE,
        bridge=Bridge(module, check=_without_inplace(), unsupported=refuse_inplace),
    )


register(
    _inplace_spec("relu", relu_forward, relu_backward, "ReLU"),
    OpSpec(
        "leaky_relu",
        leaky_relu_forward,
        leaky_relu_backward,
        lambda torch: torch.nn.functional.leaky_relu,
        _input_cases({"negative_slope": 0.1}),
        options=(("negative_slope", 0.01),) + _INPLACE,
        bridge=Bridge("LeakyReLU", check=_without_inplace(_float_option("negative_slope")), unsupported=refuse_inplace),
    ),
    OpSpec(
        "elu",
        elu_forward,
        elu_backward,
        lambda torch: torch.nn.functional.elu,
        _input_cases({"alpha": 1.0}, {"alpha": 0.3}),
        options=(("alpha", 1.0),) + _INPLACE,
        bridge=Bridge("ELU", check=_without_inplace(_float_option("alpha")), unsupported=refuse_inplace),
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
    OpSpec(
        "gelu",
        gelu_forward,
        gelu_backward,
        lambda torch: torch.nn.functional.gelu,
        _input_cases({"approximate": "none"}, {"approximate": "tanh"}),
        options=(("approximate", "none"),),
        bridge=Bridge("GELU", check=_check_gelu),
    ),
    _inplace_spec("silu", silu_forward, silu_backward, "SiLU"),
    OpSpec(
        "softplus",
        softplus_forward,
        softplus_backward,
        lambda torch: torch.nn.functional.softplus,
        _input_cases({}, {"beta": 2.0, "threshold": 1.0}, {"beta": 0.5, "threshold": 30.0}),
        options=(("beta", 1.0), ("threshold", 20.0)),
        bridge=Bridge("Softplus", check=_float_option("beta", "threshold")),
    ),
)
