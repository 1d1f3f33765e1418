"""2-D convolution through im2col: unfold every receptive field into a column, then matrix products.

Layout (NCHW, as PyTorch): x (N, C, H, W), weight (O, C, kH, kW), bias (O,), y (N, O, Ho, Wo) with
    Ho = (H + 2*pH - kH) // sH + 1,   Wo = (W + 2*pW - kW) // sW + 1.

Two versions of the same math live here:

* ``conv2d_forward`` / ``conv2d_backward`` (used by the layers and the bridge) unfold x per sample,
  cols[n] (C*kH*kW, Ho*Wo), so that ``weight @ cols[n]`` *is* sample n's output in NCHW order: no
  transpose of the output forward, none of grad_output backward. The unfolding is one strided copy.
* ``conv2d_forward_reference`` / ``conv2d_backward_reference``: the textbook im2col with one row per
  output pixel, cols (N*Ho*Wo, C*kH*kW) and Y = cols @ W.T. Slower (the output and its gradient
  must change layout) but it reads like the formula; tests/test_fast_paths.py checks the two agree.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._threads import split_batch
from ..errors import HandgradError, ShapeError, fmt_shape
from .spec import Bridge, Case, OpSpec, register

ALL = (True, True, True)
COLS_BLOCK_BYTES = 1 << 19  # inference: columns unfolded per block of samples, about half a typical L2 cache


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
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x  # one copy; np.pad costs several passes
    return padded


def windows(xp: np.ndarray, kernel_size, stride) -> np.ndarray:
    """Every kH x kW window of the padded input, as a view: (N, C, Ho, Wo, kH, kW)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


# -- the fast path: per-sample columns -------------------------------------------------------------
def unfold(x: np.ndarray, kernel_size, stride, padding, out=None) -> np.ndarray:
    """(N, C, H, W) -> cols (N, C*kH*kW, Ho*Wo) with cols[n, (c, i, j), (ho, wo)] = x_padded[n, c, sH*ho + i, sW*wo + j].

    Column p of cols[n] is the receptive field of output pixel p of sample n.
    """
    win = windows(pad2d(x, padding), kernel_size, stride)  # (N, C, Ho, Wo, kH, kW), a view
    n, c, ho, wo, kh, kw = win.shape
    cols = np.empty((n, c * kh * kw, ho * wo), dtype=x.dtype) if out is None else out
    np.copyto(cols.reshape(n, c, kh, kw, ho, wo), win.transpose(0, 1, 4, 5, 2, 3))  # the only copy of x
    return cols


