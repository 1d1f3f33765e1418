"""Activations as layers, and the two ways to add one of your own.

1. From a function and its derivative::

       Swish = nn.define_activation("Swish", lambda x: x / (1 + np.exp(-x)),
                                    lambda x: (s := 1 / (1 + np.exp(-x))) * (1 + x * (1 - s)))

2. By subclassing ``ElementwiseActivation`` with static ``function`` and ``derivative``, or
   ``Module`` with ``forward`` / ``backward`` for anything that is not element-wise.

A user-defined derivative is checked against central finite differences when the class is created;
a wrong one is refused with the points where it disagrees. Every activation is registered by name
(``nn.get_activation("swish")``), so the model builders and the CLI find it like a built-in.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import kernels
from ..errors import HandgradError, check_floating, check_ndim
from ..gradcheck import ATOL, EPS, RTOL, numeric_grad
from .module import Module

ACTIVATIONS: dict[str, type] = {}


def register_activation(name: str, cls: type) -> type:
    """Register ``cls`` under ``name``. A user class may replace a user class of its name (a cell run
    again in a notebook), never one of handgrad's own."""
    key = name.lower().replace("-", "_")
    current = ACTIVATIONS.get(key)
    if current is not None and current is not cls and _builtin(current) and not _builtin(cls):
        raise HandgradError(
            cls.__name__, f"the activation name {key!r} is handgrad's own ({current.__name__}); give yours another name"
        )
    ACTIVATIONS[key] = cls
    return cls


def _builtin(cls) -> bool:
    return cls.__module__.startswith("handgrad.")


def get_activation(name: str) -> type:
    """The activation class registered under ``name`` (case-insensitive; '-' and '_' alike)."""
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))} (one of your own: "
            f"pass --plugin FILE.py that defines it, or import it)"
        )
    return ACTIVATIONS[key]


class _Activation(Module):
    """An activation whose math is the ``functional`` pair ``<op>_forward`` / ``<op>_backward``,
    run by ``handgrad.kernels`` (its compiled kernel where one exists)."""

    arguments: dict[str, tuple[str, bool]] | None = {}

    def _args(self):
        return ()

    def forward(self, input) -> np.ndarray:  # torch's name, so forward(input=x) works as there
        check_ndim(self, "input", input, range(0, 33), "(*)")
        check_floating(self, "input", input)
        out, cache = kernels.op(f"{self.op}_forward")(input, *self._args())
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        return kernels.op(f"{self.op}_backward")(grad_output, cache) if input_grad else None


class _OneNumberActivation(_Activation):
    """An activation with one number option, named ``option`` and kept as a float attribute of
    that name (torch.nn's), which the op takes after the input. Each class still writes its own
    ``constructor_args``: it also reads a torch.nn layer, which has no ``option``."""

    option = ""

    def _args(self):
        return (getattr(self, self.option),)

    def extra_repr(self) -> str:
        return f"{self.option}={getattr(self, self.option)}"


class ReLU(_Activation):
    """y = max(x, 0);  dL/dx = G * [x > 0]"""

    op = "relu"


class LeakyReLU(_OneNumberActivation):
    """y = x if x > 0 else negative_slope * x;  dL/dx = G * (1 if x > 0 else negative_slope)"""

    op = "leaky_relu"
    option = "negative_slope"
    arguments = {"negative_slope": ("number", False)}

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def constructor_args(self) -> dict:
        return dict(negative_slope=self.negative_slope)


