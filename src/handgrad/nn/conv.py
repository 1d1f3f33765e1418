"""Conv2d: im2col plus one matrix product per group (the math is in ``functional/conv.py``; run by
``handgrad.kernels``)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import kernels
from .._grad_mode import is_grad_enabled
from ..errors import ShapeError, check_floating, check_ndim, fmt_shape
from ..functional.conv import check_conv2d_size, conv2d_options, conv_padding, dilated_size
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
    """y[n, o] = bias[o] + sum_{c in o's group} weight[o, c] (cross-correlated with) x_padded[n, c],
    with stride and dilation

    Args (as torch.nn.Conv2d): in_channels, out_channels, kernel_size, stride=1, padding=0 (an int,
    (h, w), 'same' or 'valid'), dilation=1 (each an int or (h, w)), groups=1 (dividing both channel
    counts), bias=True, padding_mode='zeros' ('reflect', 'replicate', 'circular'), dtype=float32.
    Shape: input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, Ho, Wo) or (C_out, Ho, Wo),
    Ho = (H + pT + pB - dH*(kH - 1) - 1) // sH + 1 ('same' pads d*(k - 1) in all, the odd one at the
    bottom/right); weight (C_out, C_in/groups, kH, kW).
    Gradients, per group g with G_g = dL/dy of its output channels over all output pixels, cols_g =
    im2col(x_padded) of its input channels and W_g = its rows of weight.reshape(C_out, -1):
    grad_weight_g = G_g.T @ cols_g, grad_bias = G.sum(0), grad_input = unpad(col2im(G_g @ W_g)).
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
        "padding": ("conv padding", False),
        "dilation": ("size pair", False),
        "groups": ("size", False),
        "bias": ("bool", False),
        "padding_mode": ("padding mode", False),
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        dtype=np.float32,
    ):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = F.pair(kernel_size)
        check_positive("kernel_size", self.kernel_size)
        options = conv2d_options(None, stride, padding, dilation, groups, padding_mode)  # a ValueError
        self.stride, self.padding, self.dilation = options["stride"], options["padding"], options["dilation"]
        self.groups, self.padding_mode = options["groups"], padding_mode
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both be "
                f"divisible by groups ({self.groups})"
            )
        # (top, bottom, left, right): 'same' with an even dilated kernel pads one more at the bottom/right
        self.pads = conv_padding(self.padding, self.kernel_size, self.dilation)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generator=None) -> None:
        init.default_linear_init_(self.weight, self.bias, generator)

    def _options(self) -> dict:
        """The options as ``conv2d_forward`` takes them."""
        return {name: getattr(self, name) for name in ("stride", "padding", "dilation", "groups", "padding_mode")}

    def plain_padding(self) -> tuple[int, int] | None:
        """(pH, pW) when this is the plain convolution the fused Conv2d-ReLU-MaxPool2d kernel runs
        (no dilation, one group, zero padding the same on both sides), else None."""
        top, bottom, left, right = self.pads
        plain = self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"
        return (top, left) if plain and (top, left) == (bottom, right) else None

    def check_input(self, x) -> None:
        """The errors forward raises for an input this layer cannot take."""
        layout = f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)"
        check_ndim(self, "input", x, (3, 4), layout)
        if x.shape[-3] != self.in_channels:
            raise ShapeError(
                self, f"expected input of shape {layout} (in_channels={self.in_channels}), got {fmt_shape(x.shape)}"
            )
        check_floating(self, "input", x, self.weight.dtype)
        check_conv2d_size(self, x.shape, self.kernel_size, self._options())

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input."""
        top, bottom, left, right = self.pads
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        return (
            F.conv_output_size(h + top + bottom, dilated_size(kh, dh), sh, 0),
            F.conv_output_size(w + left + right, dilated_size(kw, dw), sw, 0),
        )

    def forward(self, x):
        self.check_input(x)
        bias = None if self.bias is None else self.bias.data
        out, cache = kernels.op("conv2d_forward")(
            x, self.weight.data, bias, **self._options(), keep_cache=is_grad_enabled()
        )
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        return weighted_backward(self, grad_output, input_grad)

    def constructor_args(self):
        """torch's keywords; dilation, groups and padding_mode only where they are not the default,
        so a checkpoint of a plain convolution reads as before."""
        args = dict(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
        )
        extra = dict(dilation=self.dilation, groups=self.groups, padding_mode=self.padding_mode)
        defaults = dict(dilation=(1, 1), groups=1, padding_mode="zeros")
        return args | {k: v for k, v in extra.items() if v != defaults[k]}

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + ("" if self.bias is not None else ", bias=False")
