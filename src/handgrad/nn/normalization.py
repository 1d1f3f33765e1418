"""BatchNorm1d and BatchNorm2d (the math is in ``functional/normalization.py``)."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from .module import Module
from .parameter import Parameter


class _BatchNorm(Module):
    _ndims: tuple = ()
    _layout = ""
    op = "batch_norm"

    arguments = {
        "num_features": ("size", True),
        "eps": ("positive number", False),
        "momentum": ("momentum", False),
        "affine": ("bool", False),
        "track_running_stats": ("bool", False),
    }

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype=np.float32,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(self.num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.num_features, dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        check_ndim(self, "input", x, self._ndims, self._layout.replace("C", str(self.num_features)))
        if x.shape[1] != self.num_features:
            raise ShapeError(
                self, f"expected {self.num_features} channels (num_features) on axis 1, got input {fmt_shape(x.shape)}"
            )
        dtype = self.weight.dtype if self.affine else (self.running_mean.dtype if self.track_running_stats else None)
        check_floating(self, "input", x, dtype)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and x.size // x.shape[1] < 2:
            raise ShapeError(
                self, f"expected more than 1 value per channel when training, got input {fmt_shape(x.shape)}"
            )
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:  # cumulative moving average, as PyTorch
                momentum = 1.0 / float(self.num_batches_tracked)
        weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
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

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        cache = self._saved(grad_output)
        weight, bias = self.weight, self.bias  # both None unless affine
        needs = (input_grad, weight is not None and weight.requires_grad, bias is not None and bias.requires_grad)
        grad_input, grad_weight, grad_bias = kernels.op("batch_norm_backward")(grad_output, cache, needs)
        if weight is not None and bias is not None:
            weight.accumulate_grad(grad_weight, owned=True)
            bias.accumulate_grad(grad_bias, owned=True)
        return grad_input

    def constructor_args(self) -> dict:
        return dict(
            num_features=self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per feature, over (N, C) or (N, C, L).

    Train: batch statistics, running ones updated with momentum 0.1; eval: running statistics.
    Gradients: see ``functional/normalization.py``.
    """

    _ndims, _layout = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm over the channels of (N, C, H, W): statistics over N, H and W per channel."""

    _ndims, _layout = (4,), "(N, C, H, W)"
