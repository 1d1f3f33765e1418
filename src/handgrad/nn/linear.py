"""Linear, Flatten and Identity layers."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from . import init
from .module import Module
from .parameter import Parameter


class Linear(Module):
    """y = x @ weight.T + bias

    Args: in_features, out_features, bias (default True), dtype (default float32).
    Shape: input (*, in_features) -> output (*, out_features); weight (out_features, in_features).
    Gradients (``functional/linear.py``): grad_input = G @ weight, grad_weight = G.T @ x,
    grad_bias = G.sum(0).

    Example::

        >>> layer = nn.Linear(784, 10)
        >>> layer(np.zeros((32, 784), np.float32)).shape
        (32, 10)
    """

    op = "linear"

    arguments = {"in_features": ("size", True), "out_features": ("size", True), "bias": ("bool", False)}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generator=None) -> None:
        init.default_linear_init_(self.weight, self.bias, generator)

    def check_input(self, x) -> None:
        """The errors forward raises for an input this layer cannot take."""
        check_ndim(self, "input", x, range(1, 33), "(*, in_features)")
        if x.shape[-1] != self.in_features:
            raise ShapeError(
                self,
                f"expected input of shape (*, {self.in_features}) (in_features={self.in_features}), "
                f"got {fmt_shape(x.shape)}",
            )
        check_floating(self, "input", x, self.weight.dtype)

    def forward(self, x) -> np.ndarray:
        self.check_input(x)
        bias = self.bias
        out, cache = kernels.op("linear_forward")(x, self.weight.data, None if bias is None else bias.data)
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        weight, bias = self.weight, self.bias
        needs = (input_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        grad_input, grad_weight, grad_bias = kernels.op("linear_backward")(grad_output, cache, needs)
        weight.accumulate_grad(grad_weight, owned=True)
        if bias is not None:
            bias.accumulate_grad(grad_bias, owned=True)
        return grad_input

    def constructor_args(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Collapse dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default.
    Backward reshapes the gradient back to the input's shape."""

    arguments = {"start_dim": ("dim", False), "end_dim": ("dim", False)}

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, range(1, 33), "(N, *)")
        start, end = self.start_dim % x.ndim, self.end_dim % x.ndim
        out = x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])
        self._save_for_backward(x.shape, out.shape)  # backward needs only the input's shape
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        input_shape = self._saved(grad_output)
        return grad_output.reshape(input_shape) if input_grad else None

    def constructor_args(self) -> dict:
        return dict(start_dim=self.start_dim, end_dim=self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """y = x;  dL/dx = G."""

    arguments: dict[str, tuple[str, bool]] | None = {}

    def forward(self, x) -> np.ndarray:
        self._save_for_backward(None, np.shape(x))
        return x

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        self._saved(grad_output)
        return grad_output if input_grad else None
