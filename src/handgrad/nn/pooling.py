"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d and MaxUnpool2d (the math is in ``functional/pool.py``;
run by ``handgrad.kernels``). Inputs (N, C, H, W) or unbatched (C, H, W), as PyTorch."""

from __future__ import annotations

from .. import kernels
from .._grad_mode import is_grad_enabled
from ..errors import HandgradError, ShapeError, check_floating, fmt_shape
from ..functional import pool as P
from ..functional.conv import pair
from .module import Module


class _Pool2d(Module):
    arguments = {"kernel_size": ("size pair", True), "stride": ("size pair", False), "padding": ("padding pair", False)}

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _constructor_checked(
            self, P.pool_arguments, kernel_size, stride, padding, dilation
        )

    def _check(self, x, ceil_mode=False):
        check_floating(self, "input", x)
        P.check_pool_input(self, x, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode)

    def constructor_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        k, s, p = (v[0] if v[0] == v[1] else v for v in (self.kernel_size, self.stride, self.padding))
        return f"kernel_size={k}, stride={s}, padding={p}"


def _constructor_checked(layer, check, *args):
    """A constructor argument refused as torch's layers refuse it: ValueError naming the layer."""
    try:
        return check(type(layer).__name__, *args)
    except HandgradError as error:
        raise ValueError(str(error)) from None


class MaxPool2d(_Pool2d):
    """y[..., i, j] = max of x over the kH x kW window at (sH*i - pH, sW*j - pW), its taps dH, dW
    apart; padding never wins.

    Args: kernel_size, stride=None (kernel_size), padding=0, dilation=1, return_indices=False,
    ceil_mode=False, as torch.nn.MaxPool2d. ``return_indices``: forward returns (y, indices), the
    flat index h*W + w of each maximum in its input plane (int64), which MaxUnpool2d takes.
    Backward sends each window's gradient to one position, the first maximum in row-major order
    (as PyTorch); overlapping windows add up.
    Shape: (N, C, H, W) or (C, H, W) -> (..., Ho, Wo), Ho = (H + 2*pH - dH*(kH - 1) - 1) // sH + 1
    (rounded up with ceil_mode, as torch).
    """

    op = "max_pool2d"
    arguments = {
        **_Pool2d.arguments,
        "dilation": ("size pair", False),
        "return_indices": ("bool", False),
        "ceil_mode": ("bool", False),
    }

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation)
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)

    def forward(self, x):
        self._check(x, self.ceil_mode)
        options = (self.dilation, self.ceil_mode, self.return_indices)
        out, cache = kernels.op("max_pool2d_forward")(
            x, self.kernel_size, self.stride, self.padding, *options, keep_cache=is_grad_enabled()
        )
        self._save_for_backward(cache, (out[0] if self.return_indices else out).shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("max_pool2d_backward")(grad_output, cache) if input_grad else None

    def constructor_args(self):  # also read off a torch.nn.MaxPool2d (no super()), whose sizes may be ints
        args = _Pool2d.constructor_args(self)
        if pair(self.dilation) != (1, 1) or self.return_indices or self.ceil_mode:  # else as before them
            args.update(dilation=self.dilation, return_indices=self.return_indices, ceil_mode=self.ceil_mode)
        return args

    def extra_repr(self):
        s = super().extra_repr()
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation[0] if self.dilation[0] == self.dilation[1] else self.dilation}"
        return (
            s
            + (", ceil_mode=True" if self.ceil_mode else "")
            + (", return_indices=True" if self.return_indices else "")
        )


