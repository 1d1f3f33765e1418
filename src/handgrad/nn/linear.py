"""Linear, Flatten and Identity layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import kernels
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from . import init
from .module import Module
from .parameter import Parameter


def weighted_backward(layer: Module, grad_output, input_grad: bool) -> np.ndarray | None:
    """The backward of a layer with a ``weight`` and an optional ``bias`` (Linear, Conv2d): its op's
    ``<op>_backward`` computes the gradients asked for; those of the weight and bias accumulate into
    them, and grad_input (None unless ``input_grad``) is returned."""
    cache = layer._saved(grad_output)
    weight, bias = layer.weight, layer.bias
    needs = (input_grad, weight.requires_grad, bias is not None and bias.requires_grad)
    grad_input, grad_weight, grad_bias = kernels.op(f"{layer.op}_backward")(grad_output, cache, needs)
    weight.accumulate_grad(grad_weight, owned=True)
    if bias is not None:
        bias.accumulate_grad(grad_bias, owned=True)
    return grad_input


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

    def check_input(self, input) -> None:
        """The errors forward raises for an input this layer cannot take."""
        check_ndim(self, "input", input, range(1, 33), "(*, in_features)")
        if input.shape[-1] != self.in_features:
            raise ShapeError(
                self,
                f"expected input of shape (*, {self.in_features}) (in_features={self.in_features}), "
                f"got {fmt_shape(input.shape)}",
            )
        check_floating(self, "input", input, self.weight.dtype)

    def forward(self, input) -> np.ndarray:  # torch's name, so forward(input=x) works as there
        self.check_input(input)
        bias = None if self.bias is None else self.bias.data
        out, cache = kernels.op("linear_forward")(input, self.weight.data, bias)
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        return weighted_backward(self, grad_output, input_grad)

    def constructor_args(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Collapse dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default.
    Backward reshapes the gradient back to the input's shape."""

    op = "flatten"

    arguments = {"start_dim": ("dim", False), "end_dim": ("dim", False)}

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, range(1, 33), "(N, *)")
        start, end = F.flatten_dims(self, x.ndim, self.start_dim, self.end_dim)
        out, input_shape = F.flatten_forward(x, start, end)
        self._save_for_backward(input_shape, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        input_shape = self._saved(grad_output)
        return F.flatten_backward(grad_output, input_shape) if input_grad else None

    def constructor_args(self) -> dict:
        return dict(start_dim=self.start_dim, end_dim=self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """y = x;  dL/dx = G."""

    op = "identity"

    arguments: dict[str, tuple[str, bool]] | None = {}

    def forward(self, x) -> np.ndarray:
        out, cache = F.identity_forward(x)
        self._save_for_backward(cache, np.shape(out))
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        return F.identity_backward(grad_output, cache) if input_grad else None