def fold(cols: np.ndarray, x_shape, kernel_size, stride, padding, out=None) -> np.ndarray:
    """The adjoint of ``unfold``: add cols (N, C*kH*kW, Ho*Wo) back onto the pixels each entry was
    read from. A pixel inside several windows (kernel > stride) receives the sum.

    ``out``, if given, is the zeroed padded gradient (N, C, H + 2*pH, W + 2*pW) to add into."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    fields = cols.reshape(n, c, kh, kw, ho, wo)
    grad_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype) if out is None else out
    for i in range(kh):  # loop over kernel offsets only; each step adds a whole (N, C, Ho, Wo) block
        for j in range(kw):
            grad_padded[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += fields[:, :, i, j]
    return grad_padded[:, :, ph:ph + h, pw:pw + w]


def fold_padded_rows(cols: np.ndarray, padded_shape, kernel_size, out) -> None:
    """``fold`` for stride 1 with the columns laid on the padded width: cols (N, C*kH*kW, Ho*Wp),
    column ho*Wp + wo for output pixel (ho, wo), and zero in the Wp - Wo columns past each row's end.

    With stride 1, kernel offset (i, j) shifts the whole padded image by the constant flat offset
    i*Wp + j, so each offset adds one contiguous run of Ho*Wp values per (n, c), where ``fold`` adds
    Ho runs of only Wo (7-14 values in these models), which NumPy adds several times slower per
    value. The zero columns land on the next row's first pixels and add nothing.

    ``out``: the zeroed padded gradient, flat: (N, C, Hp*Wp + kW - 1), the tail for the last shift.
    """
    n, c, hp, wp = padded_shape
    kh, kw = kernel_size
    run = cols.shape[2]  # Ho * Wp
    fields = cols.reshape(n, c, kh, kw, run)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * wp + j:i * wp + j + run] += fields[:, :, i, j]


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), keep_cache=True):
    """y[n, o] = sum_{c, i, j} weight[o, c, i, j] * x_padded[n, c, sH*ho + i, sW*wo + j] + bias[o]

    Per sample, one matrix product: y[n] = W @ cols[n] + bias, with W = weight.reshape(O, C*kH*kW)
    and cols = unfold(x) (N, C*kH*kW, Ho*Wo); y (N, O, Ho*Wo) is already NCHW.
    Samples are independent, so slices of the batch run on separate threads (``split_batch``).
    With ``keep_cache=False`` (no backward will follow, e.g. inference on a large batch) cols is not
    kept: each slice goes in blocks of samples whose columns fit in cache, unfolded into one reused
    buffer and multiplied while still there, and no cache is returned.
    """
    n, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    ho, wo = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    matrix = weight.reshape(out_channels, -1)
    sample_cols = (c * kh * kw, ho * wo)
    cols = np.empty((n,) + sample_cols, dtype=x.dtype) if keep_cache else None
    out = np.empty((n, out_channels, ho * wo), dtype=np.result_type(x, weight))
    block = n if keep_cache else max(1, COLS_BLOCK_BYTES // (sample_cols[0] * sample_cols[1] * x.itemsize))

    def samples(a, b):
        buffer = None if keep_cache else np.empty((min(block, b - a),) + sample_cols, dtype=x.dtype)
        for s in range(a, b, block):
            e = min(s + block, b)
            block_cols = cols[s:e] if keep_cache else buffer[:e - s]
            unfold(x[s:e], (kh, kw), stride, padding, out=block_cols)
            np.matmul(matrix, block_cols, out=out[s:e])
            if bias is not None:
                out[s:e] += bias[:, None]

    split_batch(samples, n, 2 * n * sample_cols[0] * sample_cols[1])  # the strided copy, then the product
    out = out.reshape(n, out_channels, ho, wo)
    if not keep_cache:
        return out, None
    # backward needs cols (grad_weight = sum_n G[n] @ cols[n].T) and weight (grad_cols = W.T @ G[n]).
    return out, (cols, weight, x.shape, stride, padding, bias is not None)


def conv2d_backward(grad_output, cache, needs_input_grad=ALL):
    """With G[n] = dL/dy[n] as a matrix (O, Ho*Wo), the gradients of y[n] = W @ cols[n] + bias are

        grad_weight = sum_n G[n] @ cols[n].T      -> reshaped to (O, C, kH, kW)
        grad_bias   = sum_n G[n].sum(columns)     (O,)
        grad_input  = fold(W.T @ G[n])            (N, C, H, W)

    Each thread sums its slice of samples; the slices' sums are then added. With stride 1 the
    fold runs on the padded width (``fold_padded_rows``): the same sums, in longer runs.
    Returns (grad_input, grad_weight, grad_bias), None where not asked for.
    """
    cols, weight, x_shape, stride, padding, has_bias = cache
    n, out_channels = grad_output.shape[:2]
    (kh, kw), (ph, pw) = weight.shape[2:], padding
    grad = grad_output.reshape(n, out_channels, -1)
    matrix = weight.reshape(out_channels, -1)
    want_weight, want_bias, want_input = needs_input_grad[1], has_bias and needs_input_grad[2], needs_input_grad[0]
    padded_shape = (n, x_shape[1], x_shape[2] + 2 * ph, x_shape[3] + 2 * pw)
    hp, wp = padded_shape[2:]
    ho, wo = grad_output.shape[2:]
    # Stride 1: fold on the padded width (fold_padded_rows), from G widened to Wp columns by zeros.
    wide = tuple(stride) == (1, 1)
    grad_padded = None
    if want_input:
        grad_padded = np.zeros((n, x_shape[1], hp * wp + kw - 1) if wide else padded_shape, dtype=grad.dtype)

    def samples(a, b):
        g = grad[a:b]
        partial_weight = np.matmul(g, cols[a:b].transpose(0, 2, 1)).sum(axis=0) if want_weight else None
        partial_bias = g.sum(axis=(0, 2)) if want_bias else None
        if want_input and wide:
            g_wide = np.zeros((b - a, out_channels, ho, wp), dtype=grad.dtype)
            g_wide[..., :wo] = g.reshape(b - a, out_channels, ho, wo)
            fold_padded_rows(np.matmul(matrix.T, g_wide.reshape(b - a, out_channels, ho * wp)),
                             (b - a,) + padded_shape[1:], (kh, kw), out=grad_padded[a:b])
        elif want_input:
            fold(np.matmul(matrix.T, g), (b - a,) + tuple(x_shape[1:]), (kh, kw), stride, padding,
                 out=grad_padded[a:b])
        return partial_weight, partial_bias

    partials = split_batch(samples, n, 3 * cols.size)  # two products and the fold
    grad_weight = sum(p[0] for p in partials).reshape(weight.shape) if want_weight else None
    grad_bias = sum(p[1] for p in partials) if want_bias else None
    grad_input = None
    if want_input:
        if wide:
            grad_padded = grad_padded[:, :, :hp * wp].reshape(padded_shape)
        grad_input = grad_padded[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]
    return grad_input, grad_weight, grad_bias


# -- the reference: one row per output pixel -------------------------------------------------------
def im2col(x: np.ndarray, kernel_size, stride, padding) -> np.ndarray:
    """(N, C, H, W) -> cols (N*Ho*Wo, C*kH*kW): row r holds the receptive field of output pixel r."""
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


def conv2d_forward_reference(x, weight, bias=None, stride=(1, 1), padding=(0, 0), keep_cache=True):
    """The same y as ``conv2d_forward``, as one matrix product over all output pixels:
    Y = cols @ W.T + bias, where cols = im2col(x) is (N*Ho*Wo, C*kH*kW) and
    W = weight.reshape(O, C*kH*kW); Y (N*Ho*Wo, O) is then laid out as (N, O, Ho, Wo).
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


