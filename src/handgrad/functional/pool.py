"""Max and average pooling over kH x kW windows (NCHW), with stride and padding as PyTorch.

Output size per axis: (size + 2*padding - kernel) // stride + 1.

Both pools loop over the kH*kW kernel offsets, never over pixels: at offset (i, j) the window
entries of every output pixel form one strided view of the (padded) input,

    plane(x, i, j)[n, c, ho, wo] = x_padded[n, c, sH*ho + i, sW*wo + j],

so each step is a single array operation on an (N, C, Ho, Wo) block. When the windows do not
overlap (stride == kernel, no padding: the usual 2x2 pool) the planes tile the input and the
backward writes each gradient straight into its place, with no zero-fill-and-add.

``max_pool2d_forward_reference`` / ``max_pool2d_backward_reference`` keep the plain version (every
window flattened, ``argmax``); tests/test_fast_paths.py checks the two agree exactly.
"""
from __future__ import annotations

import numpy as np

from .._threads import split_batch
from ..errors import HandgradError, ShapeError, fmt_shape
from .conv import conv_output_size, pad2d, pair, pair_argument, windows
from .spec import REQUIRED, Bridge, Case, OpSpec, register


def _plane(xp, i, j, out_size, stride):
    """Entry (i, j) of every window: xp[:, :, sH*ho + i, sW*wo + j] as an (N, C, Ho, Wo) view."""
    (ho, wo), (sh, sw) = out_size, stride
    return xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]


def _out_size(x_shape, kernel_size, stride, padding):
    return tuple(conv_output_size(x_shape[a], kernel_size[a - 2], stride[a - 2], padding[a - 2]) for a in (2, 3))


def _scatter_windows(per_offset, x_shape, kernel_size, stride, padding, dtype):
    """Add ``per_offset(i, j, rows)`` (the (n, C, Ho, Wo) slice ``rows`` of the batch) onto the
    padded-input pixels at kernel offset (i, j); slices of the batch run on separate threads."""
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    out_size = _out_size(x_shape, kernel_size, stride, padding)
    disjoint = tuple(stride) == tuple(kernel_size) and (ph, pw) == (0, 0)
    # Disjoint windows: every pixel gets at most one value, so it is written, not added. Pixels no
    # window covers (H or W not divisible by the kernel) stay zero.
    covered = disjoint and out_size[0] * kh == h and out_size[1] * kw == w
    grad_padded = (np.empty if covered else np.zeros)((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)

    def samples(a, b):
        for i in range(kh):
            for j in range(kw):
                target = _plane(grad_padded[a:b], i, j, out_size, stride)
                if disjoint:
                    per_offset(i, j, slice(a, b), out=target)
                else:
                    target += per_offset(i, j, slice(a, b))

    split_batch(samples, n, 2 * grad_padded.size)
    return grad_padded[:, :, ph:ph + h, pw:pw + w]


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0), keep_cache=True):
    """y[n, c, ho, wo] = max over the window of x_padded (padding is -inf, so it never wins).

    The position of each maximum is kept as its index k = i*kW + j in the window: the first one
    in row-major window order, as PyTorch. (A window holding NaN gives NaN; its gradient goes to
    the first maximum of the other entries.) Slices of the batch run on separate threads.
    With ``keep_cache=False`` (no backward will follow) only the maximum is taken, no positions.
    """
    (kh, kw), out_size = kernel_size, _out_size(x.shape, kernel_size, stride, padding)
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    out = np.empty(x.shape[:2] + out_size, dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=np.int16) if keep_cache else None

    def samples(a, b):
        xp, y, arg = pad2d(x[a:b], padding, value=-np.inf), out[a:b], argmax[a:b] if keep_cache else None
        np.copyto(y, _plane(xp, 0, 0, out_size, stride))
        for i, j in offsets[1:]:
            np.maximum(y, _plane(xp, i, j, out_size, stride), out=y)
        if not keep_cache:
            return
        # argmax = the number of leading window entries that are not the maximum: k counts offset k
        # as long as offsets 0..k all missed (the last offset needs no test: it is all that is left).
        missed = _plane(xp, *offsets[0], out_size, stride) != y
        arg[...] = missed
        for k in range(1, len(offsets) - 1):
            missed &= _plane(xp, *offsets[k], out_size, stride) != y
            arg += missed

    split_batch(samples, x.shape[0], (3 if keep_cache else 1) * x.size)  # the max, then the argmax
    if not keep_cache:
        return out, None
    # backward needs only where each maximum was (as a small int) and the input's shape.
    return out, (argmax, x.shape, kernel_size, stride, padding)


