"""conv2d_forward / conv2d_backward compiled: im2col and col2im as parallel loops, products in BLAS.

The columns are laid out as cols (C*kH*kW, N*Ho*Wo), one column per output pixel, so that each
direction is one large matrix product (which BLAS threads well) instead of one small product per
sample:

    forward      Y = W @ cols                         (O, N*Ho*Wo), then y[n, o] = Y[o, n] + bias[o]
    backward     grad_weight = (cols @ G.T).T         (BLAS runs this orientation faster than G @ cols.T)
                 grad_bias   = G.sum(columns)
                 grad_input  = col2im(W.T @ G)

with W = weight.reshape(O, C*kH*kW) and G = dL/dy laid out as (O, N*Ho*Wo). The loops read and
write the padded input through bounds, so no padded copy of x is ever made.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..functional import conv as reference
from ..functional.conv import ALL, conv_output_size, conv_padding, pair
from .products import product_pair, rows_product

__all__ = ["conv2d_backward", "conv2d_forward"]

#: Inference (no cache kept): samples per block whose columns are unfolded and multiplied while
#: they are still in cache, about half a typical L2.
INFERENCE_BLOCK_BYTES = 1 << 19


@njit(inline="always", cache=True)
def _inside_columns(j, sw, pw, w, wo):
    """b0 <= b < b1: the output columns b whose input column sW*b + j - pW lies inside x (of width w)."""
    b0 = min(wo, max(0, (pw - j + sw - 1) // sw))
    return b0, max(b0, min(wo, (w + pw - j + sw - 1) // sw))


@njit(inline="always")
def unfold_sample(xf, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, cf, width, col):
    """Sample s's columns: cols[(c, i, j), col + a*Wo + b] = x[s, c, sH*a + i - pH, sW*b + j - pW]
    (0 outside x), in a cols matrix ``width`` columns wide (flat cf); x flat as xf.

    Flat unsigned offsets: with them LLVM vectorises the row copy (2.2x faster than 4-D indexing,
    whose negative-index checks it cannot drop)."""
    zero = xf.dtype.type(0)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                b0, b1 = _inside_columns(j, sw, pw, w, wo)
                for a in range(ho):
                    r = sh * a + i - ph
                    dst = np.uintp(row * width + col + a * wo)
                    if r < 0 or r >= h:
                        for b in range(np.uintp(wo)):
                            cf[dst + b] = zero
                        continue
                    src = np.uintp(((s * c + ci) * h + r) * w + sw * b0 + j - pw)
                    for b in range(np.uintp(b0)):
                        cf[dst + b] = zero
                    inside, step = dst + np.uintp(b0), np.uintp(sw)
                    for b in range(np.uintp(b1 - b0)):
                        cf[inside + b] = xf[src + step * b]
                    for b in range(np.uintp(b1), np.uintp(wo)):
                        cf[dst + b] = zero


@njit(parallel=True, cache=True)
def unfold(x, kh, kw, sh, sw, ph, pw, ho, wo, cols):
    """cols[(c, i, j), (n, ho, wo)] = x[n, c, sH*ho + i - pH, sW*wo + j - pW] (0 outside x);
    one pass over cols, parallel over samples, no padded copy of x. x and cols C-contiguous."""
    n, c, h, w = x.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)
    plane = ho * wo
    for s in prange(n):
        unfold_sample(xf, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, cf, n * plane, s * plane)


@njit(inline="always")
def fold_sample(gf, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, xf, width, col):
    """The adjoint of ``unfold_sample``: sample s of grad_input (flat xf) = the sum of the entries
    of grad_cols (``width`` columns wide, flat gf) read from each of its pixels, zeroed first."""
    xf[s * c * h * w : (s + 1) * c * h * w] = 0
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                b0, b1 = _inside_columns(j, sw, pw, w, wo)
                for a in range(ho):
                    r = sh * a + i - ph
                    if r < 0 or r >= h:
                        continue
                    src = np.uintp(row * width + col + a * wo + b0)
                    dst, step = np.uintp(((s * c + ci) * h + r) * w + sw * b0 + j - pw), np.uintp(sw)
                    for b in range(np.uintp(b1 - b0)):
                        xf[dst + step * b] += gf[src + b]


@njit(parallel=True, cache=True)
def fold(grad_cols, kh, kw, sh, sw, ph, pw, ho, wo, grad_input):
    """The adjoint of ``unfold``: grad_input[n, c, r, q] = sum of the grad_cols entries read from
    x[n, c, r, q] (zeroed first); parallel over samples, each writing only its own image."""
    n, c, h, w = grad_input.shape
    gf, xf = grad_cols.reshape(-1), grad_input.reshape(-1)
    plane = ho * wo
    for s in prange(n):
        fold_sample(gf, s, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo, xf, n * plane, s * plane)


@njit(parallel=True, cache=True)
def columns_to_nchw(y, bias, out):
    """out[n, o, p] = y[o, n*P + p] + bias[o]: the product's layout change with the bias fused in."""
    n, o, plane = out.shape
    for s in prange(n):
        for oc in range(o):
            b = bias[oc]
            for p in range(plane):
                out[s, oc, p] = y[oc, s * plane + p] + b


