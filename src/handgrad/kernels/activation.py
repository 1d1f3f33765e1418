"""The element-wise activations compiled: each forward and backward one pass over the array.

The references build a boolean mask or temporaries (``np.where``, ``1 - y``) and pass over the
data two to four times; each loop here reads its inputs once and writes the result once. They run
on the calling thread: between BLAS products a parallel loop waits 60-100 us for its sleeping
workers, while one core runs a whole 300,000-element ReLU in 27 us (NumPy: 112 us).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..functional import activation as A

__all__ = [
    "gelu_backward",
    "gelu_forward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "silu_backward",
    "silu_forward",
    "softplus_backward",
    "softplus_forward",
    "tanh_backward",
    "tanh_forward",
]


@njit(cache=True)
def _relu(x, out):
    for k in range(x.size):
        out[k] = 0 if x[k] <= 0 else x[k]  # NaN stays NaN, as np.maximum and PyTorch


@njit(cache=True)
def _relu_backward(g, y, out):
    for k in range(g.size):
        out[k] = g[k] if y[k] > 0 else 0


@njit(cache=True)
def _leaky_relu(x, slope, out):
    for k in range(x.size):
        out[k] = x[k] if x[k] > 0 else x[k] * slope


@njit(cache=True)
def _leaky_relu_backward(g, x, slope, out):
    for k in range(g.size):
        out[k] = g[k] if x[k] > 0 else g[k] * slope


@njit(cache=True)
def _sigmoid(x, out):
    for k in range(x.size):
        e = math.exp(-abs(x[k]))  # exp(-|x|) never overflows
        out[k] = (1 if x[k] >= 0 else e) / (1 + e)


@njit(cache=True)
def _sigmoid_backward(g, y, out):
    for k in range(g.size):
        out[k] = g[k] * y[k] * (1 - y[k])


@njit(cache=True)
def _tanh(x, out):
    for k in range(x.size):
        out[k] = math.tanh(x[k])


@njit(cache=True)
def _tanh_backward(g, y, out):
    for k in range(g.size):
        out[k] = g[k] * (1 - y[k] * y[k])


@njit(cache=True)
def _gelu(x, sqrt_half, cdf, out):
    for k in range(x.size):
        c = math.erfc(-x[k] * sqrt_half) / 2
        cdf[k] = c
        out[k] = x[k] * c


@njit(cache=True)
def _gelu_backward(g, x, cdf, inv_sqrt_2pi, out):
    for k in range(g.size):
        out[k] = g[k] * (cdf[k] + x[k] * inv_sqrt_2pi * math.exp(-x[k] * x[k] / 2))


@njit(cache=True)
def _gelu_tanh(x, scale, cubic, t, out):
    for k in range(x.size):
        tk = math.tanh(scale * (x[k] + cubic * x[k] * x[k] * x[k]))
        t[k] = tk
        out[k] = x[k] * (1 + tk) / 2


@njit(cache=True)
def _gelu_tanh_backward(g, x, t, scale, cubic3, out):
    for k in range(g.size):
        inner = scale * (1 + cubic3 * x[k] * x[k])
        out[k] = g[k] * ((1 + t[k]) / 2 + x[k] * (1 - t[k] * t[k]) * inner / 2)


@njit(cache=True)
def _silu(x, s, out):
    for k in range(x.size):
        e = math.exp(-abs(x[k]))
        sk = (1 if x[k] >= 0 else e) / (1 + e)
        s[k] = sk
        out[k] = x[k] * sk


@njit(cache=True)
def _silu_backward(g, x, s, out):
    for k in range(g.size):
        out[k] = g[k] * s[k] * (1 + x[k] * (1 - s[k]))


@njit(cache=True)
def _softplus(x, beta, threshold, out):
    for k in range(x.size):
        bx = x[k] * beta
        if bx > threshold:
            out[k] = x[k]
        else:  # log(1 + exp(bx)) = max(bx, 0) + log1p(exp(-|bx|)): no overflow
            out[k] = (max(bx, 0) + math.log1p(math.exp(-abs(bx)))) / beta


@njit(cache=True)
def _softplus_backward(g, x, beta, threshold, out):
    for k in range(g.size):
        bx = x[k] * beta
        if bx > threshold:
            out[k] = g[k]
        else:
            e = math.exp(-abs(bx))
            out[k] = g[k] * (1 if bx >= 0 else e) / (1 + e)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _run(kernel, like, *arrays):
    """``kernel(*flat arrays, out)``; the result has ``like``'s shape and dtype."""
    out = np.empty(like.shape, dtype=like.dtype)
    kernel(*arrays, out.reshape(-1))
    return out


