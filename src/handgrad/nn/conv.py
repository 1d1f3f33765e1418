"""Conv2d: im2col plus one matrix product (the math is in ``functional/conv.py``; run by
``handgrad.kernels``)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import kernels
from .._grad_mode import is_grad_enabled
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from . import init
from .linear import weighted_backward
from .module import Module
from .parameter import Parameter


def check_window_fits(layer, x, kernel_size, padding) -> None:
    """The (padded) input must be at least as large as the kernel on both spatial axes."""
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    if padded[0] < kernel_size[0] or padded[1] < kernel_size[1]:
        raise ShapeError(
            layer,
            f"kernel size {kernel_size} is larger than the padded input {padded} "
            f"(input {fmt_shape(x.shape)}, padding {padding})",
        )


def check_positive(name, value, minimum=1):
    if any(v < minimum for v in value):
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


class Conv2d(Module):
    """y[n, o] = bias[o] + sum_c weight[o, c] (cross-correlated with) x_padded[n, c], with stride

    Args: in_channels, out_channels, kernel_size, stride=1, padding=0 (each an int or (h, w)),
    bias=True, dtype=float32.
    Shape: input (N, C_in, H, W) -> output (N, C_out, Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1;
    weight (C_out, C_in, kH, kW).
    Gradients, with G = dL/dy over all output pixels (N*Ho*Wo, C_out), cols = im2col(x)
    (N*Ho*Wo, C_in*kH*kW) and W = weight.reshape(C_out, -1):
    grad_weight = G.T @ cols, grad_bias = G.sum(0), grad_input = col2im(G @ W).
    The compiled kernel (``kernels/conv.py``) computes the same products in the transposed layout.

    Example::

        >>> conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        >>> conv(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 8, 28, 28)
    """

    op = "conv2d"

    arguments = {
        "in_channels": ("size", True),
        "out_channels": ("size", True),
        "kernel_size": ("size pair", True),
        "stride": ("size pair", False),
        "padding": ("padding pair", False),
        "bias": ("bool", False),
    }

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True, dtype=np.float32
    ):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = F.pair(kernel_size), F.pair(stride), F.pair(padding)
        check_positive("kernel_size", self.kernel_size)
        check_positive("stride", self.stride)
        check_positive("padding", self.padding, minimum=0)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels) + self.kernel_size, dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generator=None) -> None:
        init.default_linear_init_(self.weight, self.bias, generator)

    def check_input(self, x) -> None:
        """The errors forward raises for an input this layer cannot take."""
        check_ndim(self, "input", x, (4,), f"(N, {self.in_channels}, H, W)")
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                self,
                f"expected input of shape (N, {self.in_channels}, H, W) "
                f"(in_channels={self.in_channels}), got {fmt_shape(x.shape)}",
            )
        check_floating(self, "input", x, self.weight.dtype)
        check_window_fits(self, x, self.kernel_size, self.padding)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return F.conv_output_size(h, kh, sh, ph), F.conv_output_size(w, kw, sw, pw)

    def forward(self, x):
        self.check_input(x)
        bias = None if self.bias is None else self.bias.data
        out, cache = kernels.op("conv2d_forward")(
            x, self.weight.data, bias, self.stride, self.padding, keep_cache=is_grad_enabled()
        )
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        return weighted_backward(self, grad_output, input_grad)

    def constructor_args(self):
        return dict(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
        )

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + ("" if self.bias is not None else ", bias=False")
