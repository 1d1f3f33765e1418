"""Linear, compiled: the products in BLAS on handgrad's threads (``products.py``); what is left
around them is fused.

NumPy's broadcast ``out += bias`` and ``grad.sum(axis=0)`` cost 5-10 us each on an MLP layer's
(64, 250) block, mostly set-up; here each is one plain loop (about 1-3 us).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..functional.linear import ALL
from . import COMPILED_DTYPES
from .products import product_pair, rows_product, splits

__all__ = ["linear_backward", "linear_forward"]


@njit(cache=True)
def _add_bias(out, bias):
    """out[n, j] += bias[j]"""
    for n in range(out.shape[0]):
        for j in range(np.uintp(out.shape[1])):
            out[n, j] += bias[j]


@njit(cache=True)
def _sum_rows(grad, out):
    """out[j] = sum_n grad[n, j], rows added in order (as NumPy's sum over axis 0)."""
    out[:] = 0
    for n in range(grad.shape[0]):
        for j in range(np.uintp(grad.shape[1])):
            out[j] += grad[n, j]


@njit(cache=True)
def _add_bias_t(out_t, bias):
    """out_t[j, n] += bias[j], on the output transposed (one row per output feature)."""
    for j in range(out_t.shape[0]):
        for n in range(np.uintp(out_t.shape[1])):
            out_t[j, n] += bias[j]


def linear_forward(x, weight, bias=None):
    """y = x @ weight.T + bias: the product in BLAS, the bias added in one loop over its output."""
    rows = x.reshape(-1, x.shape[-1])
    compiled = x.dtype in COMPILED_DTYPES and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)
    if compiled and rows.flags.f_contiguous and not rows.flags.c_contiguous and splits(weight, rows.T):
        # a Linear -> ReLU's y, handed on transposed: y.T = weight @ x.T on its C-ordered x.T, so that
        # the threads split weight's rows instead of waiting for a copy of x in C order
        out_t = rows_product(weight, rows.T)
        if bias is not None:
            _add_bias_t(out_t, bias)
        return out_t.T, (x, weight, bias is not None)
    out = rows_product(rows, weight.T).reshape(x.shape[:-1] + weight.shape[:1])
    if bias is not None:
        if out.dtype in COMPILED_DTYPES:
            _add_bias(out.reshape(-1, out.shape[-1]), bias)
        else:
            out += bias
    # backward needs x (for grad_weight) and weight (for grad_input); nothing else.
    return out, (x, weight, bias is not None)


def linear_backward(grad_output, cache, needs_input_grad=ALL):
    """grad_input = G @ weight, grad_weight = G.T @ x (BLAS), grad_bias = G summed over its rows in
    one loop."""
    x, weight, has_bias = cache
    grad_rows = np.ascontiguousarray(grad_output).reshape(-1, grad_output.shape[-1])
    # grad_input taken as (weight.T @ G.T).T: for (N, out) rows F-ordered, so that a Linear -> ReLU
    # run below reads dL/dy transposed (kernels/fused.py) as a view instead of a copy
    gt = grad_rows.T
    grad_weight, grad_input_t = product_pair(
        gt if needs_input_grad[1] else None, x.reshape(-1, x.shape[-1]), weight.T if needs_input_grad[0] else None, gt
    )
    grad_input = None if grad_input_t is None else grad_input_t.T.reshape(x.shape)
    grad_bias = None
    if has_bias and needs_input_grad[2] and grad_rows.dtype not in COMPILED_DTYPES:
        grad_bias = grad_rows.sum(axis=0)
    elif has_bias and needs_input_grad[2]:
        grad_bias = np.empty(grad_rows.shape[1], grad_rows.dtype)
        _sum_rows(grad_rows, grad_bias)
    return grad_input, grad_weight, grad_bias