@njit(parallel=True, cache=True)
def nchw_to_columns(g, out):
    """out[o, n*P + p] = g[n, o, p]: dL/dy in the products' layout, one pass."""
    n, o, plane = g.shape
    for s in prange(n):
        for oc in range(o):
            for p in range(plane):
                out[oc, s * plane + p] = g[s, oc, p]


def _sizes(x_shape, weight_shape, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = weight_shape[2:], stride, padding
    return kh, kw, sh, sw, ph, pw, conv_output_size(x_shape[2], kh, sh, ph), conv_output_size(x_shape[3], kw, sw, pw)


def _forward(x, matrix, bias, sizes, out):
    """Unfold x, multiply, lay out as NCHW with the bias: out (N, O, Ho*Wo)."""
    n = x.shape[0]
    kh, kw, sh, sw, ph, pw, ho, wo = sizes
    cols = np.empty((matrix.shape[1], n * ho * wo), dtype=x.dtype)
    unfold(x, kh, kw, sh, sw, ph, pw, ho, wo, cols)
    columns_to_nchw(rows_product(matrix, cols), bias, out)
    return cols


def _plain_padding(ndim, weight_shape, padding, dilation, groups, padding_mode):
    """(pH, pW) where the compiled loops apply: a batch, no dilation, one group, zero padding the
    same on both sides; else None."""
    dilation = pair(dilation)
    top, bottom, left, right = conv_padding(padding, weight_shape[2:], dilation)
    plain = ndim == 4 and dilation == (1, 1) and groups == 1 and padding_mode == "zeros"
    return (top, left) if plain and (top, left) == (bottom, right) else None


def conv2d_forward(
    x,
    weight,
    bias=None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    groups=1,
    padding_mode="zeros",
    keep_cache=True,
):
    """The same y as ``functional.conv2d_forward``: Y = W @ cols, laid out as NCHW plus the bias.
    ``keep_cache=False`` runs blocks of samples whose columns stay in cache, and keeps none."""
    plain = _plain_padding(x.ndim, weight.shape, padding, dilation, groups, padding_mode)
    if plain is None:  # dilation, groups, padding modes, uneven 'same', unbatched input: the reference runs
        return reference.conv2d_forward(x, weight, bias, stride, padding, dilation, groups, padding_mode, keep_cache)
    stride, padding = pair(stride), plain
    n = x.shape[0]
    out_channels = weight.shape[0]
    sizes = _sizes(x.shape, weight.shape, stride, padding)
    ho, wo = sizes[6:]
    dtype = np.result_type(x, weight)
    x = np.ascontiguousarray(x, dtype=dtype)
    matrix = np.ascontiguousarray(weight.reshape(out_channels, -1), dtype=dtype)
    b = np.zeros(out_channels, dtype) if bias is None else np.asarray(bias, dtype)
    out = np.empty((n, out_channels, ho * wo), dtype=dtype)
    if keep_cache:
        cols = _forward(x, matrix, b, sizes, out)
        # backward needs cols (grad_weight = (cols @ G.T).T) and weight (grad_cols = W.T @ G).
        padded = x.shape[:2] + (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
        pads = (padding[0], padding[0], padding[1], padding[1])
        cache = (
            cols,
            weight,
            x.shape,
            padded,
            stride,
            pads,
            (1, 1),
            1,
            "zeros",
            bias is not None,
        )  # the reference's layout
        return out.reshape(n, out_channels, ho, wo), cache
    block = max(1, INFERENCE_BLOCK_BYTES // (matrix.shape[1] * ho * wo * x.itemsize))
    for start in range(0, n, block):
        _forward(x[start : start + block], matrix, b, sizes, out[start : start + block])
    return out.reshape(n, out_channels, ho, wo), None


def conv2d_backward(grad_output, cache, needs_input_grad=ALL):
    """The same gradients as ``functional.conv2d_backward``, with G laid out as (O, N*Ho*Wo):
    grad_weight = (cols @ G.T).T, grad_bias = G.sum(columns), grad_input = col2im(W.T @ G)."""
    cols, weight, x_shape, _, stride, pads, dilation, groups, padding_mode, has_bias = cache
    padding = _plain_padding(len(x_shape), weight.shape, (pads[0], pads[2]), dilation, groups, padding_mode)
    if padding is None or pads[::2] != pads[1::2]:  # the reference's cache: its backward runs
        return reference.conv2d_backward(grad_output, cache, needs_input_grad)
    n, out_channels = grad_output.shape[:2]
    g = np.empty((out_channels, cols.shape[1]), dtype=cols.dtype)
    nchw_to_columns(np.ascontiguousarray(grad_output).reshape(n, out_channels, -1), g)
    matrix = weight.reshape(out_channels, -1)
    grad_weight_t, grad_cols = product_pair(
        cols if needs_input_grad[1] else None, g.T, matrix.T if needs_input_grad[0] else None, g
    )
    grad_weight = None if grad_weight_t is None else np.ascontiguousarray(grad_weight_t.T).reshape(weight.shape)
    grad_bias = g.sum(axis=1) if has_bias and needs_input_grad[2] else None
    grad_input = None
    if grad_cols is not None:
        grad_input = np.empty(x_shape, dtype=cols.dtype)
        fold(grad_cols, *_sizes(x_shape, weight.shape, stride, padding), grad_input)
    return grad_input, grad_weight, grad_bias
