"""Batch normalisation, compiled: the pair of ``functional/normalization.py`` as per-channel loops.

The input is viewed as (N, C, L) (L = H*W, or 1 for (N, C)). The reference builds xhat, the
centred input and the products as whole temporaries (about ten passes forward, twelve back); here
forward reads x twice for the statistics and writes y once, and backward reads G and x twice and
writes grad_input once. xhat is never stored: backward recomputes (x - mean) * invstd on the fly.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import functional as reference
from ..functional.normalization import ALL
from . import COMPILED_DTYPES

__all__ = ["batch_norm_backward", "batch_norm_forward"]


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})  # reassociated sums vectorise (9x)
def _batch_statistics(x, mean, var):
    """mean_c = sum x / m, var_c = sum (x - mean_c)^2 / m (biased, two-pass as np.var), float64 sums."""
    n_batch, n_channels, length = x.shape
    m = n_batch * length
    for c in range(n_channels):
        total = 0.0
        for n in range(n_batch):
            for i in range(length):
                total += x[n, c, i]
        mu = total / m
        squares = 0.0
        for n in range(n_batch):
            for i in range(length):
                d = x[n, c, i] - mu
                squares += d * d
        mean[c] = mu
        var[c] = squares / m


@njit(cache=True, error_model="numpy")
def _normalize(x, mean, scale, shift, out):
    """y = (x - mean) * scale + shift over rows (N, C*L), scale = invstd * weight and shift = bias
    repeated along each channel's L positions, so the inner loop is contiguous for any L."""
    n_batch, width = x.shape
    for n in range(n_batch):
        for j in range(np.uintp(width)):
            out[n, j] = (x[n, j] - mean[j]) * scale[j] + shift[j]


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})  # reassociated sums vectorise
def _channel_sums(grad_output, x, mean, invstd, sum_g, sum_g_xhat):
    """sum_g_c = sum G,  sum_g_xhat_c = sum G * xhat  (xhat = (x - mean) * invstd, recomputed)."""
    n_batch, n_channels, length = x.shape
    for c in range(n_channels):
        mu, s = mean[c], invstd[c]
        total, total_xhat = 0.0, 0.0
        for n in range(n_batch):
            for i in range(length):
                g = grad_output[n, c, i]
                total += g
                total_xhat += g * ((x[n, c, i] - mu) * s)
        sum_g[c] = total
        sum_g_xhat[c] = total_xhat


@njit(cache=True, error_model="numpy")
def _input_grad(grad_output, x, mean, invstd, weight, a, b, m, training, grad_input):
    """training: grad_input = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat));
    eval: grad_input = dxhat * invstd (mean and var are constants then); dxhat = G * weight.

    Over rows (N, C*L), with the per-channel terms repeated along each channel's L positions:
    a = sum(dxhat) = weight * sum(G), b = sum(dxhat * xhat) = weight * sum(G * xhat).
    """
    n_batch, width = x.shape
    for n in range(n_batch):
        if training:
            for j in range(np.uintp(width)):
                xhat = (x[n, j] - mean[j]) * invstd[j]
                grad_input[n, j] = invstd[j] / m * (m * (grad_output[n, j] * weight[j]) - a[j] - xhat * b[j])
        else:
            for j in range(np.uintp(width)):
                grad_input[n, j] = grad_output[n, j] * weight[j] * invstd[j]


def _as_ncl(a):
    """(N, C, *spatial) -> a C-contiguous (N, C, L) view (a copy only if ``a`` is not contiguous)."""
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def _rows(a):
    """(N, C, L) -> (N, C*L), a view."""
    return a.reshape(a.shape[0], -1)


def _along(per_channel, length):
    """(C,) -> (C*L,): each channel's value at each of its L positions (a view of (C,) when L = 1)."""
    return per_channel if length == 1 else np.repeat(per_channel, length)


def batch_norm_forward(
    x, weight=None, bias=None, running_mean=None, running_var=None, training=False, momentum=0.1, eps=1e-5
):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel; the statistics in two reads of
    x and y in one write (the reference's xhat, centred copy and products never exist)."""
    # an empty input (nothing to normalise) runs the reference; backward recognises its cache by
    # the dtype or the empty array
    if x.dtype not in COMPILED_DTYPES or x.size == 0:
        return reference.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps)
    x3 = _as_ncl(x)
    channels, dtype = x.shape[1], x.dtype
    if training:
        mean64, var64 = np.empty(channels), np.empty(channels)
        _batch_statistics(x3, mean64, var64)
        mean, var = mean64.astype(dtype), var64.astype(dtype)
        if running_mean is not None:  # as the reference: the unbiased var enters the running one
            m = x.size // channels
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean, running_var
    invstd = 1 / np.sqrt(var + dtype.type(eps))
    scale = invstd if weight is None else invstd * weight
    shift = np.zeros(channels, dtype) if bias is None else bias
    out = np.empty(x3.shape, dtype)
    length = x3.shape[2]
    _normalize(_rows(x3), _along(mean, length), _along(scale, length), _along(shift, length), _rows(out))
    # backward needs x with the statistics used (xhat is recomputed from them), 1/std, whether there
    # is a bias and whether the statistics came from this batch.
    return out.reshape(x.shape), (x3, mean, invstd, weight, bias is not None, training)


def batch_norm_backward(grad_output, cache, needs_input_grad=ALL):
    """grad_weight = sum(G * xhat), grad_bias = sum(G), and grad_input as the reference's formula:
    one read of G and x for both sums, one more to write grad_input."""
    if cache[0].dtype not in COMPILED_DTYPES or cache[0].size == 0:
        return reference.batch_norm_backward(grad_output, cache, needs_input_grad)
    x3, mean, invstd, weight, has_bias, training = cache
    affine = weight is not None
    g3 = _as_ncl(grad_output)
    channels, dtype = x3.shape[1], x3.dtype
    sum_g, sum_g_xhat = np.empty(channels), np.empty(channels)
    needs_weight, needs_bias = affine and needs_input_grad[1], has_bias and needs_input_grad[2]
    if needs_weight or needs_bias or (needs_input_grad[0] and training):
        _channel_sums(g3, x3, mean, invstd, sum_g, sum_g_xhat)
    grad_weight = sum_g_xhat.astype(dtype) if needs_weight else None
    grad_bias = sum_g.astype(dtype) if needs_bias else None
    grad_input = None
    if needs_input_grad[0]:
        w = np.ones(channels, dtype) if weight is None else weight
        a, b = (w * sum_g).astype(dtype), (w * sum_g_xhat).astype(dtype)  # the arithmetic stays in x's dtype
        length = x3.shape[2]
        grad_input = np.empty(x3.shape, dtype)
        _input_grad(
            _rows(g3),
            _rows(x3),
            _along(mean, length),
            _along(invstd, length),
            _along(w, length),
            _along(a, length),
            _along(b, length),
            dtype.type(x3.size // channels),
            training,
            _rows(grad_input),
        )
        grad_input = grad_input.reshape(grad_output.shape)
    return grad_input, grad_weight, grad_bias
