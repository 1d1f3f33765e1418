"""Max, average and adaptive average pooling, and max unpooling, over the last two axes (H, W) of
(N, C, H, W) or unbatched (C, H, W) inputs, with PyTorch's options and output sizes.

Output size per axis (``pool_output_size``), with the window's span d*(k - 1) + 1:

    floor((size + 2*padding - span) / stride) + 1          (ceil_mode=False)
    ceil((size + 2*padding - span) / stride) + 1           (ceil_mode=True), less one where the
                                                            last window would start past the input
                                                            and its left padding (torch's rule)

Entry (i, j) of every window is one strided view of the padded input,

    plane(x, i, j)[..., ho, wo] = x_padded[..., sH*ho + dH*i, sW*wo + dW*j],

so the average pool's backward adds one (..., Ho, Wo) block per kernel offset. The max pool keeps,
per output, the flat index h*W + w of its maximum in the input plane (torch's ``return_indices``):
its backward and ``max_unpool2d`` scatter through those indices. This is the readable definition;
``handgrad.kernels.pool`` computes the common cases with compiled loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import HandgradError, ShapeError, fmt_shape
from .conv import pair_argument
from .spec import REQUIRED, Bridge, Case, OpSpec, register


def pool_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False) -> int:
    """Outputs along one axis, as torch's pooling_output_shape."""
    room = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (room + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _out_size(x_shape, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False):
    return tuple(
        pool_output_size(x_shape[a], kernel_size[a], stride[a], padding[a], dilation[a], ceil_mode) for a in (-2, -1)
    )


def _pad(x, padding, out_size, kernel_size, stride, dilation, value):
    """x padded with ``value``: ``padding`` before each axis, and after it as far as the last window
    reaches (past ``padding`` only with ceil_mode)."""
    widths = [(0, 0)] * (x.ndim - 2)
    for a in (-2, -1):
        reach = (out_size[a] - 1) * stride[a] + dilation[a] * (kernel_size[a] - 1) + 1
        widths.append((padding[a], max(padding[a], reach - x.shape[a] - padding[a])))
    return np.pad(x, widths, constant_values=value)


def _plane(xp, i, j, out_size, stride, dilation):
    """Entry (i, j) of every window: xp[..., sH*ho + dH*i, sW*wo + dW*j] as a (..., Ho, Wo) view."""
    (ho, wo), (sh, sw), (dh, dw) = out_size, stride, dilation
    return xp[..., dh * i : dh * i + sh * ho : sh, dw * j : dw * j + sw * wo : sw]


def max_pool2d_forward(
    x, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False, return_indices=False, keep_cache=True
):
    """y[..., ho, wo] = max over the window of x_padded (padding is -inf, so it never wins).

    indices[..., ho, wo] = h*W + w of that maximum in x's plane: the first one in row-major order,
    as PyTorch; a window holding NaN gives NaN, and its index is its last NaN (as PyTorch, whose scan
    takes every NaN it meets); a window of -inf gives its first pixel inside x. ``return_indices``:
    the output is (y, indices), the indices int64. ``keep_cache=False`` (no backward will follow)
    returns no cache.
    """
    h, w = x.shape[-2:]
    out_size = _out_size(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    geometry = (out_size, kernel_size, stride, dilation)
    xp = _pad(x, padding, *geometry, value=-np.inf)
    where = _pad(np.arange(h * w).reshape(h, w), padding, *geometry, value=-1)  # -1: padding
    offsets = [(i, j) for i in range(kernel_size[0]) for j in range(kernel_size[1])]
    flat = np.stack([_plane(xp, i, j, out_size, stride, dilation) for i, j in offsets], axis=-1)
    places = np.stack([_plane(where, i, j, out_size, stride, dilation) for i, j in offsets], axis=-1)
    best = flat.argmax(axis=-1)  # the first maximum (or first NaN)
    nan = np.isnan(flat)
    best = np.where(nan.any(axis=-1), flat.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1), best)
    out = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    best = np.where(out == -np.inf, (places >= 0).argmax(axis=-1), best)
    indices = np.take_along_axis(np.broadcast_to(places, flat.shape), best[..., None], axis=-1)[..., 0]
    # backward needs only where each maximum was and the input's shape.
    cache = (indices, x.shape) if keep_cache else None
    return ((out, indices) if return_indices else out), cache


def max_pool2d_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_p = sum of grad_output over the windows whose maximum is p: one scatter-add through
    the indices (overlapping windows add up)."""
    indices, x_shape = cache
    planes = int(np.prod(x_shape[:-2], dtype=np.int64))
    grad_input = np.zeros((planes, x_shape[-2] * x_shape[-1]), dtype=grad_output.dtype)
    rows = np.arange(planes)[:, None]
    np.add.at(grad_input, (rows, indices.reshape(planes, -1)), grad_output.reshape(planes, -1))
    return grad_input.reshape(x_shape)


def max_unpool2d_forward(x, indices, kernel_size, stride, padding=(0, 0), output_size=None) -> tuple[np.ndarray, Any]:
    """y[..., indices[..., k]] = x[..., k] on planes of zeros of (oH, oW): the inverse of the max
    pool that gave the indices (an index met twice keeps the later value, as PyTorch's loop).
    (oH, oW) = ``output_size``, or (H - 1)*stride - 2*padding + kernel_size."""
    output_size = unpool_output_size("max_unpool2d", x.shape, kernel_size, stride, padding, output_size)
    lead = x.shape[:-2]
    out = np.zeros(lead + (output_size[0] * output_size[1],), dtype=x.dtype)
    flat = indices.reshape(lead + (-1,))
    np.put_along_axis(out, flat, x.reshape(lead + (-1,)), axis=-1)
    # backward reads the gradient back at the same indices.
    return out.reshape(lead + tuple(output_size)), (flat, x.shape)


def max_unpool2d_backward(grad_output, cache) -> np.ndarray:
    """grad_input[..., k] = grad_output[..., indices[..., k]]: a gather through the indices."""
    flat, x_shape = cache
    return np.take_along_axis(grad_output.reshape(flat.shape[:-1] + (-1,)), flat, axis=-1).reshape(x_shape)


def _avg_divisor(x_shape, out_size, kernel_size, stride, padding, count_include_pad, divisor_override):
    """Each window's divisor (Ho, Wo), as torch: ``divisor_override``; else the window's pixels
    inside x and its padding (``count_include_pad``, not past the padding with ceil_mode), or inside
    x alone."""
    if divisor_override is not None:
        return np.full(out_size, float(divisor_override))
    counts = []
    for a in (-2, -1):
        start = np.arange(out_size[a]) * stride[a] - padding[a]
        end = np.minimum(start + kernel_size[a], x_shape[a] + padding[a])
        counts.append(end - start if count_include_pad else np.minimum(end, x_shape[a]) - np.maximum(start, 0))
    return np.outer(counts[0], counts[1]).astype(float)


def avg_pool2d_forward(
    x, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None
) -> tuple[np.ndarray, Any]:
    """y[..., ho, wo] = sum over the window of x_padded / divisor[ho, wo]: kH*kW by default (zero
    padding counts), the pixels inside x with ``count_include_pad=False``, or ``divisor_override``."""
    out_size = _out_size(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    xp = _pad(x, padding, out_size, kernel_size, stride, (1, 1), value=0)
    out = np.zeros(x.shape[:-2] + out_size, dtype=x.dtype)
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            out += _plane(xp, i, j, out_size, stride, (1, 1))
    divisor = _avg_divisor(x.shape, out_size, kernel_size, stride, padding, count_include_pad, divisor_override)
    out /= divisor.astype(x.dtype)
    return out, (x.shape, kernel_size, stride, padding, divisor)


def avg_pool2d_backward(grad_output, cache) -> np.ndarray:
    """dL/dx_p = sum over windows containing p of grad_output[window] / divisor[window]."""
    x_shape, kernel_size, stride, padding, divisor = cache
    out_size = grad_output.shape[-2:]
    share = grad_output / divisor.astype(grad_output.dtype)
    grad_padded = _pad(np.zeros(x_shape, grad_output.dtype), padding, out_size, kernel_size, stride, (1, 1), 0)
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            _plane(grad_padded, i, j, out_size, stride, (1, 1))[...] += share
    (h, w), (ph, pw) = x_shape[-2:], padding
    return grad_padded[..., ph : ph + h, pw : pw + w]


def _adaptive_means(size, out):
    """The (out, size) matrix whose row i averages x[floor(i*size/out) : ceil((i+1)*size/out)]."""
    start = np.arange(out) * size // out
    end = -(-(np.arange(out) + 1) * size // out)
    inside = (np.arange(size) >= start[:, None]) & (np.arange(size) < end[:, None])
    return inside / (end - start)[:, None]


def adaptive_avg_pool2d_forward(x, output_size) -> tuple[np.ndarray, Any]:
    """y[..., i, j] = mean of x[..., hs(i):he(i), ws(j):we(j)], hs(i) = floor(i*H/oH),
    he(i) = ceil((i+1)*H/oH) (the same along W): separable, so y = A_H @ x @ A_W.T with A the
    (out, size) matrices of those means. ``output_size``: (oH, oW), None for the input's own size."""
    sizes = adaptive_output_size("adaptive_avg_pool2d", output_size)
    out_h, out_w = (size if o is None else o for o, size in zip(sizes, x.shape[-2:]))
    rows, cols = (
        _adaptive_means(x.shape[-2], out_h).astype(x.dtype),
        _adaptive_means(x.shape[-1], out_w).astype(x.dtype),
    )
    return rows @ x @ cols.T, (rows, cols)  # backward needs only the two matrices


def adaptive_avg_pool2d_backward(grad_output, cache) -> np.ndarray:
    """grad_input = A_H.T @ grad_output @ A_W (the adjoint of the two products)."""
    rows, cols = cache
    return rows.T @ grad_output @ cols


# -- checks, shared by the layers and the bridge ------------------------------------------------------
def size_pair(where, name, value, minimum=1) -> tuple[int, int]:
    """An int, or a sequence of one or two (torch's ``(1,)`` means both axes), as (h, w)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return pair_argument(where, name, value, minimum=minimum)


def pool_arguments(where, kernel_size, stride, padding, dilation=1) -> tuple:
    """(kernel_size, stride, padding, dilation) as pairs; stride None (or empty) is kernel_size;
    padding at most half the kernel, as torch."""
    kernel_size = size_pair(where, "kernel_size", kernel_size)
    stride = kernel_size if stride is None or stride in ((), []) else size_pair(where, "stride", stride)
    padding = size_pair(where, "padding", padding, minimum=0)
    dilation = size_pair(where, "dilation", dilation)
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise HandgradError(where, f"padding {padding} should be at most half of kernel_size {kernel_size}")
    return kernel_size, stride, padding, dilation


def check_pool_input(where, x, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False) -> None:
    """x must be (N, C, H, W) or (C, H, W), large enough for at least one window on each axis."""
    if x.ndim not in (3, 4):
        raise ShapeError(where, f"expected input of shape (N, C, H, W) or (C, H, W), got {fmt_shape(x.shape)}")
    out_size = _out_size(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if min(out_size) < 1:
        raise ShapeError(
            where,
            f"input {fmt_shape(x.shape)} is smaller than one window: kernel_size {kernel_size}, "
            f"dilation {dilation}, padding {padding} give an output of {out_size}",
        )


def adaptive_output_size(where, output_size) -> tuple:
    """An int, or a pair whose entries are ints >= 0 or None (the input's own size)."""
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2 or not all(s is None or isinstance(s, (int, np.integer)) and s >= 0 for s in sizes):
        raise HandgradError(where, f"expected output_size an int >= 0 or a pair of them (or None), got {output_size!r}")
    return tuple(None if s is None else int(s) for s in sizes)


def unpool_output_size(where, x_shape, kernel_size, stride, padding, output_size) -> tuple[int, int]:
    """(oH, oW): (size - 1)*stride - 2*padding + kernel by default; a given ``output_size`` ((oH, oW),
    or the whole shape) must lie strictly within one stride of it, as torch."""
    default = tuple((x_shape[a] - 1) * stride[a] - 2 * padding[a] + kernel_size[a] for a in (-2, -1))
    if output_size is None:
        return default
    sizes = tuple(int(s) for s in output_size)
    if len(sizes) not in (2, len(x_shape)):
        raise HandgradError(where, f"expected output_size (oH, oW) or of {len(x_shape)} sizes, got {output_size!r}")
    height, width = sizes[-2:]
    for axis, size, base, s in zip(("height", "width"), (height, width), default, stride):
        if not base - s < size < base + s:
            raise HandgradError(
                where,
                f"output_size {(height, width)}: the {axis} must lie strictly between {base - s} and {base + s}",
            )
    return height, width


def check_unpool_indices(where, x, indices, output_size) -> None:
    """indices: integers of x's shape, each a position in an (oH, oW) plane."""
    if indices.shape != x.shape or not np.issubdtype(indices.dtype, np.integer):
        raise ShapeError(
            where,
            f"expected indices of integers with the input's shape {fmt_shape(x.shape)} (max_pool2d's "
            f"return_indices), got {indices.dtype} {fmt_shape(indices.shape)}",
        )
    size = output_size[0] * output_size[1]
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        bad = indices.max() if indices.max() >= size else indices.min()
        raise HandgradError(where, f"index {bad} is outside the output planes {output_size} (0 to {size - 1})")


# -- specs ------------------------------------------------------------------------------------------
def _check_max_pool2d(where, arrays, options):
    x = arrays["input"]
    kernel_size, stride, padding, dilation = pool_arguments(
        where, options["kernel_size"], options["stride"], options["padding"], options["dilation"]
    )
    ceil_mode, return_indices = bool(options["ceil_mode"]), bool(options["return_indices"])
    check_pool_input(where, x, kernel_size, stride, padding, dilation, ceil_mode)
    return dict(
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        return_indices=return_indices,
    )


def _check_avg_pool2d(where, arrays, options):
    x = arrays["input"]
    kernel_size, stride, padding, _ = pool_arguments(
        where, options["kernel_size"], options["stride"], options["padding"]
    )
    divisor = options["divisor_override"]
    if divisor is not None and (not isinstance(divisor, (int, np.integer)) or divisor == 0):
        raise HandgradError(where, f"expected divisor_override a nonzero int or None, got {divisor!r}")
    check_pool_input(where, x, kernel_size, stride, padding, (1, 1), bool(options["ceil_mode"]))
    return dict(
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        ceil_mode=bool(options["ceil_mode"]),
        count_include_pad=bool(options["count_include_pad"]),
        divisor_override=divisor,
    )


def _check_adaptive_avg_pool2d(where, arrays, options):
    x = arrays["input"]
    if x.ndim not in (3, 4):
        raise ShapeError(where, f"expected input of shape (N, C, H, W) or (C, H, W), got {fmt_shape(x.shape)}")
    return {"output_size": adaptive_output_size(where, options["output_size"])}


def _check_max_unpool2d(where, arrays, options):
    x, indices = arrays["input"], arrays["indices"]
    kernel_size, stride, padding, _ = pool_arguments(
        where, options["kernel_size"], options["stride"], options["padding"]
    )
    if x.ndim not in (3, 4):
        raise ShapeError(where, f"expected input of shape (N, C, H, W) or (C, H, W), got {fmt_shape(x.shape)}")
    output_size = unpool_output_size(where, x.shape, kernel_size, stride, padding, options["output_size"])
    check_unpool_indices(where, x, indices, output_size)
    return {"kernel_size": kernel_size, "stride": stride, "padding": padding, "output_size": output_size}


def _max_pool2d_cases(rng):
    # (return_indices changes what is returned, not the math: the bridge's tests cover it)
    for shape, kernel, stride, padding, dilation, ceil_mode in (
        ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False),
        ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), (1, 1), False),
        ((1, 2, 4, 5), (2, 3), (1, 1), (0, 0), (1, 1), False),
        ((1, 2, 6, 7), (3, 2), (2, 2), (1, 1), (1, 2), True),
        ((2, 5, 6), (3, 3), (2, 1), (0, 1), (2, 1), True),
    ):
        yield Case(
            f"x {shape} kernel {kernel} stride {stride} padding {padding} dilation {dilation} ceil_mode={ceil_mode}",
            (rng.standard_normal(shape),),
            {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation, "ceil_mode": ceil_mode},
        )


