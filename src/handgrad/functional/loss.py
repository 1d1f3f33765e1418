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
    """The factor each sample's gradient is scaled by: dL/dloss_n for the chosen reduction, as an
    (M, 1) column over the M samples ('none') or one value ('mean': divided by ``count``)."""
    g = np.asarray(grad_output, dtype=dtype)
    if reduction == "mean":
        return g / dtype.type(count)
    if reduction == "sum":
        return g
    return g.reshape(-1, 1)  # (N, d1, ...) -> (M, 1): broadcast over classes


def _rows(x):
    """Input (N, C, d1, ...) or unbatched (C,) as (M, C) rows, one per sample: the class axis last."""
    if x.ndim == 1:
        return x.reshape(1, -1)
    return x if x.ndim == 2 else np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _unrows(rows, shape):
    """The inverse of ``_rows``: (M, C) back to the input's ``shape``."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape((shape[0], *shape[2:], shape[1])), -1, 1)


def _sample_shape(shape):
    """The shape of the per-sample losses: (N, d1, ...), or () for an unbatched (C,) input."""
    return tuple(shape[:1]) + tuple(shape[2:]) if len(shape) > 1 else ()


def _class_mass(target, weight, ignore_index, label_smoothing, n_classes, dtype):
    """q (M, C), the weight each log-probability gets: loss_n = -sum_c q[n, c] log softmax(x_n)[c].

    Class indices t_n: q[n, c] = (1 - eps) w[t_n] [c == t_n] + eps / C * w_c, and 0 for a row whose
    t_n is ``ignore_index``. Probabilities t_n (M, C): q[n, c] = w_c ((1 - eps) t_n[c] + eps / C).
    w = 1 without ``weight``; eps = ``label_smoothing``.
    """
    w = np.ones(n_classes, dtype) if weight is None else weight
    eps = dtype.type(label_smoothing)
    if target.ndim == 2:
        return w * ((1 - eps) * target + eps / n_classes)
    kept = target != ignore_index
    q = np.zeros((len(target), n_classes), dtype)
    rows, classes = np.flatnonzero(kept), target[kept]
    q[rows, classes] = (1 - eps) * w[classes]
    if label_smoothing:
        q[kept] += eps / n_classes * w
    return q


def _mean_divisor(target, weight, ignore_index):
    """What 'mean' divides the summed loss by, as torch: the summed weight w[t_n] of the samples not
    ignored (their count without ``weight``); with probability targets, the number of samples."""
    if target.ndim == 2:
        return len(target)
    kept = target[target != ignore_index]
    return len(kept) if weight is None else weight[kept].sum(dtype=weight.dtype)


def cross_entropy_forward(
    logits, target, reduction="mean", weight=None, ignore_index=-100, label_smoothing=0.0
) -> tuple[np.ndarray, Any]:
    """Softmax cross-entropy, fused: loss_n = -sum_c q[n, c] log softmax(logits_n)[c], which for a
    class index t_n alone is logsumexp(logits_n) - logits_n[t_n].

    q (``_class_mass``): class weights w (``weight``, (C,)), label smoothing eps, ``ignore_index``
    (those samples count 0) over class indices t_n, or probabilities (one-hot or soft) t_n:
        q[n, c] = (1 - eps) w[t_n] [c == t_n] + eps / C * w_c     or     w_c ((1 - eps) t_n[c] + eps / C).
    'mean' divides the sum by sum_n w[t_n] over the samples not ignored (probabilities: by M).

    Shapes: logits (N, C, d1, ...) or (C,); target (N, d1, ...) (or () for (C,)) integer class
    indices, or probabilities of the logits' shape and dtype -> loss () or, for 'none', (N, d1, ...).
    """
    rows, targets = _rows(logits), target.reshape(-1) if target.ndim < logits.ndim else _rows(target)
    log_probs, _ = log_softmax_forward(rows, dim=1)
    q = _class_mass(targets, weight, ignore_index, label_smoothing, rows.shape[1], rows.dtype)
    per_sample = -(q * np.where(q != 0, log_probs, 0)).sum(axis=1, dtype=rows.dtype)  # 0 * -inf: 0
    divisor = _mean_divisor(targets, weight, ignore_index)
    loss = _reduce_by(per_sample.reshape(_sample_shape(logits.shape)), reduction, divisor)
    # probability targets are differentiable too: dloss_n/dt_n[c] = -(1 - eps) w_c log softmax(logits_n)[c]
    dloss_dtarget = None
    if targets.ndim == 2:
        w = 1 if weight is None else weight
        dloss_dtarget = -(1 - rows.dtype.type(label_smoothing)) * w * log_probs
    # backward needs softmax(logits) = exp(log_probs), q, the divisor and where the rows came from.
    return loss, (np.exp(log_probs), q, reduction, divisor, logits.shape, dloss_dtarget)


def cross_entropy_backward(grad_output, cache, needs_input_grad=None):
    """dL/dlogits_n = (softmax(logits_n) * sum_c q[n, c] - q_n) * dL/dloss_n   (/ the divisor for
    'mean'); for a class index alone (q_n = onehot(t_n)), softmax(logits_n) - onehot(t_n).

    With probability targets, also dL/dt_n[c] = -(1 - eps) w_c log softmax(logits_n)[c] * dL/dloss_n
    (/ the divisor for 'mean'). ``needs_input_grad`` None: dL/dlogits alone; (logits, target) flags:
    the pair of gradients, None where not asked for (class indices have none)."""
    probs, q, reduction, divisor, shape, dloss_dtarget = cache
    wants_input, wants_target = (True, False) if needs_input_grad is None else needs_input_grad[:2]
    # 'mean' over no sample: the loss is 0/0 (NaN) and, as torch's, the gradients 0
    upstream = _upstream(grad_output, reduction, divisor, probs.dtype) if divisor else None
    grad = grad_target = None
    if wants_input:
        grad = (
            np.zeros_like(probs)
            if upstream is None
            else (probs * q.sum(axis=1, keepdims=True, dtype=probs.dtype) - q) * upstream
        )
        grad = _unrows(grad, shape)
    if wants_target and dloss_dtarget is not None:
        grad_target = np.zeros_like(dloss_dtarget) if upstream is None else dloss_dtarget * upstream
        grad_target = _unrows(grad_target, shape)
    return grad if needs_input_grad is None else (grad, grad_target)


def _reduce_by(per_sample, reduction, divisor):
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # no sample left: 0/0 = NaN, as torch, silently
            return per_sample.sum(dtype=per_sample.dtype) / per_sample.dtype.type(divisor)
    return _reduce(per_sample, reduction)


def nll_loss_forward(log_probs, target, reduction="mean", weight=None, ignore_index=-100) -> tuple[np.ndarray, Any]:
    """loss_n = -w[t_n] log_probs[n, t_n], 0 where t_n is ``ignore_index``; w = ``weight`` (C,) or 1.
    'mean' divides the sum by sum_n w[t_n] over the samples not ignored.

    Shapes: log_probs (N, C, d1, ...) or (C,) (e.g. from LogSoftmax); target (N, d1, ...) (or ())
    class indices -> loss () or, for 'none', (N, d1, ...).
    """
    rows, targets = _rows(log_probs), target.reshape(-1)
    q = _class_mass(targets, weight, ignore_index, 0.0, rows.shape[1], rows.dtype)
    per_sample = -(q * rows).sum(axis=1, dtype=rows.dtype)
    divisor = _mean_divisor(targets, weight, ignore_index)
    # backward needs only q (w[t_n] at t_n) and where the rows came from
    return _reduce_by(per_sample.reshape(_sample_shape(log_probs.shape)), reduction, divisor), (
        q,
        reduction,
        divisor,
        log_probs.shape,
    )


def nll_loss_backward(grad_output, cache) -> np.ndarray:
    """dL/dlog_probs[n, c] = -w[t_n] [c == t_n] * dL/dloss_n   (/ the divisor for 'mean'; 0 on
    ignored samples)."""
    q, reduction, divisor, shape = cache
    grad = -q * _upstream(grad_output, reduction, divisor, q.dtype) if divisor else np.zeros_like(q)
    return _unrows(grad, shape)


def mse_loss_forward(input, target, reduction="mean", weight=None) -> tuple[np.ndarray, Any]:
    """loss = mean (or sum) over all elements of (input - target)^2;  'none' keeps the shape.

    ``weight`` (input's shape, torch.nn.functional's): each squared error times its weight w, and
    'mean' divides by sum(w) instead of the number of elements.
    """
    diff = input - target
    squared = diff * diff if weight is None else weight * diff * diff
    if reduction == "mean" and weight is not None:
        loss = squared.sum(dtype=squared.dtype) / weight.sum(dtype=squared.dtype)
    elif reduction == "mean":
        loss = squared.mean(dtype=squared.dtype)
    elif reduction == "sum":
        loss = squared.sum(dtype=squared.dtype)
    else:
        loss = squared
    return loss, (diff, reduction, weight)  # backward needs only the difference (and the weights)


def mse_loss_backward(grad_output, cache) -> np.ndarray:
    """dL/dinput = 2 * w * (input - target) * dL/dloss   (w = 1 without weight;
    / number of elements for 'mean', / sum(w) with weight)"""
    diff, reduction, weight = cache
    g = np.asarray(grad_output, dtype=diff.dtype)
    if reduction == "mean":
        g = g / diff.dtype.type(diff.size if weight is None else weight.sum(dtype=diff.dtype))
    return 2 * diff * g if weight is None else 2 * weight * diff * g


# -- specs ------------------------------------------------------------------------------------------
def _check_reduction(where, reduction):
    if reduction not in REDUCTIONS:
        raise HandgradError(where, f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_class_targets(where, arrays, options, probabilities=False):
    """torch's signature (``size_average`` / ``reduce`` only at None) checked and turned into the
    options the pair takes; the layers' own check, so both front-ends word it alike."""
    from ..nn.loss import check_class_targets, refuse_deprecated

    refuse_deprecated(where, options["size_average"], options["reduce"])
    smoothing = options.get("label_smoothing", 0.0)
    check_class_targets(
        where, arrays["input"], arrays["target"], probabilities, options["weight"], options["ignore_index"], smoothing
    )
    checked = {
        "reduction": _check_reduction(where, options["reduction"]),
        "weight": options["weight"],
        "ignore_index": int(options["ignore_index"]),
    }
    return checked | ({"label_smoothing": float(smoothing)} if probabilities else {})