class ELU(_OneNumberActivation):
    """y = x if x > 0 else alpha * (exp(x) - 1);  dL/dx = G * (1 if x > 0 else y + alpha)"""

    op = "elu"
    option = "alpha"
    arguments = {"alpha": ("number", False)}

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def constructor_args(self) -> dict:
        return dict(alpha=self.alpha)


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x));  dL/dx = G * y * (1 - y)"""

    op = "sigmoid"


class Tanh(_Activation):
    """y = tanh(x);  dL/dx = G * (1 - y^2)"""

    op = "tanh"


class _OptionActivation(_Activation):
    """An activation whose options are its ``constructor_args()``: passed to its pair in that order
    and shown in its repr. (``constructor_args`` reads only attributes, as it is also called on a
    torch.nn layer of the same name.)"""

    def _args(self):
        return tuple(self.constructor_args().values())

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.constructor_args().items())


class GELU(_OptionActivation):
    """y = x * Phi(x) (Phi: the standard normal CDF), or its tanh approximation;
    dL/dx = G * (Phi(x) + x * phi(x))

    ``approximate``: 'none' (exact, with erf) or 'tanh' (x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2).
    """

    op = "gelu"
    arguments = {"approximate": ("approximation", False)}

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in F.activation.GELU_APPROXIMATIONS:
            raise HandgradError(type(self).__name__, f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def constructor_args(self) -> dict:
        return dict(approximate=self.approximate)


class SiLU(_Activation):
    """y = x * sigmoid(x);  dL/dx = G * s * (1 + x * (1 - s)),  s = sigmoid(x)"""

    op = "silu"


class Softplus(_OptionActivation):
    """y = log(1 + exp(beta * x)) / beta, linear (y = x) where beta * x > threshold;
    dL/dx = G * sigmoid(beta * x)  (G where linear)"""

    op = "softplus"
    arguments = {"beta": ("number", False), "threshold": ("number", False)}

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = float(beta), float(threshold)

    def constructor_args(self) -> dict:
        return dict(beta=self.beta, threshold=self.threshold)


class Softmax(_Activation):
    """y_i = exp(x_i) / sum_j exp(x_j) along ``dim``;  dL/dx_i = y_i * (G_i - sum_j G_j y_j)

    ``dtype`` (float32, float64 or None): the input is cast to it first, as torch.nn.functional's
    ``dtype=``; the output has that dtype and the gradient comes back in the input's.
    """

    op = "softmax"

    arguments = {"dim": ("dim", False), "dtype": ("float dtype", False)}

    def __init__(self, dim: int = -1, dtype=None):
        super().__init__()
        self.dim = dim
        # not ``self.dtype``: that is Module's, the dtype of the parameters
        self.cast_dtype = F.activation.softmax_dtype(type(self).__name__, dtype)

    def _args(self):
        return (self.dim, self.cast_dtype)

    def constructor_args(self) -> dict:
        # dtype only when given, as torch.nn's constructor (also read off a torch.nn layer, which has none)
        cast = getattr(self, "cast_dtype", None)
        return dict(dim=self.dim) if cast is None else dict(dim=self.dim, dtype=cast.name)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + ("" if self.cast_dtype is None else f", dtype={self.cast_dtype.name}")


class LogSoftmax(Softmax):
    """y_i = x_i - log sum_j exp(x_j) along ``dim``;  dL/dx_i = G_i - softmax(x)_i * sum_j G_j"""

    op = "log_softmax"


for _name, _cls in (
    ("relu", ReLU),
    ("leaky_relu", LeakyReLU),
    ("elu", ELU),
    ("sigmoid", Sigmoid),
    ("tanh", Tanh),
    ("gelu", GELU),
    ("silu", SiLU),
    ("softplus", Softplus),
):
    register_activation(_name, _cls)


class ActivationDerivativeError(HandgradError):
    """A user-supplied derivative disagrees with finite differences of the function."""


#: Where a user derivative is checked: a spread of points that avoids 0 and the integers, where
#: piecewise functions (ReLU-like) have their kinks.
CHECK_POINTS = np.linspace(-4.0, 4.0, 81) + 0.0123


def check_derivative(name, function, derivative, points=CHECK_POINTS, eps=EPS, atol=ATOL, rtol=RTOL) -> None:
    """Compare ``derivative(x)`` in float64 at ``points`` with ``handgrad.gradcheck``'s central finite
    differences of sum(f(x)), whose partial derivative in x_i is f'(x_i) for an element-wise f, and
    with its tolerance: |derivative - numeric| <= atol + rtol * |numeric|.

    Raises ActivationDerivativeError listing the points where they disagree.
    """
    x = np.array(points, dtype=np.float64)
    given = np.broadcast_to(np.asarray(derivative(x), np.float64), x.shape)
    numeric = numeric_grad(lambda: float(np.sum(np.asarray(function(x), np.float64))), x, eps)
    bad = ~(np.abs(given - numeric) <= atol + rtol * np.abs(numeric))
    if bad.any():
        where = np.flatnonzero(bad)
        shown = "; ".join(
            f"x={x[i]:.4f}: derivative gave {given[i]:.6g}, finite differences {numeric[i]:.6g}" for i in where[:5]
        )
        more = f" (and {len(where) - 5} more)" if len(where) > 5 else ""
        raise ActivationDerivativeError(
            name,
            f"the derivative disagrees with finite differences of the function "
            f"at {len(where)} of {x.size} points: {shown}{more}",
        )


class ElementwiseActivation(_Activation):
    """Base for user activations y = function(x) with dL/dx = G * derivative(x).

    Subclass with ``function`` and ``derivative`` as static methods on NumPy arrays; the derivative
    is checked against finite differences when the subclass is created, and the class is
    registered under its lowercased name.
    """

    function = None
    derivative = None
    arguments: dict[str, tuple[str, bool]] | None = None  # a base: only its subclasses are stored

    def __init_subclass__(cls, check: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.function is None or cls.derivative is None:
            raise TypeError(f"{cls.__name__} must define static methods function(x) and derivative(x)")
        if check:
            check_derivative(cls.__name__, cls.function, cls.derivative)
        register_activation(cls.__name__, cls)

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, range(0, 33), "(*)")
        check_floating(self, "input", x)
        out, cache = F.elementwise_forward(x, type(self).function)
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        return F.elementwise_backward(grad_output, cache, type(self).derivative) if input_grad else None


def define_activation(name: str, function, derivative, check: bool = True) -> type:
    """A new activation class from y = function(x) and its derivative f'(x), both element-wise on
    NumPy arrays. Refused (ActivationDerivativeError) if the derivative is wrong."""
    import sys

    # The caller's module, as a class statement there would have it: checkpoints record where
    # the class came from (handgrad.plugins.source_of).
    attrs = {
        "function": staticmethod(function),
        "derivative": staticmethod(derivative),
        "__doc__": f"User-defined activation {name}: y = f(x), dL/dx = G * f'(x).",
        "__module__": sys._getframe(1).f_globals.get("__name__", "__main__"),
    }
    return type(name, (ElementwiseActivation,), attrs, check=check)