def conv2d_backward_reference(grad_output, cache, needs_input_grad=ALL):
    """With G = dL/dY as rows (N*Ho*Wo, O), the gradients of Y = cols @ W.T + bias are

        grad_weight = G.T @ cols                  -> reshaped to (O, C, kH, kW)
        grad_bias   = G.sum(rows)                 (O,)
        grad_input  = col2im(G @ W)               (N, C, H, W)
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

    x, weight, bias = arrays["input"], arrays["weight"], arrays["bias"]
    stride = pair_argument(where, "stride", options["stride"])
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1] or (
            bias is not None and bias.shape != weight.shape[:1]):
        raise ShapeError(where, f"expected input (N, C, H, W), weight (O, C, kH, kW) and bias (O,) with one C; "
                                f"got input {fmt_shape(x.shape)}, weight {fmt_shape(weight.shape)}, "
                                f"bias {None if bias is None else fmt_shape(bias.shape)}")
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
    for x_shape, w_shape, stride, padding, bias in (((2, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0), True),
                                                    ((1, 2, 5, 5), (3, 2, 3, 3), (2, 2), (1, 1), True),
                                                    ((2, 1, 5, 6), (2, 1, 2, 3), (1, 2), (0, 1), False),
                                                    ((2, 3, 4, 4), (2, 3, 1, 1), (1, 1), (0, 0), True)):
        tensors = (rng.standard_normal(x_shape), rng.standard_normal(w_shape))
        yield Case(f"x {x_shape} w {w_shape[2:]} stride {stride} padding {padding} bias={bias}",
                   tensors + ((rng.standard_normal(w_shape[0]),) if bias else ()),
                   {"stride": stride, "padding": padding})


register(OpSpec("conv2d", conv2d_forward, conv2d_backward, lambda torch: torch.nn.functional.conv2d, _conv2d_cases,
                tensors=("input", "weight", "bias"), options=(("stride", 1), ("padding", 0)), optional=("bias",),
                needs_input_grad=True,
                bridge=Bridge("Conv2d", check=_check_conv2d, unsupported=_conv2d_unsupported)))
