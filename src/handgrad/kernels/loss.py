"""Softmax cross-entropy and NLL, compiled: the pairs of ``functional/loss.py``, fused.

The reference makes six passes over the (N, C) logits (max, subtract, exp, sum, subtract, exp) and
three more in backward (copy, scatter, scale), each a fresh array. Here each row is read while it
sits in L1: forward writes one number per sample, backward one pass over the logits.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..functional.loss import _reduce

__all__ = ["cross_entropy_backward", "cross_entropy_forward", "nll_loss_backward", "nll_loss_forward"]


@njit(cache=True)
def _cross_entropy_rows(logits, target, per_sample, logsumexp):
    """loss_n = logsumexp(logits_n) - logits_n[target_n], with logsumexp = m + log sum exp(x - m)."""
    n_rows, n_classes = logits.shape
    for n in range(n_rows):
        row = logits[n]
        m = row[0]
        for c in range(1, n_classes):        # m = max_c x_c (NaN propagates, as np.max)
            if row[c] > m or row[c] != row[c]:
                m = row[c]
        total = 0.0                          # float64 sum, whatever the logits' dtype
        for c in range(n_classes):
            total += np.exp(row[c] - m)
        lse = m + np.log(total)
        logsumexp[n] = lse
        per_sample[n] = lse - row[target[n]]


@njit(cache=True)
def _cross_entropy_grad(logits, target, logsumexp, upstream, grad):
    """grad[n, c] = (exp(x[n, c] - logsumexp_n) - [c == target_n]) * upstream_n."""
    n_rows, n_classes = logits.shape
    per_sample = upstream.shape[0] > 1
    for n in range(n_rows):
        u = upstream[n] if per_sample else upstream[0]
        lse = logsumexp[n]
        for c in range(n_classes):
            grad[n, c] = np.exp(logits[n, c] - lse) * u
        grad[n, target[n]] -= u


def _upstream(grad_output, reduction, count, dtype):
    """dL/dloss_n as an array: one value for every sample ('mean', 'sum') or one per sample ('none')."""
    g = np.asarray(grad_output, dtype=dtype)
    if reduction == "mean":
        g = g / dtype.type(count)
    return np.ascontiguousarray(g.reshape(-1))


def cross_entropy_forward(logits, target, reduction="mean"):
    """loss_n = logsumexp(logits_n) - logits_n[target_n]: max, exp-sum, log and the loss in one
    pass over each row (the reference's six passes and four temporaries fused)."""
    logits = np.ascontiguousarray(logits)
    target = np.ascontiguousarray(target)
    per_sample = np.empty(logits.shape[0], dtype=logits.dtype)
    logsumexp = np.empty(logits.shape[0], dtype=np.float64)
    _cross_entropy_rows(logits, target, per_sample, logsumexp)
    # backward needs the logits and each row's logsumexp: softmax = exp(x - logsumexp), recomputed
    # in its one pass instead of written out here.
    return _reduce(per_sample, reduction), (logits, logsumexp, target, reduction)


def cross_entropy_backward(grad_output, cache):
    """dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean'), in
    one pass: softmax recomputed from the cached logsumexp, the one-hot subtracted in place."""
    logits, logsumexp, target, reduction = cache
    grad = np.empty_like(logits)
    _cross_entropy_grad(logits, target, logsumexp, _upstream(grad_output, reduction, len(target), logits.dtype), grad)
    return grad


@njit(cache=True)
def _pick(log_probs, target, per_sample):
    for n in range(log_probs.shape[0]):
        per_sample[n] = -log_probs[n, target[n]]


@njit(cache=True)
def _nll_grad(target, upstream, grad):
    per_sample = upstream.shape[0] > 1
    for n in range(grad.shape[0]):
        grad[n, target[n]] = -(upstream[n] if per_sample else upstream[0])


def nll_loss_forward(log_probs, target, reduction="mean"):
    """loss_n = -log_probs[n, target_n]: one gather, without the reference's index array."""
    target = np.ascontiguousarray(target)
    per_sample = np.empty(log_probs.shape[0], dtype=log_probs.dtype)
    _pick(log_probs, target, per_sample)
    return _reduce(per_sample, reduction), (log_probs.shape, log_probs.dtype, target, reduction)


def nll_loss_backward(grad_output, cache):
    """dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n: zeros and one write per row, instead of
    the reference's scatter and a multiply over all N*C entries."""
    shape, dtype, target, reduction = cache
    grad = np.zeros(shape, dtype=dtype)
    _nll_grad(target, _upstream(grad_output, reduction, len(target), dtype), grad)
    return grad
