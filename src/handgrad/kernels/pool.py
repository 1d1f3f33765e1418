"""max/avg pool forward and backward compiled: one pass over each window, parallel over the planes.

The references (``functional/pool.py``) copy every window out (max) or add one strided plane per
kernel offset; here each output pixel scans its window in place, reading the padded input through
bounds, and each backward writes every input pixel once. The caches are the references': the max
pool's flat indices into each input plane, the average pool's divisor per window. ceil_mode and
the average pool's options change only the output size and the divisors, so they run here too; a
dilated max pool runs the reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..functional import pool as reference
from . import COMPILED_DTYPES

__all__ = ["avg_pool2d_backward", "avg_pool2d_forward", "max_pool2d_backward", "max_pool2d_forward"]


@njit(parallel=True, cache=True)
def _max_pool(x, kh, kw, sh, sw, ph, pw, out, argmax, keep):
    """out = max over each window, argmax = its flat index r*W + q in x's plane: the first
    maximum, or the last NaN (as PyTorch, whose scan takes every NaN it meets); padding never wins.
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
                best, where = -np.inf, np.uintp((r0 + i0) * w + q0 + j0)  # PyTorch's start: the first pixel inside x
                for i in range(i0, i1):
                    line = np.uintp((r0 + i) * w + q0)
                    for j in range(np.uintp(j0), np.uintp(j1)):
                        v = xf[source + line + j]
                        if v > best or np.isnan(v):
                            best, where = v, line + j
                k = target + np.uintp(a * wo + b)
                of[k] = best
                if keep:
                    af[k] = np.int64(where)


@njit(parallel=True, cache=True)
def _max_pool_backward(grad_output, argmax, grad_input):
    """grad_input[plane, argmax] += grad_output, plane by plane (zeroed first)."""
    planes, size = grad_output.shape
    for plane in prange(planes):
        grad_input[plane] = 0
        for k in range(size):
            grad_input[plane, argmax[plane, k]] += grad_output[plane, k]


@njit(parallel=True, cache=True)
def _avg_pool(x, kh, kw, sh, sw, ph, pw, divisor, out):
    """out = sum over each window (padding counted as zeros) / divisor[window]."""
    n, c, h, w = x.shape
    _, _, ho, wo = out.shape
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
                out[s, ci, a, b] = total / divisor[a, b]


@njit(parallel=True, cache=True)
def _avg_pool_backward(grad_output, kh, kw, sh, sw, ph, pw, divisor, grad_input):
    """grad_input[p] = sum over the windows holding p of grad_output / divisor[window] (zeroed first)."""
    n, c, ho, wo = grad_output.shape
    h, w = grad_input.shape[2], grad_input.shape[3]
    for plane in prange(n * c):
        s, ci = plane // c, plane % c
        grad_input[s, ci] = 0
        for a in range(ho):
            r0 = sh * a - ph
            for b in range(wo):
                q0 = sw * b - pw
                share = grad_output[s, ci, a, b] / divisor[a, b]
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -q0), min(kw, w - q0)):
                        grad_input[s, ci, r0 + i, q0 + j] += share


def _batched(a):
    """(C, H, W) as a (1, C, H, W) view; (N, C, H, W) as it is, made contiguous."""
    return np.ascontiguousarray(a if a.ndim == 4 else a[None])


def max_pool2d_forward(
    x, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False, return_indices=False, keep_cache=True
):
    """The same y and indices (int64, r*W + q in x's plane) as ``functional.max_pool2d_forward``."""
    if tuple(dilation) != (1, 1) or x.dtype not in COMPILED_DTYPES:  # dilated windows: the reference's scan
        return reference.max_pool2d_forward(
            x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, keep_cache
        )
    out_size = reference._out_size(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    xb = _batched(x)
    out = np.empty(xb.shape[:2] + out_size, dtype=x.dtype)
    keep = keep_cache or return_indices
    argmax = np.empty(out.shape if keep else (1, 1, 1, 1), dtype=np.int64)
    _max_pool(xb, *kernel_size, *stride, *padding, out, argmax, keep)
    out = out.reshape(x.shape[:-2] + out_size)
    if not keep:
        return out, None
    argmax = argmax.reshape(out.shape)
    return ((out, argmax) if return_indices else out), (argmax, x.shape) if keep_cache else None


def max_pool2d_backward(grad_output, cache):
    """The same dL/dx as ``functional.max_pool2d_backward``."""
    indices, x_shape = cache
    if grad_output.dtype not in COMPILED_DTYPES:
        return reference.max_pool2d_backward(grad_output, cache)
    planes = int(np.prod(x_shape[:-2], dtype=np.int64))
    grad_input = np.empty((planes, x_shape[-2] * x_shape[-1]), dtype=grad_output.dtype)
    _max_pool_backward(
        np.ascontiguousarray(grad_output).reshape(planes, -1),
        np.ascontiguousarray(indices).reshape(planes, -1),
        grad_input,
    )
    return grad_input.reshape(x_shape)


def avg_pool2d_forward(
    x, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """The same y as ``functional.avg_pool2d_forward``, whatever its options."""
    if x.dtype not in COMPILED_DTYPES:
        return reference.avg_pool2d_forward(
            x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )
    out_size = reference._out_size(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    divisor = reference._avg_divisor(
        x.shape, out_size, kernel_size, stride, padding, count_include_pad, divisor_override
    )
    xb = _batched(x)
    out = np.empty(xb.shape[:2] + out_size, dtype=x.dtype)
    _avg_pool(xb, *kernel_size, *stride, *padding, divisor, out)
    return out.reshape(x.shape[:-2] + out_size), (x.shape, kernel_size, stride, padding, divisor)


def avg_pool2d_backward(grad_output, cache):
    """The same dL/dx as ``functional.avg_pool2d_backward``."""
    x_shape, kernel_size, stride, padding, divisor = cache
    if grad_output.dtype not in COMPILED_DTYPES:
        return reference.avg_pool2d_backward(grad_output, cache)
    grad_input = np.empty((1,) * (4 - len(x_shape)) + tuple(x_shape), dtype=grad_output.dtype)
    _avg_pool_backward(_batched(grad_output), *kernel_size, *stride, *padding, divisor, grad_input)
    return grad_input.reshape(x_shape)