class AvgPool2d(_Pool2d):
    """y[..., i, j] = sum of x over the kH x kW window / divisor: kH*kW by default (zero padding
    counts, PyTorch's count_include_pad=True), the window's pixels inside x with
    count_include_pad=False, or divisor_override.  dL/dx_p = sum over windows holding p of G / divisor.

    Args: kernel_size, stride=None (kernel_size), padding=0, ceil_mode=False, count_include_pad=True,
    divisor_override=None, as torch.nn.AvgPool2d.
    Shape: (N, C, H, W) or (C, H, W) -> (..., Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1 (rounded up
    with ceil_mode, as torch).
    """

    op = "avg_pool2d"
    arguments = {
        **_Pool2d.arguments,
        "ceil_mode": ("bool", False),
        "count_include_pad": ("bool", False),
        "divisor_override": ("divisor", False),
    }

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
    ):
        super().__init__(kernel_size, stride, padding)
        if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
            raise ValueError(f"AvgPool2d: divisor_override must be a nonzero int or None, got {divisor_override!r}")
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        self._check(x, self.ceil_mode)
        out, cache = kernels.op("avg_pool2d_forward")(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("avg_pool2d_backward")(grad_output, cache) if input_grad else None

    def constructor_args(self):  # also read off a torch.nn.AvgPool2d (no super())
        args = _Pool2d.constructor_args(self)
        if self.ceil_mode or not self.count_include_pad or self.divisor_override is not None:
            args.update(
                ceil_mode=self.ceil_mode,
                count_include_pad=self.count_include_pad,
                divisor_override=self.divisor_override,
            )
        return args

    def extra_repr(self):
        s = super().extra_repr()
        if self.ceil_mode or not self.count_include_pad or self.divisor_override is not None:
            s += f", ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}"
            s += f", divisor_override={self.divisor_override}"
        return s


class AdaptiveAvgPool2d(Module):
    """y[..., i, j] = mean of x over rows floor(i*H/oH) to ceil((i+1)*H/oH) and the same columns
    along W: any (H, W) to (oH, oW). dL/dx spreads each G evenly over its window.

    Args: output_size: oH = oW, or (oH, oW) where None keeps the input's size, as torch.
    Shape: (N, C, H, W) or (C, H, W) -> (..., oH, oW).
    """

    op = "adaptive_avg_pool2d"
    arguments = {"output_size": ("output size", True)}

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _constructor_checked(self, P.adaptive_output_size, output_size)

    def forward(self, x):
        _check_maps(self, x)
        out, cache = kernels.op("adaptive_avg_pool2d_forward")(x, self.output_size)
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("adaptive_avg_pool2d_backward")(grad_output, cache) if input_grad else None

    def constructor_args(self):  # also read off a torch.nn.AdaptiveAvgPool2d, whose size may be an int
        o = self.output_size
        return {"output_size": list(o) if isinstance(o, (tuple, list)) else o}

    def extra_repr(self):
        o = self.output_size
        return f"output_size={o[0] if o[0] == o[1] else o}"


class MaxUnpool2d(Module):
    """y = zeros of (..., oH, oW) with y[..., indices[..., k]] = x[..., k]: puts each maximum of a
    MaxPool2d(return_indices=True) back where it came from. dL/dx[..., k] = G[..., indices[..., k]].

    Args: kernel_size, stride=None (kernel_size), padding=0, as torch.nn.MaxUnpool2d; forward(x,
    indices, output_size=None): (oH, oW) = (H - 1)*sH - 2*pH + kH unless ``output_size`` says
    (within one stride of it, as torch).
    """

    op = "max_unpool2d"
    arguments = None  # it takes two inputs, so a Sequential (what a checkpoint stores) cannot run it

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = _constructor_checked(
            self, P.pool_arguments, kernel_size, stride, padding
        )

    def forward(self, x, indices, output_size=None):
        _check_maps(self, x)
        output_size = P.unpool_output_size(self, x.shape, self.kernel_size, self.stride, self.padding, output_size)
        P.check_unpool_indices(self, x, indices, output_size)
        out, cache = kernels.op("max_unpool2d_forward")(
            x, indices, self.kernel_size, self.stride, self.padding, output_size
        )
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("max_unpool2d_backward")(grad_output, cache) if input_grad else None

    def constructor_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        k, s, p = (v[0] if v[0] == v[1] else v for v in (self.kernel_size, self.stride, self.padding))
        return f"kernel_size={k}, stride={s}, padding={p}"


def _check_maps(layer, x):
    check_floating(layer, "input", x)
    if x.ndim not in (3, 4):
        raise ShapeError(layer, f"expected input of shape (N, C, H, W) or (C, H, W), got {fmt_shape(x.shape)}")
