"""BatchNorm1d, BatchNorm2d and LayerNorm (the math is in ``functional/normalization.py``)."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from ..functional.normalization import BATCH_NORM_LAYOUTS, check_layer_norm, layer_norm_shape
from .module import Module
from .parameter import Parameter


class _Normalization(Module):
    """What BatchNorm and LayerNorm share: an optional weight and bias, and their backward."""

    def _affine_parameters(self, shape, weight: bool, bias: bool, dtype) -> None:
        self.weight = Parameter(np.ones(shape, dtype)) if weight else None
        self.bias = Parameter(np.zeros(shape, dtype)) if bias else None

    def _parameter_data(self) -> tuple:
        return tuple(None if p is None else p.data for p in (self.weight, self.bias))

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        weight, bias = self.weight, self.bias
        needs = (input_grad, weight is not None and weight.requires_grad, bias is not None and bias.requires_grad)
        grad_input, grad_weight, grad_bias = kernels.op(f"{self.op}_backward")(grad_output, cache, needs)
        for parameter, grad in ((weight, grad_weight), (bias, grad_bias)):
            if parameter is not None:
                parameter.accumulate_grad(grad, owned=True)
        return grad_input


class _BatchNorm(_Normalization):
    op = "batch_norm"
    optional_buffers = ("num_batches_tracked",)

    arguments = {
        "num_features": ("size", True),
        "eps": ("positive number", False),
        "momentum": ("momentum", False),
        "affine": ("bool", False),
        "track_running_stats": ("bool", False),
        "bias": ("bool", False),
    }

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype=np.float32,
        *,
        bias: bool = True,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._affine_parameters(self.num_features, affine, affine and bias, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        ndims, layout = BATCH_NORM_LAYOUTS[type(self).__name__]
        check_ndim(self, "input", x, ndims, layout.replace("C", str(self.num_features)))
        if x.shape[1] != self.num_features:
            raise ShapeError(
                self, f"expected {self.num_features} channels (num_features) on axis 1, got input {fmt_shape(x.shape)}"
            )
        dtype = self.weight.dtype if self.affine else (self.running_mean.dtype if self.track_running_stats else None)
        check_floating(self, "input", x, dtype)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and x.size // x.shape[1] == 1:  # an empty batch passes through, as in torch
            raise ShapeError(
                self, f"expected more than 1 value per channel when training, got input {fmt_shape(x.shape)}"
            )
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:  # cumulative moving average, as PyTorch
                momentum = 1.0 / float(self.num_batches_tracked)
        weight, bias = self._parameter_data()
        out, cache = kernels.op("batch_norm_forward")(
            x,
            weight,
            bias,
            self.running_mean,
            self.running_var,
            use_batch_stats,
            0.0 if momentum is None else momentum,
            self.eps,
        )
        self._save_for_backward(cache, out.shape)
        return out

    def constructor_args(self) -> dict:
        args = dict(
            num_features=self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
        )
        # read as torch.nn's layer holds it too (a bias of None), and only when off: older files lack it
        return args | ({"bias": False} if self.affine and self.bias is None else {})

    def extra_repr(self) -> str:
        bias = ", bias=False" if self.affine and self.bias is None else ""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}{bias}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per feature, over (N, C) or (N, C, L).

    Args: num_features (C), eps, momentum (None: the cumulative average 1 / num_batches_tracked),
    affine (a weight and a bias), track_running_stats, dtype; keyword ``bias=False``: a weight alone.
    Train: batch statistics, running ones updated with momentum 0.1; eval: running statistics (the
    batch's without them). Gradients: see ``functional/normalization.py``.
    """


class BatchNorm2d(_BatchNorm):
    """BatchNorm over the channels of (N, C, H, W): statistics over N, H and W per channel (the
    arguments of ``BatchNorm1d``)."""


class LayerNorm(_Normalization):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) var over the last
    len(normalized_shape) axes of each sample, in training and eval alike.

    Args: normalized_shape (an int or a tuple: the trailing shape normalised), eps,
    elementwise_affine (a weight of ones and, unless bias=False, a bias of zeros, both of
    normalized_shape), bias, dtype.
    Shape: input (*, *normalized_shape) -> output of the same shape.
    Gradients (``functional/normalization.py``): grad_input = invstd / m * (m * dxhat - sum(dxhat)
    - xhat * sum(dxhat * xhat)) over the normalised axes, dxhat = G * weight;
    grad_weight = sum(G * xhat), grad_bias = sum(G) over the others.

    Example::

        >>> layer = nn.LayerNorm(16)
        >>> layer(np.zeros((8, 10, 16), np.float32)).shape
        (8, 10, 16)
    """

    op = "layer_norm"

    arguments = {
        "normalized_shape": ("shape", True),
        "eps": ("positive number", False),
        "elementwise_affine": ("bool", False),
        "bias": ("bool", False),
    }

    def __init__(
        self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, dtype=np.float32
    ):
        super().__init__()
        self.normalized_shape = layer_norm_shape(type(self).__name__, normalized_shape)
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        self._affine_parameters(self.normalized_shape, self.elementwise_affine, self.elementwise_affine and bias, dtype)

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, range(len(self.normalized_shape), 33), "(*, *normalized_shape)")
        weight, bias = self._parameter_data()
        check_layer_norm(self, x, self.normalized_shape, weight, bias)
        check_floating(self, "input", x, None if weight is None else weight.dtype)
        out, cache = kernels.op("layer_norm_forward")(
            x, weight, bias, normalized_shape=self.normalized_shape, eps=self.eps
        )
        self._save_for_backward(cache, out.shape)
        return out

    def constructor_args(self) -> dict:
        args = dict(normalized_shape=list(self.normalized_shape), eps=self.eps)
        args |= {"elementwise_affine": self.elementwise_affine}
        return args | ({"bias": False} if self.elementwise_affine and self.bias is None else {})

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
