"""Losses. Each forward returns the loss (a 0-d array, or per-sample with reduction='none') and a
cache; each backward turns dL/dloss (1 by default) into dL/dinput."""
from __future__ import annotations

import numpy as np

from .activation import log_softmax_forward

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample, reduction):
    if reduction == "mean":
        return per_sample.mean(dtype=per_sample.dtype)
    if reduction == "sum":
        return per_sample.sum(dtype=per_sample.dtype)
    return per_sample


def _upstream(grad_output, reduction, count, dtype):
    """The factor each sample's gradient is scaled by: dL/dloss_i for the chosen reduction."""
    g = np.asarray(grad_output, dtype=dtype)
    if reduction == "mean":
        return g / dtype.type(count)
    if reduction == "sum":
        return g
    return g[:, None]  # (N,) -> (N, 1): broadcast over classes


def cross_entropy_forward(logits, target, reduction="mean"):
    """Softmax cross-entropy, fused: loss_n = -log softmax(logits_n)[target_n]
                                            = logsumexp(logits_n) - logits_n[target_n].

    Shapes: logits (N, C), target (N,) integer class indices -> loss () or (N,) for 'none'.
    """
    log_probs, _ = log_softmax_forward(logits, dim=1)
    rows = np.arange(logits.shape[0])
    loss = _reduce(-log_probs[rows, target], reduction)
    # backward needs softmax(logits) = exp(log_probs) and the targets.
    return loss, (np.exp(log_probs), target, reduction)


def cross_entropy_backward(grad_output, cache):
    """dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean')"""
    probs, target, reduction = cache
    grad = probs.copy()
    grad[np.arange(len(target)), target] -= 1
    grad *= _upstream(grad_output, reduction, len(target), probs.dtype)
    return grad


def nll_loss_forward(log_probs, target, reduction="mean"):
    """loss_n = -log_probs[n, target_n]   (log_probs: (N, C), e.g. from LogSoftmax)"""
    rows = np.arange(log_probs.shape[0])
    return _reduce(-log_probs[rows, target], reduction), (log_probs.shape, log_probs.dtype, target, reduction)


def nll_loss_backward(grad_output, cache):
    """dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean')"""
    shape, dtype, target, reduction = cache
    grad = np.zeros(shape, dtype=dtype)
    grad[np.arange(len(target)), target] = -1
    grad *= _upstream(grad_output, reduction, len(target), dtype)
    return grad


def mse_loss_forward(input, target, reduction="mean"):
    """loss = mean (or sum) over all elements of (input - target)^2;  'none' keeps the shape."""
    diff = input - target
    squared = diff * diff
    if reduction == "mean":
        loss = squared.mean(dtype=squared.dtype)
    elif reduction == "sum":
        loss = squared.sum(dtype=squared.dtype)
    else:
        loss = squared
    return loss, (diff, reduction)  # backward needs only the difference


def mse_loss_backward(grad_output, cache):
    """dL/dinput = 2 * (input - target) * dL/dloss   (/ number of elements for 'mean')"""
    diff, reduction = cache
    g = np.asarray(grad_output, dtype=diff.dtype)
    if reduction == "mean":
        g = g / diff.dtype.type(diff.size)
    return 2 * diff * g
