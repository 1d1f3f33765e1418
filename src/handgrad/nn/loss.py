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


def check_class_targets(
    layer, input, target, probabilities: bool = False, weight=None, ignore_index=-100, label_smoothing=0.0
) -> None:
    """input (N, C, d1, ...) or unbatched (C,) floating; target (N, d1, ...) (or () for (C,))
    integer class indices in [0, C) or ``ignore_index``, or, with ``probabilities``, class
    probabilities (one-hot or soft) of the input's shape and dtype. ``weight``: None or (C,) of the
    input's dtype; ``label_smoothing`` in [0, 1]."""
    check_ndim(layer, "input", input, range(1, 33), "(N, C, d1, ...) or (C,)")
    check_floating(layer, "input", input)
    n_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if weight is not None:
        if not isinstance(weight, np.ndarray) or weight.shape != (n_classes,):
            got = fmt_shape(weight.shape) if isinstance(weight, np.ndarray) else type(weight).__name__
            raise ShapeError(layer, f"expected weight of shape ({n_classes},), one per class, got {got}")
        check_floating(layer, "weight", weight, input.dtype)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)):
        raise HandgradError(layer, f"expected label_smoothing to be a number in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise HandgradError(layer, f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(target, np.ndarray):
        raise HandgradError(
            layer, f"expected target to be a numpy.ndarray of class indices, got {type(target).__name__}"
        )
    # dtype kinds ('f' floating, 'i'/'u' integer), as np.issubdtype tells them, read off the dtype: this runs every step
    if probabilities and target.dtype.kind == "f" and target.ndim == input.ndim:
        if target.shape != input.shape:
            raise ShapeError(
                layer,
                f"expected probability target of the input's shape {fmt_shape(input.shape)}, "
                f"got {fmt_shape(target.shape)} (class indices are an integer array without the class axis)",
            )
        check_floating(layer, "probability target", target, input.dtype)
        if ignore_index != -100:
            raise HandgradError(
                layer, f"ignore_index ({ignore_index}) applies to class indices, not probability targets; leave it -100"
            )
        return
    if target.dtype.kind not in "iu":
        also = ", or probabilities of the input's shape and dtype" if probabilities else ""
        raise DTypeError(layer, f"expected target of an integer dtype (class indices){also}, got {target.dtype.name}")
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if target.shape != expected:
        raise ShapeError(
            layer,
            f"expected target of shape {fmt_shape(expected)} to match input {fmt_shape(input.shape)} "
            f"(its shape without the class axis 1), got {fmt_shape(target.shape)}",
        )
    # the common case in one reduction: read as unsigned integers of the same width, a negative index
    # is larger than any class, so the maximum alone checks both bounds
    if not target.size or target.view(target.dtype.str.replace("i", "u")).max() < n_classes:
        return
    bad = target[((target < 0) | (target >= n_classes)) & (target != ignore_index)]
    if bad.size:
        raise HandgradError(
            layer,
            f"target class indices must be in [0, {n_classes - 1}] (C={n_classes}) or ignore_index "
            f"({ignore_index}), got {bad[:5].tolist()}",
        )


class _ClassLoss(_Loss):
    """A loss over class indices: torch's constructor (``size_average`` and ``reduce`` only at None,
    their deprecated default), class weights and ignored samples."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None, reduction: str = "mean"):
        refuse_deprecated(type(self).__name__, size_average, reduce)
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        parts = [] if self.weight is None else [f"weight={self.weight.tolist()}"]
        parts += [] if self.ignore_index == -100 else [f"ignore_index={self.ignore_index}"]
        return ", ".join(parts + ([super().extra_repr()] if super().extra_repr() else []))


def refuse_deprecated(layer, size_average, reduce) -> None:
    """torch's deprecated ``size_average`` / ``reduce`` are accepted at their default, None, only."""
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None:
            raise HandgradError(
                layer,
                f"{name}={value!r} is deprecated in torch and not supported; use reduction='mean', 'sum' or 'none'",
            )


class CrossEntropyLoss(_ClassLoss):
    """loss_n = -sum_c q[n, c] log softmax(x_n)[c]: log-softmax and negative log-likelihood fused, so
    no exp overflows for logits of any size. For a class index t_n alone, logsumexp(x_n) - x_n[t_n].

    q[n, c] = (1 - eps) w[t_n] [c == t_n] + eps / C * w_c for class indices (0 where t_n is
    ``ignore_index``), w_c ((1 - eps) t_n[c] + eps / C) for probabilities (one-hot or soft);
    w = ``weight`` or 1, eps = ``label_smoothing``. 'mean' divides the sum by sum_n w[t_n] over the
    samples not ignored (probabilities: by the number of samples), as torch.

    Shape: input (N, C, d1, ...) or (C,) logits; target (N, d1, ...) (or ()) integer classes or
    probabilities of the input's shape and dtype -> float (or (N, d1, ...) for 'none').
    backward: dL/dx_n = (softmax(x_n) * sum_c q[n, c] - q_n) * dL/dloss_n   (/ the divisor for
    'mean'); for a class index alone, softmax(x_n) - onehot(t_n).
    """

    op = "cross_entropy"

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target) -> Any:
        weight = self.weight if self.weight is None else self.weight.astype(input.dtype, copy=False)
        check_class_targets(self, input, target, True, weight, self.ignore_index, self.label_smoothing)
        return self._finish(
            *kernels.op("cross_entropy_forward")(
                input, target, self.reduction, weight, self.ignore_index, float(self.label_smoothing)
            )
        )

    def extra_repr(self) -> str:
        smoothing = [] if self.label_smoothing == 0.0 else [f"label_smoothing={self.label_smoothing}"]
        return ", ".join(([super().extra_repr()] if super().extra_repr() else []) + smoothing)


class NLLLoss(_ClassLoss):
    """loss_n = -w[t_n] input[n, t_n] for log-probabilities input (N, C, d1, ...) or (C,) (e.g. from
    LogSoftmax); 0 where t_n is ``ignore_index``; 'mean' divides by sum_n w[t_n] over the rest.
    backward: dL/dinput[n, c] = -w[t_n] [c == t_n] * dL/dloss_n   (/ that divisor for 'mean')."""

    op = "nll_loss"

    def forward(self, input, target) -> Any:
        weight = self.weight if self.weight is None else self.weight.astype(input.dtype, copy=False)
        check_class_targets(self, input, target, weight=weight, ignore_index=self.ignore_index)
        return self._finish(*kernels.op("nll_loss_forward")(input, target, self.reduction, weight, self.ignore_index))


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
