"""Max and average pooling over kH x kW windows (NCHW), with stride and padding as PyTorch.

Output size per axis: (size + 2*padding - kernel) // stride + 1.
"""
from __future__ import annotations

import numpy as np

from .conv import conv_output_size, pad2d, windows


def _scatter_windows(per_offset, x_shape, kernel_size, stride, padding, dtype):
    """Add ``per_offset(i, j)`` (N, C, Ho, Wo) onto the padded-input pixels at kernel offset (i, j)."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            grad_padded[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += per_offset(i, j)
    return grad_padded[:, :, ph:ph + h, pw:pw + w]


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0)):
    """y[n, c, ho, wo] = max over the window of x_padded (padding is -inf, so it never wins).

    The position of each maximum is kept: the first one in row-major window order, as PyTorch.
    """
    win = windows(pad2d(x, padding, value=-np.inf), kernel_size, stride)
    flat = win.reshape(win.shape[:4] + (-1,))            # (N, C, Ho, Wo, kH*kW)
    argmax = flat.argmax(axis=-1)                         # first maximum on ties
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    # backward needs only where each maximum was (as a small int) and the input's shape.
    return out, (argmax.astype(np.int16), x.shape, kernel_size, stride, padding)


def max_pool2d_backward(grad_output, cache):
    """dL/dx_p = sum over windows containing p of grad_output[window] * [p is that window's argmax].

    Each window sends its whole gradient to one position; overlapping windows add up.
    """
    argmax, x_shape, kernel_size, stride, padding = cache
    kw = kernel_size[1]
    zero = grad_output.dtype.type(0)
    return _scatter_windows(lambda i, j: np.where(argmax == i * kw + j, grad_output, zero),
                            x_shape, kernel_size, stride, padding, grad_output.dtype)


def avg_pool2d_forward(x, kernel_size, stride, padding=(0, 0)):
    """y[n, c, ho, wo] = sum over the window of x_padded / (kH*kW); zero padding counts in the
    divisor (PyTorch's default ``count_include_pad=True``)."""
    win = windows(pad2d(x, padding), kernel_size, stride)
    out = win.mean(axis=(-2, -1), dtype=x.dtype)
    return out, (x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(grad_output, cache):
    """dL/dx_p = sum over windows containing p of grad_output[window] / (kH*kW)."""
    x_shape, kernel_size, stride, padding = cache
    share = grad_output / grad_output.dtype.type(kernel_size[0] * kernel_size[1])
    return _scatter_windows(lambda i, j: share, x_shape, kernel_size, stride, padding, grad_output.dtype)
