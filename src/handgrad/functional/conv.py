"""2-D convolution through im2col: unfold every receptive field into a row, then one matrix product
per group of channels.

Layout (NCHW, as PyTorch): x (N, C, H, W) or one unbatched sample (C, H, W), weight (O, C/G, kH, kW),
bias (O,), y (N, O, Ho, Wo). The input is first padded by (pT, pB, pL, pR), with zeros or with its own
pixels (``padding_mode``); tap (i, j) of a kernel dilated by (dH, dW) reads pixel (dH*i, dW*j) of its
window, and
    Ho = (H + pT + pB - dH*(kH - 1) - 1) // sH + 1,   Wo likewise.
With G groups, output channels block g (O/G of them) sees only input channels block g (C/G).

This is the readable definition; ``handgrad.kernels.conv`` computes the same with compiled loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import HandgradError, ShapeError, fmt_shape
from .spec import Bridge, Case, OpSpec, register

ALL = (True, True, True)

#: torch.nn.Conv2d's padding modes: zeros, or copies of the input's pixels (mirrored without
#: repeating the edge, the edge repeated, wrapped around).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


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


# -- padding: zeros, or the input's own pixels -------------------------------------------------------
def conv_padding(padding, kernel_size, dilation=1) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for torch's padding: an int, (pH, pW), 'valid' (none) or 'same'
    (d*(k - 1) in all per axis, the odd one at the bottom/right, as torch pads it)."""
    if isinstance(padding, str) and padding == "valid":
        return (0, 0, 0, 0)
    if isinstance(padding, str) and padding == "same":
        (kh, kw), (dh, dw) = pair(kernel_size), pair(dilation)
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def _source(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """The input index that each of the before + size + after padded positions copies: reflect
    mirrors about the edge pixel (needs padding < size), replicate repeats it, circular wraps."""
    p = np.arange(-before, size + after)
    if mode == "reflect":
        return (size - 1) - np.abs((size - 1) - np.abs(p))
    if mode == "replicate":
        return np.clip(p, 0, size - 1)
    return p % size


def conv_pad(x: np.ndarray, pads, mode: str = "zeros") -> np.ndarray:
    """x (..., H, W) padded by pads = (top, bottom, left, right): with zeros, or by ``mode`` with
    copies of x's own pixels, x_padded[..., r, q] = x[..., rows[r], cols[q]] (x itself if no padding)."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    if mode == "zeros":
        return np.pad(x, ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right)))
    rows, cols = _source(x.shape[-2], top, bottom, mode), _source(x.shape[-1], left, right, mode)
    return x[..., rows[:, None], cols]


def conv_unpad(grad_padded: np.ndarray, pads, mode: str, size) -> np.ndarray:
    """The adjoint of ``conv_pad`` back to (..., H, W) with (H, W) = ``size``: dL/dx[..., i, j] is
    the sum of dL/dx_padded over every padded pixel copied from x[..., i, j]; with zeros, the inner block."""
    top, bottom, left, right = pads
    h, w = size
    if mode == "zeros" or not any(pads):
        return grad_padded[..., top : top + h, left : left + w]
    by_rows = _add_back(grad_padded, _source(h, top, bottom, mode), h, -2)
    return _add_back(by_rows, _source(w, left, right, mode), w, -1)


def _add_back(grad, source, size, axis) -> np.ndarray:
    """The adjoint of taking the slices ``source`` along ``axis`` of an axis of ``size``: slice k of
    grad added onto slice source[k]."""
    shape = list(grad.shape)
    shape[axis] = size
    out = np.zeros(shape, grad.dtype)
    np.add.at(np.moveaxis(out, axis, 0), source, np.moveaxis(grad, axis, 0))  # a pixel copied twice adds both
    return out


# -- unfold and fold ----------------------------------------------------------------------------------
def dilated_size(kernel: int, dilation: int) -> int:
    """The extent a kernel of ``kernel`` taps spans when dilated: d*(k - 1) + 1."""
    return dilation * (kernel - 1) + 1


def im2col(xp: np.ndarray, kernel_size, stride, dilation=(1, 1)) -> np.ndarray:
    """Padded (N, C, Hp, Wp) -> cols (N*Ho*Wo, C*kH*kW): row r holds the receptive field of output
    pixel r, cols[(n, ho, wo), (c, i, j)] = x_padded[n, c, sH*ho + dH*i, sW*wo + dW*j]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    spans = (dilated_size(kh, dh), dilated_size(kw, dw))
    win = sliding_window_view(xp, spans, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def col2im(cols: np.ndarray, padded_shape, kernel_size, stride, dilation=(1, 1)) -> np.ndarray:
    """The adjoint of im2col: add each row back onto the padded pixels it was read from.

    A pixel inside several windows (kernel > stride) receives the sum of their gradients.
    """
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    ho = conv_output_size(hp, dilated_size(kh, dh), sh, 0)
    wo = conv_output_size(wp, dilated_size(kw, dw), sw, 0)
    fields = cols.reshape(n, ho, wo, c, kh, kw)
    grad_padded = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):  # loop over kernel taps only; each step moves a whole (N, C, Ho, Wo) block
        for j in range(kw):
            tap = fields[:, :, :, :, i, j].transpose(0, 3, 1, 2)
            grad_padded[:, :, dh * i : dh * i + sh * ho : sh, dw * j : dw * j + sw * wo : sw] += tap
    return grad_padded


def group_blocks(weight_shape, groups: int) -> list[tuple[slice, slice]]:
    """Per group: (its columns of cols, C/G*kH*kW of them; its output channels, O/G of them)."""
    out_channels, group_channels, kh, kw = weight_shape
    width, block = group_channels * kh * kw, out_channels // groups
    return [(slice(g * width, (g + 1) * width), slice(g * block, (g + 1) * block)) for g in range(groups)]


# -- the pair -----------------------------------------------------------------------------------------
def conv2d_forward(
    x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", keep_cache=True
) -> tuple[np.ndarray, Any]:
    """y[n, o, ho, wo] = bias[o] + sum_{c in o's group, i, j} weight[o, c, i, j] * xp[n, c, sH*ho + dH*i, sW*wo + dW*j]

    with xp = conv_pad(x, (pT, pB, pL, pR), padding_mode). Per group g, one matrix product over all
    output pixels: Y[:, o in g] = cols_g @ W_g.T, where cols_g are g's columns of im2col(xp)
    (N*Ho*Wo, C/G*kH*kW) and W_g g's rows of weight.reshape(O, C/G*kH*kW); Y + bias (N*Ho*Wo, O)
    is laid out as NCHW. stride, padding, dilation as torch's (an int or a pair; padding also 'same'
    or 'valid'); an unbatched x (C, H, W) gives y (O, Ho, Wo). ``keep_cache=False`` (no backward
    will follow) returns no cache.
    """
    stride, dilation = pair(stride), pair(dilation)
    pads = conv_padding(padding, weight.shape[2:], dilation)
    xp = conv_pad(x if x.ndim == 4 else x[None], pads, padding_mode)  # unbatched: a batch of one
    cols = im2col(xp, weight.shape[2:], stride, dilation)
    matrix = weight.reshape(weight.shape[0], -1)
    out = np.empty((cols.shape[0], weight.shape[0]), dtype=np.result_type(cols, weight))
    for columns, channels in group_blocks(weight.shape, groups):
        out[:, channels] = cols[:, columns] @ matrix[channels].T
    if bias is not None:
        out += bias
    ho = conv_output_size(xp.shape[2], dilated_size(weight.shape[2], dilation[0]), stride[0], 0)
    out = out.reshape(xp.shape[0], ho, -1, weight.shape[0]).transpose(0, 3, 1, 2)
    # backward needs cols (grad_weight = G.T @ cols) and weight (grad_cols = G @ W); not x itself.
    cache = (cols, weight, x.shape, xp.shape, stride, pads, dilation, groups, padding_mode, bias is not None)
    return out if x.ndim == 4 else out[0], cache if keep_cache else None


def conv2d_backward(grad_output, cache, needs_input_grad=ALL) -> tuple:
    """With G = dL/dY as rows (N*Ho*Wo, O), G_g its columns of group g's output channels:

        grad_weight[o in g] = G_g.T @ cols_g              -> reshaped to (O, C/G, kH, kW)
        grad_bias           = G.sum(rows)                 (O,)
        grad_cols_g         = G_g @ W_g
        grad_input          = conv_unpad(col2im(grad_cols))     (N, C, H, W), or (C, H, W) unbatched

    ``needs_input_grad`` (input, weight, bias): what to compute; None for the rest.
    """
    cols, weight, x_shape, padded_shape, stride, pads, dilation, groups, padding_mode, has_bias = cache
    out_channels = weight.shape[0]
    grad_rows = grad_output.reshape((-1,) + grad_output.shape[-3:]).transpose(0, 2, 3, 1).reshape(-1, out_channels)
    blocks = group_blocks(weight.shape, groups)
    grad_weight = grad_bias = grad_input = None
    if needs_input_grad[1]:
        grad_weight = np.concatenate([grad_rows[:, o].T @ cols[:, c] for c, o in blocks]).reshape(weight.shape)
    if has_bias and needs_input_grad[2]:
        grad_bias = grad_rows.sum(axis=0)
    if needs_input_grad[0]:
        matrix = weight.reshape(out_channels, -1)
        grad_cols = np.concatenate([grad_rows[:, o] @ matrix[o] for _, o in blocks], axis=1)
        grad_padded = col2im(grad_cols, padded_shape, weight.shape[2:], stride, dilation)
        grad_input = conv_unpad(grad_padded, pads, padding_mode, x_shape[-2:]).reshape(x_shape)
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


def conv2d_options(where, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros") -> dict:
    """torch's Conv2d options checked, stride and dilation as pairs, padding as a pair or 'same' /
    'valid'; refused, naming ``where``, where torch refuses them."""
    stride, dilation = pair_argument(where, "stride", stride), pair_argument(where, "dilation", dilation)
    if not isinstance(padding, str):
        padding = pair_argument(where, "padding", padding, minimum=0)
    elif padding not in ("same", "valid"):
        raise HandgradError(where, f"expected padding 'same', 'valid', an int or a pair of ints, got {padding!r}")
    elif padding == "same" and stride != (1, 1):
        raise HandgradError(
            where, f"padding='same' needs stride 1 (as in torch), got stride {stride}; give the padding as numbers"
        )
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise HandgradError(where, f"expected groups to be an int >= 1, got {groups!r}")
    if padding_mode not in PADDING_MODES:
        raise HandgradError(where, f"expected padding_mode {', '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}")
    return dict(stride=stride, padding=padding, dilation=dilation, groups=int(groups), padding_mode=padding_mode)


def check_conv2d_size(where, x_shape, kernel_size, options) -> None:
    """The padded input must hold the dilated kernel on both axes; reflect padding must be smaller
    than the input, circular padding at most as large (as torch: the copies come from x itself)."""
    dilation, mode = options["dilation"], options["padding_mode"]
    pads = conv_padding(options["padding"], kernel_size, dilation)
    for axis, size, before, after in zip(("height", "width"), x_shape[-2:], pads[::2], pads[1::2]):
        if (mode == "reflect" and max(before, after) >= size) or (mode == "circular" and max(before, after) > size):
            raise ShapeError(
                where,
                f"padding_mode={mode!r} needs padding {'<' if mode == 'reflect' else '<='} the input's {axis}, "
                f"got padding {max(before, after)} for {axis} {size} (input {fmt_shape(x_shape)})",
            )
    padded = (x_shape[-2] + pads[0] + pads[1], x_shape[-1] + pads[2] + pads[3])
    spans = tuple(dilated_size(k, d) for k, d in zip(kernel_size, dilation))
    if padded[0] < spans[0] or padded[1] < spans[1]:
        dilated = f" dilated by {dilation} spans {spans}," if dilation != (1, 1) else ""
        raise ShapeError(
            where,
            f"kernel size {tuple(kernel_size)}{dilated} is larger than the padded input {padded} "
            f"(input {fmt_shape(x_shape)}, padding {_padding_text(options['padding'], pads)})",
        )


def _padding_text(padding, pads) -> str:
    return f"{padding!r} = {pads}" if isinstance(padding, str) or pads[::2] != pads[1::2] else str(pads[::2])


def _check_conv2d(where, arrays, options):
    x, weight, bias = arrays["input"], arrays["weight"], arrays["bias"]
    options = conv2d_options(where, **options)
    groups = options["groups"]
    if (
        x.ndim not in (3, 4)
        or weight.ndim != 4
        or x.shape[-3] != weight.shape[1] * groups
        or weight.shape[0] % groups
        or (bias is not None and bias.shape != weight.shape[:1])
    ):
        raise ShapeError(
            where,
            f"expected input (N, C, H, W) or (C, H, W), weight (O, C/groups, kH, kW) with O divisible by "
            f"groups={groups}, and bias (O,); got input {fmt_shape(x.shape)}, weight {fmt_shape(weight.shape)}, "
            f"bias {None if bias is None else fmt_shape(bias.shape)}",
        )
    check_conv2d_size(where, x.shape, weight.shape[2:], options)
    return options


def _torch_conv2d(torch):
    """torch.nn.functional.conv2d, and torch.nn.Conv2d's padding_mode: the input padded by F.pad in
    that mode first, then no padding, as the layer does."""
    functional = torch.nn.functional

    def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
        if padding_mode == "zeros":
            return functional.conv2d(input, weight, bias, stride, padding, dilation, groups)
        top, bottom, left, right = conv_padding(padding, weight.shape[2:], dilation)
        padded = functional.pad(input, (left, right, top, bottom), mode=padding_mode)
        return functional.conv2d(padded, weight, bias, stride, 0, dilation, groups)

    return conv2d


def _conv2d_cases(rng):
    for x_shape, w_shape, bias, options in (
        ((2, 2, 5, 5), (3, 2, 3, 3), True, {}),
        ((1, 2, 5, 5), (3, 2, 3, 3), True, {"stride": (2, 2), "padding": (1, 1)}),
        ((2, 1, 5, 6), (2, 1, 2, 3), False, {"stride": (1, 2), "padding": (0, 1)}),
        ((2, 3, 4, 4), (2, 3, 1, 1), True, {}),
        ((1, 2, 7, 6), (2, 2, 2, 3), True, {"dilation": (2, 1), "padding": 1, "stride": (1, 2)}),
        ((2, 4, 5, 5), (6, 2, 3, 2), True, {"groups": 2, "padding": (1, 0)}),
        ((1, 4, 6, 6), (4, 1, 3, 3), False, {"groups": 4, "dilation": 2, "padding": "same"}),
        ((1, 2, 5, 4), (3, 2, 2, 3), True, {"padding": "same", "padding_mode": "reflect"}),
        ((1, 2, 4, 5), (2, 2, 3, 3), True, {"padding": (2, 1), "padding_mode": "replicate", "stride": 2}),
        ((2, 2, 4, 4), (2, 1, 3, 3), True, {"padding": (1, 3), "padding_mode": "circular", "groups": 2}),
        ((3, 6, 5), (2, 3, 3, 2), True, {"padding": "valid"}),
    ):
        tensors = (rng.standard_normal(x_shape), rng.standard_normal(w_shape))
        options = {"stride": 1, "padding": 0, **options}
        yield Case(
            f"x {x_shape} w {w_shape[2:]} bias={bias} " + " ".join(f"{k} {v}" for k, v in options.items()),
            tensors + ((rng.standard_normal(w_shape[0]),) if bias else ()),
            options,
        )


register(
    OpSpec(
        "conv2d",
        conv2d_forward,
        conv2d_backward,
        _torch_conv2d,
        _conv2d_cases,
        tensors=("input", "weight", "bias"),
        options=(("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1), ("padding_mode", "zeros")),
        optional=("bias",),
        needs_input_grad=True,
        bridge=Bridge("Conv2d", check=_check_conv2d, layer_options=("padding_mode",)),
    )
)
