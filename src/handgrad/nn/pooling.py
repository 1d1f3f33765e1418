"""MaxPool2d and AvgPool2d (the math is in ``functional/pool.py``; run by ``handgrad.kernels``)."""

from __future__ import annotations

from .. import functional as F
from .. import kernels
from .._grad_mode import is_grad_enabled
from ..errors import check_floating, check_ndim
from .conv import check_positive, check_window_fits
from .module import Module


class _Pool2d(Module):
    arguments = {"kernel_size": ("size pair", True), "stride": ("size pair", False), "padding": ("padding pair", False)}

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = F.pair(kernel_size)
        self.stride = self.kernel_size if stride is None else F.pair(stride)
        self.padding = F.pair(padding)
        check_positive("kernel_size", self.kernel_size)
        check_positive("stride", self.stride)
        check_positive("padding", self.padding, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{type(self).__name__}: padding {self.padding} should be at most half of "
                f"kernel_size {self.kernel_size}"
            )

    def _check(self, x):
        check_ndim(self, "input", x, (4,), "(N, C, H, W)")
        check_floating(self, "input", x)
        check_window_fits(self, x, self.kernel_size, self.padding)

    def constructor_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        k, s, p = (v[0] if v[0] == v[1] else v for v in (self.kernel_size, self.stride, self.padding))
        return f"kernel_size={k}, stride={s}, padding={p}"


class MaxPool2d(_Pool2d):
    """y[n, c, i, j] = max of x over the kH x kW window at (sH*i - pH, sW*j - pW); padding never wins.

    Backward sends each window's gradient to one position, the first maximum in row-major order
    (as PyTorch); overlapping windows add up.
    Shape: (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H + 2*pH - kH) // sH + 1.
    """

    op = "max_pool2d"

    def forward(self, x):
        self._check(x)
        out, cache = kernels.op("max_pool2d_forward")(
            x, self.kernel_size, self.stride, self.padding, keep_cache=is_grad_enabled()
        )
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("max_pool2d_backward")(grad_output, cache) if input_grad else None


class AvgPool2d(_Pool2d):
    """y[n, c, i, j] = mean of x over the kH x kW window, zero padding counted in the divisor
    (PyTorch's default count_include_pad=True).  dL/dx_p = sum over windows holding p of G / (kH*kW).
    Shape: (N, C, H, W) -> (N, C, Ho, Wo).
    """

    op = "avg_pool2d"

    def forward(self, x):
        self._check(x)
        out, cache = kernels.op("avg_pool2d_forward")(x, self.kernel_size, self.stride, self.padding)
        self._save_for_backward(cache, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True):
        cache = self._saved(grad_output)
        return kernels.op("avg_pool2d_backward")(grad_output, cache) if input_grad else None
