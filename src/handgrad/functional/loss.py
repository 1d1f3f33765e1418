"""Losses. Each forward returns the loss (a 0-d array, or per-sample with reduction='none') and a
cache; each backward turns dL/dloss (1 by default) into dL/dinput."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import HandgradError, ShapeError, fmt_shape
from .activation import log_softmax_forward
from .spec import Bridge, Case, OpSpec, register

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


def cross_entropy_forward(logits, target, reduction="mean") -> tuple[np.ndarray, Any]:
    """Softmax cross-entropy, fused: loss_n = -log softmax(logits_n)[target_n]
                                            = logsumexp(logits_n) - logits_n[target_n].
    With probability (one-hot or soft) targets t_n, as torch's:
                                     loss_n = -sum_c t_n[c] log softmax(logits_n)[c].

    Shapes: logits (N, C); target (N,) integer class indices, or (N, C) floating probabilities of
    the logits' dtype -> loss () or (N,) for 'none'. 'mean' divides by N either way.
    """
    log_probs, _ = log_softmax_forward(logits, dim=1)
    if target.ndim == 2:
        loss = _reduce(-(target * log_probs).sum(axis=1, dtype=log_probs.dtype), reduction)
    else:
        loss = _reduce(-log_probs[np.arange(logits.shape[0]), target], reduction)
    # backward needs softmax(logits) = exp(log_probs) and the targets.
    return loss, (np.exp(log_probs), target, reduction)


def cross_entropy_backward(grad_output, cache) -> np.ndarray:
    """dL/dlogits_n = (softmax(logits_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean');
    with probability targets t_n: (softmax(logits_n) * sum_c t_n[c] - t_n) * dL/dloss_n, which is
    softmax - t_n when t_n sums to 1."""
    probs, target, reduction = cache
    if target.ndim == 2:
        grad = probs * target.sum(axis=1, keepdims=True, dtype=probs.dtype) - target
    else:
        grad = probs.copy()
        grad[np.arange(len(target)), target] -= 1
    grad *= _upstream(grad_output, reduction, len(target), probs.dtype)
    return grad


def nll_loss_forward(log_probs, target, reduction="mean") -> tuple[np.ndarray, Any]:
    """loss_n = -log_probs[n, target_n]   (log_probs: (N, C), e.g. from LogSoftmax)"""
    rows = np.arange(log_probs.shape[0])
    return _reduce(-log_probs[rows, target], reduction), (log_probs.shape, log_probs.dtype, target, reduction)


def nll_loss_backward(grad_output, cache) -> np.ndarray:
    """dL/dlog_probs[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean')"""
    shape, dtype, target, reduction = cache
    grad = np.zeros(shape, dtype=dtype)
    grad[np.arange(len(target)), target] = -1
    grad *= _upstream(grad_output, reduction, len(target), dtype)
    return grad


def mse_loss_forward(input, target, reduction="mean") -> tuple[np.ndarray, Any]:
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


def mse_loss_backward(grad_output, cache) -> np.ndarray:
    """dL/dinput = 2 * (input - target) * dL/dloss   (/ number of elements for 'mean')"""
    diff, reduction = cache
    g = np.asarray(grad_output, dtype=diff.dtype)
    if reduction == "mean":
        g = g / diff.dtype.type(diff.size)
    return 2 * diff * g


# -- specs ------------------------------------------------------------------------------------------
def _check_reduction(where, reduction):
    if reduction not in REDUCTIONS:
        raise HandgradError(where, f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_class_targets(where, arrays, options, probabilities=False):
    from ..nn.loss import check_class_targets  # the layers' own check, so both front-ends word it alike

    check_class_targets(where, arrays["input"], arrays["target"], probabilities=probabilities)
    return {"reduction": _check_reduction(where, options["reduction"])}


def _check_cross_entropy_targets(where, arrays, options):
    return _check_class_targets(where, arrays, options, probabilities=True)


def _check_mse_loss(where, arrays, options):
    x, target = arrays["input"], arrays["target"]
    if x.shape != target.shape:
        raise ShapeError(
            where, f"expected target of the input's shape {fmt_shape(x.shape)}, got {fmt_shape(target.shape)}"
        )
    return {"reduction": _check_reduction(where, options["reduction"])}


def _class_target_cases(make_input):
    def cases(rng):
        for reduction in REDUCTIONS:
            yield Case(
                f"logits (4, 5), reduction {reduction}",
                (make_input(rng), rng.integers(0, 5, 4)),
                {"reduction": reduction},
            )

    return cases


def _mse_loss_cases(rng):
    for reduction in REDUCTIONS:
        yield Case(
            f"x (3, 4), reduction {reduction}",
            (rng.standard_normal((3, 4)), rng.standard_normal((3, 4))),
            {"reduction": reduction},
        )


def _cross_entropy_unsupported(module):
    if module.weight is not None:
        return "class weights are not supported"
    if module.label_smoothing != 0.0:
        return "label_smoothing is not supported"
    if module.ignore_index != -100:
        return "ignore_index is not supported (targets must be class indices in [0, C))"
    return None


def _mse_loss_gradients(grad_input, needs):
    # the loss depends on input - target only, so its gradient in the target is the negative
    return grad_input if needs[0] else None, -grad_input if needs[1] else None


_REDUCTION = (("reduction", "mean"),)
register(
    OpSpec(
        "cross_entropy",
        cross_entropy_forward,
        cross_entropy_backward,
        lambda torch: torch.nn.functional.cross_entropy,
        _class_target_cases(lambda rng: rng.standard_normal((4, 5))),
        tensors=("input", "target"),
        integer=("target",),
        options=_REDUCTION,
        bridge=Bridge(
            "CrossEntropyLoss",
            function="CrossEntropyFunction",
            check=_check_cross_entropy_targets,
            unsupported=_cross_entropy_unsupported,
        ),
    ),
    OpSpec(
        "nll_loss",
        nll_loss_forward,
        nll_loss_backward,
        lambda torch: torch.nn.functional.nll_loss,
        _class_target_cases(lambda rng: log_softmax_forward(rng.standard_normal((4, 5)), 1)[0]),
        tensors=("input", "target"),
        integer=("target",),
        options=_REDUCTION,
    ),
    OpSpec(
        "mse_loss",
        mse_loss_forward,
        mse_loss_backward,
        lambda torch: torch.nn.functional.mse_loss,
        _mse_loss_cases,
        tensors=("input", "target"),
        options=_REDUCTION,
        gradients=_mse_loss_gradients,
        bridge=Bridge("MSELoss", check=_check_mse_loss, casts=("target",)),
    ),
)
