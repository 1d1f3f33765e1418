"""Max and average pooling over kH x kW windows (NCHW), with stride and padding as PyTorch.

Output size per axis: (size + 2*padding - kernel) // stride + 1. Entry (i, j) of every window is
one strided view of the padded input,

    plane(x, i, j)[n, c, ho, wo] = x_padded[n, c, sH*ho + i, sW*wo + j],

so both backwards add one (N, C, Ho, Wo) block per kernel offset. This is the readable definition;
``handgrad.kernels.pool`` computes the same with compiled loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import HandgradError, ShapeError, fmt_shape
from .conv import conv_output_size, pad2d, pair, pair_argument, windows
from .spec import REQUIRED, Bridge, Case, OpSpec, register


def _plane(xp, i, j, out_size, stride):
    """Entry (i, j) of every window: xp[:, :, sH*ho + i, sW*wo + j] as an (N, C, Ho, Wo) view."""
    (ho, wo), (sh, sw) = out_size, stride
    return xp[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw]


def _out_size(x_shape, kernel_size, stride, padding):
    return tuple(conv_output_size(x_shape[a], kernel_size[a - 2], stride[a - 2], padding[a - 2]) for a in (2, 3))


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0), keep_cache=True):
    """y[n, c, ho, wo] = max over the window of x_padded (padding is -inf, so it never wins).

    argmax = the position k = i*kW + j of the maximum in its window: the first one in row-major
    order, as PyTorch; a window holding NaN gives NaN, and its argmax is its last NaN (as PyTorch,
    whose scan takes every NaN it meets). ``keep_cache=False`` (no backward will follow) returns
    no cache.
    """
    flat = windows(pad2d(x, padding, value=-np.inf), kernel_size, stride)
    flat = flat.reshape(flat.shape[:4] + (-1,))  # (N, C, Ho, Wo, kH*kW), a copy
    argmax = flat.argmax(axis=-1)  # the first maximum (or first NaN)
    nan = np.isnan(flat)
    last_nan = flat.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1)
    argmax = np.where(nan.any(axis=-1), last_nan, argmax)
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    # backward needs only where each maximum was (as a small int) and the input's shape.
    return out, (argmax.astype(np.int16), x.shape, kernel_size, stride, padding) if keep_cache else None


def max_pool2d_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_p = sum over windows containing p of grad_output[window] * [p is that window's argmax]

    as zeros plus one masked add per kernel offset; overlapping windows add up.
    """
    argmax, x_shape, kernel_size, stride, padding = cache
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    out_size = _out_size(x_shape, kernel_size, stride, padding)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_output.dtype)
    zero = grad_output.dtype.type(0)
    for i in range(kh):
        for j in range(kw):
            _plane(grad_padded, i, j, out_size, stride)[...] += np.where(argmax == i * kw + j, grad_output, zero)
    return grad_padded[:, :, ph : ph + h, pw : pw + w]


def avg_pool2d_forward(x, kernel_size, stride, padding=(0, 0)) -> tuple[np.ndarray, Any]:
    """y[n, c, ho, wo] = sum over the window of x_padded / (kH*kW); zero padding counts in the
    divisor (PyTorch's default ``count_include_pad=True``)."""
    xp = pad2d(x, padding)
    (kh, kw), out_size = kernel_size, _out_size(x.shape, kernel_size, stride, padding)
    out = np.zeros(x.shape[:2] + out_size, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += _plane(xp, i, j, out_size, stride)
    out /= x.dtype.type(kh * kw)
    return out, (x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_p = sum over windows containing p of grad_output[window] / (kH*kW)."""
    x_shape, kernel_size, stride, padding = cache
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    out_size = _out_size(x_shape, kernel_size, stride, padding)
    share = grad_output / grad_output.dtype.type(kh * kw)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_output.dtype)
    for i in range(kh):
        for j in range(kw):
            _plane(grad_padded, i, j, out_size, stride)[...] += share
    return grad_padded[:, :, ph : ph + h, pw : pw + w]


# -- specs ------------------------------------------------------------------------------------------
def _check_pool2d(where, arrays, options):
    from ..nn.conv import check_window_fits  # the layers' own check, so both front-ends word it alike

    x = arrays["input"]
    kernel_size = pair_argument(where, "kernel_size", options["kernel_size"])
    stride = options["stride"]
    stride = kernel_size if stride is None or stride == [] else pair_argument(where, "stride", stride)
    padding = pair_argument(where, "padding", options["padding"], minimum=0)
    if x.ndim != 4:
        raise ShapeError(where, f"expected input of shape (N, C, H, W) (4-D), got {fmt_shape(x.shape)}")
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise HandgradError(where, f"padding {padding} should be at most half of kernel_size {kernel_size}")
    check_window_fits(where, x, kernel_size, padding)
    return {"kernel_size": kernel_size, "stride": stride, "padding": padding}


def _max_pool2d_unsupported(module):
    if pair(module.dilation) != (1, 1):
        return f"dilation {module.dilation} is not supported (only 1)"
    if module.return_indices:
        return "return_indices=True is not supported"
    if module.ceil_mode:
        return "ceil_mode=True is not supported"
    return None


def _avg_pool2d_unsupported(module):
    if module.ceil_mode:
        return "ceil_mode=True is not supported"
    if not module.count_include_pad:
        return "count_include_pad=False is not supported"
    if module.divisor_override is not None:
        return "divisor_override is not supported"
    return None


def _pool2d_cases(rng):
    for shape, kernel, stride, padding in (
        ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0)),
        ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1)),
        ((1, 2, 4, 5), (2, 3), (1, 1), (0, 0)),
    ):
        yield Case(
            f"x {shape} kernel {kernel} stride {stride} padding {padding}",
            (rng.standard_normal(shape),),
            {"kernel_size": kernel, "stride": stride, "padding": padding},
        )


_POOL_OPTIONS = (("kernel_size", REQUIRED), ("stride", None), ("padding", 0))
register(
    OpSpec(
        "max_pool2d",
        max_pool2d_forward,
        max_pool2d_backward,
        lambda torch: torch.nn.functional.max_pool2d,
        _pool2d_cases,
        options=_POOL_OPTIONS,
        bridge=Bridge("MaxPool2d", check=_check_pool2d, unsupported=_max_pool2d_unsupported),
    ),
    OpSpec(
        "avg_pool2d",
        avg_pool2d_forward,
        avg_pool2d_backward,
        lambda torch: torch.nn.functional.avg_pool2d,
        _pool2d_cases,
        options=_POOL_OPTIONS,
        bridge=Bridge("AvgPool2d", check=_check_pool2d, unsupported=_avg_pool2d_unsupported),
    ),
)
