"""max/avg pool forward and backward compiled: one pass over each window, parallel over the planes.

The references (``functional/pool.py``) copy every window out (max) or add one strided plane per
kernel offset; here each output pixel scans its window in place, reading the padded input through
bounds, and each backward writes every input pixel once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..functional.conv import conv_output_size

__all__ = ["avg_pool2d_backward", "avg_pool2d_forward", "max_pool2d_backward", "max_pool2d_forward"]


@njit(parallel=True, cache=True)
def _max_pool(x, kh, kw, sh, sw, ph, pw, out, argmax, keep):
    """out = max over each window, argmax = its position i*kW + j: the first maximum, or the
    last NaN (as PyTorch, whose scan takes every NaN it meets); padding never wins.
    Flat unsigned offsets into C-contiguous arrays (4-D indexing is 2x slower)."""
    n, c, h, w = x.shape
    _, _, ho, wo = out.shape
    xf, of, af = x.reshape(-1), out.reshape(-1), argmax.reshape(-1)
    for plane in prange(n * c):
        source, target = np.uintp(plane * h * w), np.uintp(plane * ho * wo)
        for a in range(ho):
            r0 = sh * a - ph
            i0, i1 = max(0, -r0), min(kh, h - r0)
            for b in range(wo):
                q0 = sw * b - pw
                j0, j1 = max(0, -q0), min(kw, w - q0)
                best, where = -np.inf, i0 * kw + j0  # PyTorch's start: the first pixel inside x
                for i in range(i0, i1):
                    line = source + np.uintp((r0 + i) * w + q0)
                    for j in range(np.uintp(j0), np.uintp(j1)):
                        v = xf[line + j]
                        if v > best or np.isnan(v):
                            best, where = v, i * kw + j
                k = target + np.uintp(a * wo + b)
                of[k] = best
                if keep:
                    af[k] = where


@njit(parallel=True, cache=True)
def _max_pool_backward(grad_output, argmax, kh, kw, sh, sw, ph, pw, grad_input):
    """grad_input[p] = sum of grad_output over the windows whose argmax is p (zeroed first)."""
    n, c, ho, wo = grad_output.shape
    h, w = grad_input.shape[2], grad_input.shape[3]
    gf, af, xf = grad_output.reshape(-1), argmax.reshape(-1), grad_input.reshape(-1)
    for plane in prange(n * c):
        source, target = np.uintp(plane * ho * wo), np.uintp(plane * h * w)
        xf[target : target + np.uintp(h * w)] = 0
        for a in range(ho):
            for b in range(wo):
                k = source + np.uintp(a * wo + b)
                i, j = divmod(af[k], kw)
                # the argmax always lies inside x: the scan starts on x's first pixel
                xf[target + np.uintp((sh * a - ph + i) * w + sw * b - pw + j)] += gf[k]


@njit(parallel=True, cache=True)
def _avg_pool(x, kh, kw, sh, sw, ph, pw, out):
    """out = sum over each window / (kH*kW), padding counted as zeros."""
    n, c, h, w = x.shape
    _, _, ho, wo = out.shape
    scale = 1.0 / (kh * kw)
    for plane in prange(n * c):
        s, ci = plane // c, plane % c
        for a in range(ho):
            r0 = sh * a - ph
            for b in range(wo):
                q0 = sw * b - pw
                total = 0.0
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -q0), min(kw, w - q0)):
                        total += x[s, ci, r0 + i, q0 + j]
                out[s, ci, a, b] = total * scale


@njit(parallel=True, cache=True)
def _avg_pool_backward(grad_output, kh, kw, sh, sw, ph, pw, grad_input):
    """grad_input[p] = sum over the windows holding p of grad_output / (kH*kW) (zeroed first)."""
    n, c, ho, wo = grad_output.shape
    h, w = grad_input.shape[2], grad_input.shape[3]
    scale = 1.0 / (kh * kw)
    for plane in prange(n * c):
        s, ci = plane // c, plane % c
        grad_input[s, ci] = 0
        for a in range(ho):
            r0 = sh * a - ph
            for b in range(wo):
                q0 = sw * b - pw
                share = grad_output[s, ci, a, b] * scale
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -q0), min(kw, w - q0)):
                        grad_input[s, ci, r0 + i, q0 + j] += share


def _out_shape(x_shape, kernel_size, stride, padding):
    return x_shape[:2] + tuple(
        conv_output_size(x_shape[a], kernel_size[a - 2], stride[a - 2], padding[a - 2]) for a in (2, 3)
    )


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0), keep_cache=True):
    """The same y and argmax (int16, i*kW + j) as ``functional.max_pool2d_forward``."""
    x = np.ascontiguousarray(x)
    out = np.empty(_out_shape(x.shape, kernel_size, stride, padding), dtype=x.dtype)
    argmax = np.empty(out.shape if keep_cache else (1, 1, 1, 1), dtype=np.int16)
    _max_pool(x, *kernel_size, *stride, *padding, out, argmax, keep_cache)
    return out, (argmax, x.shape, kernel_size, stride, padding) if keep_cache else None


def max_pool2d_backward(grad_output, cache):
    """The same dL/dx as ``functional.max_pool2d_backward``."""
    argmax, x_shape, kernel_size, stride, padding = cache
    grad_input = np.empty(x_shape, dtype=grad_output.dtype)
    _max_pool_backward(
        np.ascontiguousarray(grad_output), np.ascontiguousarray(argmax), *kernel_size, *stride, *padding, grad_input
    )
    return grad_input


def avg_pool2d_forward(x, kernel_size, stride, padding=(0, 0)):
    """The same y as ``functional.avg_pool2d_forward`` (zero padding counted in the divisor)."""
    x = np.ascontiguousarray(x)
    out = np.empty(_out_shape(x.shape, kernel_size, stride, padding), dtype=x.dtype)
    _avg_pool(x, *kernel_size, *stride, *padding, out)
    return out, (x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(grad_output, cache):
    """The same dL/dx as ``functional.avg_pool2d_backward``."""
    x_shape, kernel_size, stride, padding = cache
    grad_input = np.empty(x_shape, dtype=grad_output.dtype)
    _avg_pool_backward(np.ascontiguousarray(grad_output), *kernel_size, *stride, *padding, grad_input)
    return grad_input
