"""2-D convolution through im2col: unfold every receptive field into a row, then one matrix product.

Layout (NCHW, as PyTorch): x (N, C, H, W), weight (O, C, kH, kW), bias (O,), y (N, O, Ho, Wo) with
    Ho = (H + 2*pH - kH) // sH + 1,   Wo = (W + 2*pW - kW) // sW + 1.

This is the readable definition; ``handgrad.kernels.conv`` computes the same with compiled loops.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ALL = (True, True, True)


def pair(value) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``, as PyTorch's layer arguments."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """x with ``padding`` rows/columns of ``value`` on each side of H and W (x itself if none)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(xp: np.ndarray, kernel_size, stride) -> np.ndarray:
    """Every kH x kW window of the padded input, as a view: (N, C, Ho, Wo, kH, kW)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def im2col(x: np.ndarray, kernel_size, stride, padding) -> np.ndarray:
    """(N, C, H, W) -> cols (N*Ho*Wo, C*kH*kW): row r holds the receptive field of output pixel r,
    cols[(n, ho, wo), (c, i, j)] = x_padded[n, c, sH*ho + i, sW*wo + j]."""
    win = windows(pad2d(x, padding), kernel_size, stride)
    n, c, ho, wo, kh, kw = win.shape
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def col2im(cols: np.ndarray, x_shape, kernel_size, stride, padding) -> np.ndarray:
    """The adjoint of im2col: add each row back onto the pixels it was read from.

    A pixel inside several windows (kernel > stride) receives the sum of their gradients.
    """
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    fields = cols.reshape(n, ho, wo, c, kh, kw)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):  # loop over kernel offsets only; each step moves a whole (N, C, Ho, Wo) block
        for j in range(kw):
            grad_padded[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += fields[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return grad_padded[:, :, ph:ph + h, pw:pw + w]


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), keep_cache=True):
    """y[n, o, ho, wo] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * x_padded[n, c, sH*ho + i, sW*wo + j]

    As one matrix product over all output pixels: Y = cols @ W.T + bias, where cols = im2col(x)
    (N*Ho*Wo, C*kH*kW) and W = weight.reshape(O, C*kH*kW); Y (N*Ho*Wo, O) is laid out as NCHW.
    ``keep_cache=False`` (no backward will follow) returns no cache.
    """
    n, _, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    ho, wo = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    cols = im2col(x, (kh, kw), stride, padding)
    out = cols @ weight.reshape(out_channels, -1).T
    if bias is not None:
        out += bias
    out = out.reshape(n, ho, wo, out_channels).transpose(0, 3, 1, 2)
    # backward needs cols (grad_weight = G.T @ cols) and weight (grad_cols = G @ W); not x itself.
    return out, (cols, weight, x.shape, stride, padding, bias is not None) if keep_cache else None


def conv2d_backward(grad_output, cache, needs_input_grad=ALL):
    """With G = dL/dY as rows (N*Ho*Wo, O), the gradients of Y = cols @ W.T + bias are

        grad_weight = G.T @ cols                  -> reshaped to (O, C, kH, kW)
        grad_bias   = G.sum(rows)                 (O,)
        grad_input  = col2im(G @ W)               (N, C, H, W)

    ``needs_input_grad`` (input, weight, bias): what to compute; None for the rest.
    """
    cols, weight, x_shape, stride, padding, has_bias = cache
    out_channels = weight.shape[0]
    grad_rows = grad_output.transpose(0, 2, 3, 1).reshape(-1, out_channels)
    grad_weight = (grad_rows.T @ cols).reshape(weight.shape) if needs_input_grad[1] else None
    grad_bias = grad_rows.sum(axis=0) if has_bias and needs_input_grad[2] else None
    grad_input = None
    if needs_input_grad[0]:
        grad_cols = grad_rows @ weight.reshape(out_channels, -1)
        grad_input = col2im(grad_cols, x_shape, weight.shape[2:], stride, padding)
    return grad_input, grad_weight, grad_bias
