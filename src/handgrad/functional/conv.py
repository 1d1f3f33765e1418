"""2-D convolution through im2col: unfold every receptive field into a row, then one matrix product.

Layout (NCHW, as PyTorch): x (N, C, H, W), weight (O, C, kH, kW), bias (O,), y (N, O, Ho, Wo) with
    Ho = (H + 2*pH - kH) // sH + 1,   Wo = (W + 2*pW - kW) // sW + 1.

This is the readable definition; ``handgrad.kernels.conv`` computes the same with compiled loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import HandgradError
from .spec import Bridge, Case, OpSpec, check_input_weight_bias, register

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
            grad_padded[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw] += fields[:, :, :, :, i, j].transpose(
                0, 3, 1, 2
            )
    return grad_padded[:, :, ph : ph + h, pw : pw + w]


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), keep_cache=True) -> tuple[np.ndarray, Any]:
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


def conv2d_backward(grad_output, cache, needs_input_grad=ALL) -> tuple:
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


# -- spec -------------------------------------------------------------------------------------------
def pair_argument(where, name, value, minimum=1) -> tuple[int, int]:
    """``pair(value)``, refused with a HandgradError naming ``where`` unless both are >= ``minimum``."""
    try:
        v = pair(value)
    except (TypeError, ValueError):
        raise HandgradError(where, f"expected {name} to be an int or a pair of ints, got {value!r}") from None
    if min(v) < minimum:
        raise HandgradError(where, f"expected {name} >= {minimum}, got {value!r}")
    return v


def numeric_padding(padding, kernel_size, stride):
    """torch's 'valid' is 0; 'same' is k // 2 where that is symmetric (odd kernels, stride 1); any
    other padding is returned as it is."""
    if padding == "valid":
        return (0, 0)
    if padding == "same" and all(k % 2 == 1 for k in pair(kernel_size)) and pair(stride) == (1, 1):
        return tuple(k // 2 for k in pair(kernel_size))
    return padding


def _check_conv2d(where, arrays, options):
    from ..nn.conv import check_window_fits  # the layer's own check, so both front-ends word it alike

    x, weight = arrays["input"], arrays["weight"]
    stride = pair_argument(where, "stride", options["stride"])
    layouts = "input (N, C, H, W), weight (O, C, kH, kW) and bias (O,) with one C"
    check_input_weight_bias(where, arrays, x.ndim == 4 and weight.ndim == 4, 1, layouts)
    padding = numeric_padding(options["padding"], weight.shape[2:], stride)
    padding = pair_argument(where, "padding", padding, minimum=0)
    check_window_fits(where, x, weight.shape[2:], padding)
    return {"stride": stride, "padding": padding}


def _conv2d_unsupported(module):
    if tuple(module.dilation) != (1, 1):
        return f"dilation {module.dilation} is not supported (only 1)"
    if module.groups != 1:
        return f"groups={module.groups} is not supported (only 1)"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} is not supported (only 'zeros')"
    if isinstance(numeric_padding(module.padding, module.kernel_size, module.stride), str):
        return f"padding={module.padding!r} needs asymmetric padding here; give the padding as numbers"
    return None


def _conv2d_cases(rng):
    for x_shape, w_shape, stride, padding, bias in (
        ((2, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0), True),
        ((1, 2, 5, 5), (3, 2, 3, 3), (2, 2), (1, 1), True),
        ((2, 1, 5, 6), (2, 1, 2, 3), (1, 2), (0, 1), False),
        ((2, 3, 4, 4), (2, 3, 1, 1), (1, 1), (0, 0), True),
    ):
        tensors = (rng.standard_normal(x_shape), rng.standard_normal(w_shape))
        yield Case(
            f"x {x_shape} w {w_shape[2:]} stride {stride} padding {padding} bias={bias}",
            tensors + ((rng.standard_normal(w_shape[0]),) if bias else ()),
            {"stride": stride, "padding": padding},
        )


register(
    OpSpec(
        "conv2d",
        conv2d_forward,
        conv2d_backward,
        lambda torch: torch.nn.functional.conv2d,
        _conv2d_cases,
        tensors=("input", "weight", "bias"),
        options=(("stride", 1), ("padding", 0)),
        optional=("bias",),
        needs_input_grad=True,
        bridge=Bridge("Conv2d", check=_check_conv2d, unsupported=_conv2d_unsupported),
    )
)
