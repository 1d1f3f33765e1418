"""Losses as layers: ``loss = loss_fn(input, target)`` then ``grad = loss_fn.backward()``.

With reduction 'mean' or 'sum' the loss is a Python float; with 'none', an array of per-sample
losses, and ``backward`` then takes dL/dloss of that shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .. import kernels
from ..errors import DTypeError, HandgradError, ShapeError, check_floating, check_ndim, fmt_shape
from .module import Module


class _Loss(Module):
    # ``op``: the functional pair is <op>_forward / <op>_backward, run through kernels.op

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in self._reductions:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {self._reductions}, got {reduction!r}")
        self.reduction = reduction

    _reductions = F.loss.REDUCTIONS

    def _finish(self, loss, cache):
        self._save_for_backward(cache, np.shape(loss))
        return float(loss) if self.reduction != "none" else loss

    def backward(self, grad_output=1.0, input_grad: bool = True) -> np.ndarray | None:
        """dL/dinput, given dL/dloss (1.0 by default: the loss is the objective)."""
        if self.reduction != "none" and np.ndim(grad_output) == 0:
            grad_output = np.asarray(grad_output)
        cache = self._saved(np.asarray(grad_output))
        return kernels.op(f"{self.op}_backward")(grad_output, cache) if input_grad else None

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


def check_class_targets(layer, input, target, probabilities: bool = False) -> None:
    """input (N, C) floating; target (N,) integer class indices in [0, C), or, with
    ``probabilities``, (N, C) class probabilities (one-hot or soft) of the input's dtype."""
    check_ndim(layer, "input", input, (2,), "(N, C)")
    check_floating(layer, "input", input)
    if not isinstance(target, np.ndarray):
        raise HandgradError(
            layer, f"expected target to be a numpy.ndarray of class indices, got {type(target).__name__}"
        )
    if probabilities and np.issubdtype(target.dtype, np.floating) and target.ndim == 2:
        if target.shape != input.shape:
            raise ShapeError(
                layer,
                f"expected probability target of the input's shape {fmt_shape(input.shape)}, "
                f"got {fmt_shape(target.shape)} (class indices are an integer (N,) array)",
            )
        check_floating(layer, "probability target", target, input.dtype)
        return
    if not np.issubdtype(target.dtype, np.integer):
        also = ", or probabilities (N, C) of the input's dtype" if probabilities else ""
        raise DTypeError(layer, f"expected target of an integer dtype (class indices){also}, got {target.dtype.name}")
    if target.shape != input.shape[:1]:
        raise ShapeError(
            layer,
            f"expected target of shape ({input.shape[0]},) to match input "
            f"{fmt_shape(input.shape)}, got {fmt_shape(target.shape)}",
        )
    if target.size and (target.min() < 0 or target.max() >= input.shape[1]):
        bad = target[(target < 0) | (target >= input.shape[1])]
        raise HandgradError(
            layer,
            f"target class indices must be in [0, {input.shape[1] - 1}] (C={input.shape[1]}), got {bad[:5].tolist()}",
        )


class CrossEntropyLoss(_Loss):
    """loss_n = logsumexp(x_n) - x_n[target_n]: log-softmax and negative log-likelihood fused, so
    no exp overflows for logits of any size.

    Shape: input (N, C) logits, target (N,) integer classes or (N, C) probabilities (one-hot or
    soft, the input's dtype; loss_n = -sum_c target_n[c] log softmax(x_n)[c]) -> float (or (N,)
    for 'none').
    backward: dL/dx_n = (softmax(x_n) - onehot(target_n)) * dL/dloss_n   (/ N for 'mean');
    with probabilities, (softmax(x_n) * sum_c target_n[c] - target_n) * dL/dloss_n.
    """

    op = "cross_entropy"

    def forward(self, input, target) -> Any:
        check_class_targets(self, input, target, probabilities=True)
        return self._finish(*kernels.op("cross_entropy_forward")(input, target, self.reduction))


class NLLLoss(_Loss):
    """loss_n = -input[n, target_n] for log-probabilities input (N, C) (e.g. from LogSoftmax).
    backward: dL/dinput[n, c] = -[c == target_n] * dL/dloss_n   (/ N for 'mean')."""

    op = "nll_loss"

    def forward(self, input, target) -> Any:
        check_class_targets(self, input, target)
        return self._finish(*kernels.op("nll_loss_forward")(input, target, self.reduction))


class MSELoss(_Loss):
    """loss = mean (or sum) of (input - target)^2 over all elements.
    backward: dL/dinput = 2 (input - target) * dL/dloss   (/ numel for 'mean').
    The target is cast to the input's dtype (never the other way round)."""

    op = "mse_loss"

    def forward(self, input, target) -> Any:
        check_ndim(self, "input", input, range(0, 33), "(*)")
        check_floating(self, "input", input)
        target = np.asarray(target)
        if target.shape != input.shape:
            raise ShapeError(
                self, f"expected target of the input's shape {fmt_shape(input.shape)}, got {fmt_shape(target.shape)}"
            )
        target = target.astype(input.dtype, copy=False)
        return self._finish(*kernels.op("mse_loss_forward")(input, target, self.reduction))
