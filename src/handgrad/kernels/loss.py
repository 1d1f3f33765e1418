"""Softmax cross-entropy and NLL, compiled: the pairs of ``functional/loss.py``, fused.

The reference makes six passes over the (N, C) logits (max, subtract, exp, sum, subtract, exp) and
three in backward (copy, scatter, scale), each a fresh array. Here forward handles each row while it
sits in L1 and backward is one pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import functional as reference
from ..functional.loss import _reduce
from . import COMPILED_DTYPES

__all__ = ["cross_entropy_backward", "cross_entropy_forward", "nll_loss_backward", "nll_loss_forward"]


@njit(cache=True, error_model="numpy")
def _cross_entropy_rows(logits, target, ignore_index, per_sample, probs):
    """loss_n = logsumexp(logits_n) - logits_n[target_n], logsumexp = m + log sum_c exp(x_c - m) with
    m = max_c x_c; probs_n = softmax(logits_n) = exp(x - m) / sum_c exp(x_c - m), for backward.
    A row whose target is ``ignore_index`` has loss 0. Returns the number of rows not ignored and
    sum_n loss_n (in float64, rows in order), for the reduction."""
    n_rows, n_classes = logits.shape
    kept, loss_sum = 0, 0.0
    for n in range(n_rows):
        if target[n] == ignore_index:
            per_sample[n] = 0.0
            continue
        kept += 1
        row, p = logits[n], probs[n]
        m = row[0]
        for c in range(1, n_classes):  # m = max_c x_c (NaN propagates, as np.max)
            if row[c] > m or row[c] != row[c]:
                m = row[c]
        total = 0.0  # a float64 sum, whatever the logits' dtype
        for c in range(n_classes):
            e = np.exp(row[c] - m)
            p[c] = e
            total += e
        for c in range(n_classes):
            p[c] = p[c] / total
        per_sample[n] = m + np.log(total) - row[target[n]]
        loss_sum += per_sample[n]
    return kept, loss_sum


@njit(cache=True, error_model="numpy")
def _cross_entropy_grad(probs, target, ignore_index, upstream, grad):
    """grad[n, c] = (probs[n, c] - [c == target_n]) * upstream_n; 0 on a row whose target is ignored."""
    n_rows, n_classes = probs.shape
    per_sample = upstream.shape[0] > 1
    for n in range(n_rows):
        if target[n] == ignore_index:
            for c in range(n_classes):
                grad[n, c] = 0.0
            continue
        u = upstream[n] if per_sample else upstream[0]
        for c in range(n_classes):
            grad[n, c] = probs[n, c] * u
        t = target[n]
        grad[n, t] = (probs[n, t] - 1) * u  # as (softmax - onehot) * u: no cancellation where softmax ~ 1


@njit(cache=True, error_model="numpy")
def _cross_entropy_grad_soft(probs, target, upstream, grad):
    """grad[n, c] = (probs[n, c] * sum_k t[n, k] - t[n, c]) * upstream_n."""
    n_rows, n_classes = probs.shape
    per_sample = upstream.shape[0] > 1
    for n in range(n_rows):
        u = upstream[n] if per_sample else upstream[0]
        mass = 0.0
        for c in range(n_classes):
            mass += target[n, c]
        for c in range(n_classes):
            grad[n, c] = (probs[n, c] * mass - target[n, c]) * u


def _upstream(grad_output, reduction, count, dtype):
    """dL/dloss_n as an array: one value for every sample ('mean', 'sum') or one per sample ('none')."""
    g = np.asarray(grad_output, dtype=dtype)
    if reduction == "mean":
        g = g / dtype.type(count)
    return np.ascontiguousarray(g.reshape(-1))


def _compiled(x, weight, label_smoothing=0.0):
    """The common path the kernels run: (N, C) input of a compiled dtype, no class weights and no
    smoothing (class indices may be ignored; probability targets ignore none)."""
    return x.dtype in COMPILED_DTYPES and x.ndim == 2 and weight is None and label_smoothing == 0.0


def _mean(per_sample, reduction, kept):
    """The reduction, 'mean' over the ``kept`` samples not ignored (0/0 = NaN, silently, as torch)."""
    if reduction != "mean":
        return _reduce(per_sample, reduction)
    with np.errstate(invalid="ignore", divide="ignore"):
        return per_sample.sum(dtype=per_sample.dtype) / per_sample.dtype.type(kept)


def cross_entropy_forward(logits, target, reduction="mean", weight=None, ignore_index=-100, label_smoothing=0.0):
    """loss_n = logsumexp(logits_n) - logits_n[target_n] (with probabilities t_n, sum_c t_n[c] *
    (logsumexp(logits_n) - x_c)): max, exp-sum, log, loss and softmax in one pass over each row while
    it sits in L1 (the reference's six passes and four temporaries fused)."""
    if not _compiled(logits, weight, label_smoothing) or target.ndim == 2:
        # weights, smoothing, probability targets (differentiable, so backward needs log softmax),
        # (N, C, d1, ...) or (C,) input: the reference's forward
        return reference.cross_entropy_forward(logits, target, reduction, weight, ignore_index, label_smoothing)
    logits = np.ascontiguousarray(logits)
    target = np.ascontiguousarray(target)
    per_sample = np.empty(logits.shape[0], dtype=logits.dtype)
    probs = np.empty_like(logits)
    kept, loss_sum = _cross_entropy_rows(logits, target, ignore_index, per_sample, probs)
    if reduction == "none":
        loss = per_sample
    elif reduction == "sum" or kept:
        loss = logits.dtype.type(loss_sum / (kept if reduction == "mean" else 1))
    else:  # 'mean' over no sample: 0/0 = NaN, silently, as torch
        loss = logits.dtype.type(np.nan)
    # backward needs softmax(logits) and the class indices (with ignore_index, not q's one-hot rows)
    return loss, (probs, target, reduction, kept, logits.shape, ignore_index)


def cross_entropy_backward(grad_output, cache, needs_input_grad=None):
    """dL/dlogits_n = (softmax(logits_n) * sum_c q[n, c] - q_n) * dL/dloss_n   (/ the divisor for
    'mean'; q_n = onehot(target_n) for class indices, 0 where ignored), in one pass (the reference's
    copy, scatter and scaling fused), for every (N, C) input whatever its options.
    ``needs_input_grad``: as the reference's (the target's gradient is the reference's)."""
    probs, q, reduction, divisor, shape = cache[:5]  # the reference's cache, or the kernel's (+ ignore_index)
    if needs_input_grad is not None:  # the target's gradient (probability targets only) is the reference's
        wants_input, wants_target = needs_input_grad[:2]
        grad_target = None
        if wants_target and q.ndim == 2:
            grad_target = reference.cross_entropy_backward(grad_output, cache, (False, True))[1]
        return cross_entropy_backward(grad_output, cache) if wants_input else None, grad_target
    if probs.dtype not in COMPILED_DTYPES or len(shape) != 2:
        return reference.cross_entropy_backward(grad_output, cache)
    grad = np.empty_like(probs)
    if not divisor:  # 'mean' over no sample: the loss is NaN and, as torch's, the gradient 0
        grad[...] = 0
    elif q.ndim == 2:
        _cross_entropy_grad_soft(probs, q, _upstream(grad_output, reduction, divisor, probs.dtype), grad)
    else:
        _cross_entropy_grad(probs, q, cache[5], _upstream(grad_output, reduction, divisor, probs.dtype), grad)
    return grad


@njit(cache=True)
def _pick(log_probs, target, ignore_index, per_sample):
    """per_sample[n] = -log_probs[n, target_n], 0 where ignored; returns the rows not ignored."""
    kept = 0
    for n in range(log_probs.shape[0]):
        if target[n] == ignore_index:
            per_sample[n] = 0.0
        else:
            per_sample[n] = -log_probs[n, target[n]]
            kept += 1
    return kept


@njit(cache=True)
def _nll_grad(target, ignore_index, upstream, grad):
    per_sample = upstream.shape[0] > 1
    for n in range(grad.shape[0]):
        if target[n] != ignore_index:
            grad[n, target[n]] = -(upstream[n] if per_sample else upstream[0])


def nll_loss_forward(log_probs, target, reduction="mean", weight=None, ignore_index=-100):
    """loss_n = -log_probs[n, target_n] (0 where ignored): one gather, without the reference's index
    array."""
    if not _compiled(log_probs, weight):
        # weights, (N, C, d1, ...) or (C,) input: the reference's forward
        return reference.nll_loss_forward(log_probs, target, reduction, weight, ignore_index)
    target = np.ascontiguousarray(target)
    per_sample = np.empty(log_probs.shape[0], dtype=log_probs.dtype)
    kept = _pick(log_probs, target, ignore_index, per_sample)
    # the class indices and the dtype, not the reference's q (an (N, C) array backward would only read)
    return _mean(per_sample, reduction, kept), (target, reduction, kept, log_probs.shape, log_probs.dtype, ignore_index)


def nll_loss_backward(grad_output, cache):
    """dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n (0 on ignored rows): zeros and one write
    per row, instead of the reference's scatter and a multiply over all N*C entries."""
    if len(cache) == 4:  # the reference's cache (q, reduction, divisor, shape): its forward ran
        return reference.nll_loss_backward(grad_output, cache)
    target, reduction, divisor, shape, dtype, ignore_index = cache
    grad = np.zeros(shape, dtype=dtype)
    if divisor:  # else 'mean' over no sample: the gradient stays 0, as torch's
        _nll_grad(target, ignore_index, _upstream(grad_output, reduction, divisor, dtype), grad)
    return grad