def max_pool2d_backward(grad_output, cache):
    """dL/dx_p = sum over windows containing p of grad_output[window] * [p is that window's argmax].

    Each window sends its whole gradient to one position; overlapping windows add up.
    """
    argmax, x_shape, kernel_size, stride, padding = cache
    kw = kernel_size[1]

    def per_offset(i, j, rows, out=None):  # G where offset (i, j) won, else 0
        return np.multiply(grad_output[rows], argmax[rows] == i * kw + j, out=out)

    return _scatter_windows(per_offset, x_shape, kernel_size, stride, padding, grad_output.dtype)


def avg_pool2d_forward(x, kernel_size, stride, padding=(0, 0)):
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


def avg_pool2d_backward(grad_output, cache):
    """dL/dx_p = sum over windows containing p of grad_output[window] / (kH*kW)."""
    x_shape, kernel_size, stride, padding = cache
    share = grad_output / grad_output.dtype.type(kernel_size[0] * kernel_size[1])

    def per_offset(i, j, rows, out=None):
        if out is None:
            return share[rows]
        out[...] = share[rows]
        return out

    return _scatter_windows(per_offset, x_shape, kernel_size, stride, padding, grad_output.dtype)


# -- the reference: every window flattened ---------------------------------------------------------
def max_pool2d_forward_reference(x, kernel_size, stride, padding=(0, 0), keep_cache=True):
    """The same y and argmax as ``max_pool2d_forward``, from the (N, C, Ho, Wo, kH*kW) windows."""
    win = windows(pad2d(x, padding, value=-np.inf), kernel_size, stride)
    flat = win.reshape(win.shape[:4] + (-1,))            # (N, C, Ho, Wo, kH*kW), a copy
    argmax = flat.argmax(axis=-1)                         # first maximum on ties
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return out, (argmax.astype(np.int16), x.shape, kernel_size, stride, padding) if keep_cache else None


def max_pool2d_backward_reference(grad_output, cache):
    """dL/dx_p = sum over windows containing p of grad_output[window] * [p is that window's argmax],
    as zeros plus one masked add per kernel offset."""
    argmax, x_shape, kernel_size, stride, padding = cache
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    out_size = _out_size(x_shape, kernel_size, stride, padding)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_output.dtype)
    zero = grad_output.dtype.type(0)
    for i in range(kh):
        for j in range(kw):
            _plane(grad_padded, i, j, out_size, stride)[...] += np.where(argmax == i * kw + j, grad_output, zero)
    return grad_padded[:, :, ph:ph + h, pw:pw + w]


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
    for shape, kernel, stride, padding in (((2, 2, 4, 4), (2, 2), (2, 2), (0, 0)),
                                           ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1)),
                                           ((1, 2, 4, 5), (2, 3), (1, 1), (0, 0))):
        yield Case(f"x {shape} kernel {kernel} stride {stride} padding {padding}", (rng.standard_normal(shape),),
                   {"kernel_size": kernel, "stride": stride, "padding": padding})


_POOL_OPTIONS = (("kernel_size", REQUIRED), ("stride", None), ("padding", 0))
register(
    OpSpec("max_pool2d", max_pool2d_forward, max_pool2d_backward, lambda torch: torch.nn.functional.max_pool2d,
           _pool2d_cases, options=_POOL_OPTIONS,
           bridge=Bridge("MaxPool2d", check=_check_pool2d, unsupported=_max_pool2d_unsupported)),
    OpSpec("avg_pool2d", avg_pool2d_forward, avg_pool2d_backward, lambda torch: torch.nn.functional.avg_pool2d,
           _pool2d_cases, options=_POOL_OPTIONS,
           bridge=Bridge("AvgPool2d", check=_check_pool2d, unsupported=_avg_pool2d_unsupported)),
)