def _avg_pool2d_cases(rng):
    for shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor in (
        ((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), False, True, None),
        ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), False, True, None),
        ((1, 2, 4, 5), (2, 3), (1, 1), (0, 0), False, True, None),
        ((1, 2, 6, 7), (3, 2), (2, 2), (1, 1), True, False, None),
        ((2, 5, 6), (3, 3), (2, 3), (1, 0), True, True, 2),
    ):
        yield Case(
            f"x {shape} kernel {kernel} stride {stride} padding {padding} ceil_mode={ceil_mode} "
            f"count_include_pad={count_include_pad} divisor_override={divisor}",
            (rng.standard_normal(shape),),
            {
                "kernel_size": kernel,
                "stride": stride,
                "padding": padding,
                "ceil_mode": ceil_mode,
                "count_include_pad": count_include_pad,
                "divisor_override": divisor,
            },
        )


def _adaptive_avg_pool2d_cases(rng):
    for shape, output_size in (((2, 3, 5, 6), (3, 4)), ((3, 7, 5), 3), ((1, 2, 4, 3), (None, 2))):
        yield Case(f"x {shape} output_size {output_size}", (rng.standard_normal(shape),), {"output_size": output_size})


def _max_unpool2d_cases(rng):
    """Indices distinct within each plane, as a max pool of disjoint windows gives: where two
    coincide the forward keeps one value but the backward (a gather, as torch's) feeds both."""
    for shape, kernel, stride, padding, output_size in (
        ((2, 2, 3, 3), (2, 2), (2, 2), (0, 0), None),
        ((1, 2, 3, 4), (3, 2), (2, 2), (1, 0), (6, 7)),
        ((2, 2, 2), (3, 3), (2, 2), (0, 0), None),
    ):
        out_h, out_w = unpool_output_size("case", shape, kernel, stride, padding, output_size)
        planes, size = int(np.prod(shape[:-2])), shape[-2] * shape[-1]
        indices = np.stack([rng.permutation(out_h * out_w)[:size] for _ in range(planes)]).reshape(shape)
        yield Case(
            f"input {shape} kernel {kernel} stride {stride} padding {padding} output_size {output_size}",
            (rng.standard_normal(shape), indices),
            {"kernel_size": kernel, "stride": stride, "padding": padding, "output_size": output_size},
        )