def relu_forward(x):
    """y = max(x, 0); the output is the cache, as the reference's."""
    out = _run(_relu, x, _flat(x))
    return out, out


def relu_backward(grad_output, out):
    """dL/dx = G where y > 0, else 0."""
    return _run(_relu_backward, grad_output, _flat(grad_output), _flat(out))


def leaky_relu_forward(x, negative_slope=0.01):
    """y = x if x > 0 else negative_slope * x; x is the cache (the reference keeps its sign mask)."""
    slope = x.dtype.type(negative_slope)
    return _run(_leaky_relu, x, _flat(x), slope), (x, negative_slope)


def leaky_relu_backward(grad_output, cache):
    """dL/dx = G * (1 if x > 0 else negative_slope)."""
    x, negative_slope = cache
    return _run(_leaky_relu_backward, grad_output, _flat(grad_output), _flat(x), grad_output.dtype.type(negative_slope))


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)) as e/(1+e) with e = exp(-|x|); the output is the cache."""
    out = _run(_sigmoid, x, _flat(x))
    return out, out


def sigmoid_backward(grad_output, out):
    """dL/dx = G * y * (1 - y)."""
    return _run(_sigmoid_backward, grad_output, _flat(grad_output), _flat(out))


def tanh_forward(x):
    """y = tanh(x); the output is the cache."""
    out = _run(_tanh, x, _flat(x))
    return out, out


def tanh_backward(grad_output, out):
    """dL/dx = G * (1 - y^2)."""
    return _run(_tanh_backward, grad_output, _flat(grad_output), _flat(out))


def gelu_forward(x, approximate="none"):
    """y = x * Phi(x) ('none') or x * (1 + t) / 2 ('tanh'); the cache holds x and Phi(x) or t, as
    the reference's, both written in the one pass."""
    cast, flat = x.dtype.type, _flat(x)
    saved = np.empty(x.shape, dtype=x.dtype)
    if approximate == "tanh":
        out = _run(_gelu_tanh, x, flat, cast(A._TANH_SCALE), cast(A._TANH_CUBIC), saved.reshape(-1))
    else:
        out = _run(_gelu, x, flat, cast(A._SQRT_HALF), saved.reshape(-1))
    return out, (x, saved, approximate)


def gelu_backward(grad_output, cache):
    """dL/dx = G * (Phi(x) + x phi(x)), or the tanh form's derivative."""
    x, saved, approximate = cache
    cast, g = grad_output.dtype.type, _flat(grad_output)
    if approximate == "tanh":
        return _run(
            _gelu_tanh_backward, grad_output, g, _flat(x), _flat(saved), cast(A._TANH_SCALE), cast(3 * A._TANH_CUBIC)
        )
    return _run(_gelu_backward, grad_output, g, _flat(x), _flat(saved), cast(A._INV_SQRT_2PI))


def silu_forward(x):
    """y = x * sigmoid(x); the cache holds x and sigmoid(x), written in the same pass."""
    s = np.empty(x.shape, dtype=x.dtype)
    out = _run(_silu, x, _flat(x), s.reshape(-1))
    return out, (x, s)


def silu_backward(grad_output, cache):
    """dL/dx = G * s * (1 + x * (1 - s))."""
    x, s = cache
    return _run(_silu_backward, grad_output, _flat(grad_output), _flat(x), _flat(s))


def softplus_forward(x, beta=1.0, threshold=20.0):
    """y = log(1 + exp(beta x)) / beta, x where beta x > threshold; x is the cache (the reference
    keeps beta x and the mask: here both are recomputed in backward's one pass, no array stored)."""
    cast = x.dtype.type
    return _run(_softplus, x, _flat(x), cast(beta), cast(threshold)), (x, beta, threshold)


def softplus_backward(grad_output, cache):
    """dL/dx = G * sigmoid(beta x), G where beta x > threshold."""
    x, beta, threshold = cache
    cast = grad_output.dtype.type
    return _run(_softplus_backward, grad_output, _flat(grad_output), _flat(x), cast(beta), cast(threshold))