def _check_cross_entropy_targets(where, arrays, options):
    return _check_class_targets(where, arrays, options, probabilities=True)


def _check_mse_loss(where, arrays, options):
    """torch's signature: ``size_average`` / ``reduce`` only at None; ``weight`` of the input's shape."""
    from ..nn.loss import refuse_deprecated

    refuse_deprecated(where, options["size_average"], options["reduce"])
    x, target, weight = arrays["input"], arrays["target"], options["weight"]
    if x.shape != target.shape:
        raise ShapeError(
            where, f"expected target of the input's shape {fmt_shape(x.shape)}, got {fmt_shape(target.shape)}"
        )
    if weight is not None and weight.shape != x.shape:
        raise ShapeError(
            where, f"expected weight of the input's shape {fmt_shape(x.shape)}, got {fmt_shape(weight.shape)}"
        )
    checked_weight = None if weight is None else weight.astype(x.dtype, copy=False)
    return {"reduction": _check_reduction(where, options["reduction"]), "weight": checked_weight}


def _class_target_cases(make_input, smoothing=False):
    """Class indices (N, C) over the reductions, then class weights, ignored samples, label
    smoothing, (N, C, d1, d2) input and an unbatched (C,) one."""

    def cases(rng):
        for reduction in REDUCTIONS:
            yield Case(
                f"logits (4, 5), reduction {reduction}",
                (make_input(rng, (4, 5)), rng.integers(0, 5, 4)),
                {"reduction": reduction},
            )
        weight = rng.uniform(0.5, 2.0, 5)  # each case its own copy below: a case's arrays are its own
        yield Case("logits (4, 5), weight", (make_input(rng, (4, 5)), rng.integers(0, 5, 4)), {"weight": weight.copy()})
        yield Case(
            "logits (6, 5), weight, ignore_index 2",
            (make_input(rng, (6, 5)), np.array([2, 0, 4, 2, 1, 3])),
            {"weight": weight.copy(), "ignore_index": 2},
        )
        yield Case(
            "logits (2, 3, 2, 2), ignore_index -100, reduction none",
            (make_input(rng, (2, 3, 2, 2)), np.array([[[0, -100], [2, 1]], [[1, 1], [-100, 0]]])),
            {"reduction": "none"},
        )
        yield Case("logits (5,), target ()", (make_input(rng, (5,)), np.array(3)), {})
        if smoothing:
            yield Case(
                "logits (4, 5), label_smoothing 0.2, weight, reduction sum",
                (make_input(rng, (4, 5)), rng.integers(0, 5, 4)),
                {"label_smoothing": 0.2, "weight": weight.copy(), "reduction": "sum"},
            )
            yield Case(
                "logits (3, 4, 2), label_smoothing 0.1, ignore_index 0",
                (make_input(rng, (3, 4, 2)), np.array([[0, 1], [3, 0], [2, 2]])),
                {"label_smoothing": 0.1, "ignore_index": 0},
            )

    return cases