register(
    OpSpec(
        "max_pool2d",
        max_pool2d_forward,
        max_pool2d_backward,
        lambda torch: torch.nn.functional.max_pool2d,
        _max_pool2d_cases,
        options=(
            ("kernel_size", REQUIRED),
            ("stride", None),
            ("padding", 0),
            ("dilation", 1),
            ("ceil_mode", False),
            ("return_indices", False),
        ),
        bridge=Bridge("MaxPool2d", check=_check_max_pool2d),
    ),
    OpSpec(
        "avg_pool2d",
        avg_pool2d_forward,
        avg_pool2d_backward,
        lambda torch: torch.nn.functional.avg_pool2d,
        _avg_pool2d_cases,
        options=(
            ("kernel_size", REQUIRED),
            ("stride", None),
            ("padding", 0),
            ("ceil_mode", False),
            ("count_include_pad", True),
            ("divisor_override", None),
        ),
        bridge=Bridge("AvgPool2d", check=_check_avg_pool2d),
    ),
    OpSpec(
        "adaptive_avg_pool2d",
        adaptive_avg_pool2d_forward,
        adaptive_avg_pool2d_backward,
        lambda torch: torch.nn.functional.adaptive_avg_pool2d,
        _adaptive_avg_pool2d_cases,
        options=(("output_size", REQUIRED),),
        bridge=Bridge("AdaptiveAvgPool2d", check=_check_adaptive_avg_pool2d),
    ),
    OpSpec(
        "max_unpool2d",
        max_unpool2d_forward,
        max_unpool2d_backward,
        lambda torch: torch.nn.functional.max_unpool2d,
        _max_unpool2d_cases,
        tensors=("input", "indices"),
        integer=("indices",),
        options=(("kernel_size", REQUIRED), ("stride", None), ("padding", 0), ("output_size", None)),
        bridge=Bridge("MaxUnpool2d", check=_check_max_unpool2d),
    ),
)