def _class_loss_reference(name):
    """torch's loss, taking its weights as an array too (a case's options hold arrays)."""

    def reference(torch):
        def loss(input, target, **options):
            weight = options.get("weight")
            if isinstance(weight, np.ndarray):
                options["weight"] = torch.from_numpy(weight.copy()).to(input.dtype)
            return getattr(torch.nn.functional, name)(input, target, **options)

        return loss

    return reference


def _mse_loss_cases(rng):
    for reduction in REDUCTIONS:
        yield Case(
            f"x (3, 4), reduction {reduction}",
            (rng.standard_normal((3, 4)), rng.standard_normal((3, 4))),
            {"reduction": reduction},
        )
    for reduction in REDUCTIONS:
        yield Case(
            f"x (2, 3), weight, reduction {reduction}",
            (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))),
            {"reduction": reduction, "weight": rng.uniform(0.5, 2.0, (2, 3))},
        )


def _mse_loss_gradients(grad_input, needs):
    # the loss depends on input - target only, so its gradient in the target is the negative
    return grad_input if needs[0] else None, -grad_input if needs[1] else None


# torch.nn.functional's signatures after (input, target); size_average and reduce only at None
_NLL_OPTIONS = (
    ("weight", None),
    ("size_average", None),
    ("ignore_index", -100),
    ("reduce", None),
    ("reduction", "mean"),
)
register(
    OpSpec(
        "cross_entropy",
        cross_entropy_forward,
        cross_entropy_backward,
        _class_loss_reference("cross_entropy"),
        _class_target_cases(lambda rng, shape: rng.standard_normal(shape), smoothing=True),
        tensors=("input", "target"),
        integer=("target",),
        options=_NLL_OPTIONS + (("label_smoothing", 0.0),),
        needs_input_grad=True,
        bridge=Bridge("CrossEntropyLoss", function="CrossEntropyFunction", check=_check_cross_entropy_targets),
    ),
    OpSpec(
        "nll_loss",
        nll_loss_forward,
        nll_loss_backward,
        _class_loss_reference("nll_loss"),
        _class_target_cases(
            lambda rng, shape: log_softmax_forward(rng.standard_normal(shape), min(1, len(shape) - 1))[0]
        ),
        tensors=("input", "target"),
        integer=("target",),
        options=_NLL_OPTIONS,
        bridge=Bridge("NLLLoss", function="NLLLossFunction", check=_check_class_targets),
    ),
    OpSpec(
        "mse_loss",
        mse_loss_forward,
        mse_loss_backward,
        _class_loss_reference("mse_loss"),
        _mse_loss_cases,
        tensors=("input", "target"),
        # torch.nn.functional's signature after (input, target)
        options=(("size_average", None), ("reduce", None), ("reduction", "mean"), ("weight", None)),
        gradients=_mse_loss_gradients,
        bridge=Bridge("MSELoss", check=_check_mse_loss, casts=("target",)),
    ),
)
