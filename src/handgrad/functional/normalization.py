"""Normalisation: BatchNorm over the channel axis (axis 1) of (N, C), (N, C, L) or (N, C, H, W), and
LayerNorm over the trailing ``normalized_shape`` axes of any input. Both share the input gradient
of a normalisation, ``normalized_input_grad``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DTypeError, HandgradError, ShapeError, fmt_shape
from .spec import REQUIRED, Bridge, Case, OpSpec, register

ALL = (True, True, True)


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(
    x, weight=None, bias=None, running_mean=None, running_var=None, training=False, momentum=0.1, eps=1e-5
) -> tuple[np.ndarray, Any]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (weight and bias each optional).

    Training: mean and (biased) var of this batch over every axis but 1; the running statistics are
    updated in place, running = (1 - momentum) * running + momentum * batch, with the unbiased var
    (var * m / (m - 1), m values per channel), as PyTorch. Eval: the running statistics. An empty
    input gives an empty output and leaves the running statistics as they are, as PyTorch.
    """
    if x.size == 0:  # no statistics to take (a 1-D input has no channel axis: none then)
        channels = x.shape[1] if x.ndim > 1 else 0
        return x.copy(), (x.copy(), np.ones(channels, x.dtype), weight, bias is not None, training)
    axes = _channel_axes(x)
    if training:
        mean = x.mean(axis=axes, dtype=x.dtype)
        var = x.var(axis=axes, dtype=x.dtype)
        if running_mean is not None:
            m = x.size // x.shape[1]
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean, running_var
    invstd = 1 / np.sqrt(var + x.dtype.type(eps))
    xhat = (x - _per_channel(mean, x.ndim)) * _per_channel(invstd, x.ndim)
    out = xhat if weight is None else xhat * _per_channel(weight, x.ndim)
    out = out if bias is None else out + _per_channel(bias, x.ndim)
    # backward needs the normalised input, 1/std, whether there is a bias and whether the
    # statistics came from this batch.
    return out, (xhat, invstd, weight, bias is not None, training)


def normalized_input_grad(dxhat, xhat, invstd, axes) -> np.ndarray:
    """dL/dx when xhat = (x - mean) * invstd with mean and var taken over ``axes`` (m values each):

    grad_input = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))

    ``invstd`` broadcasts against xhat. The same for BatchNorm (every axis but the channel) and
    LayerNorm (the normalised trailing axes).
    """
    m = math.prod(xhat.shape[a] for a in axes)
    sum_dxhat = dxhat.sum(axis=axes, keepdims=True)
    sum_dxhat_xhat = (dxhat * xhat).sum(axis=axes, keepdims=True)
    return invstd / m * (m * dxhat - sum_dxhat - xhat * sum_dxhat_xhat)


def batch_norm_backward(grad_output, cache, needs_input_grad=ALL) -> tuple:
    """With G = dL/dy, m values per channel and sums over every axis but the channel:

    grad_weight = sum(G * xhat)            grad_bias = sum(G)
    dxhat       = G * weight               (G without a weight)
    training:   grad_input = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
    eval:       grad_input = dxhat * invstd          (mean and var are constants then)
    """
    xhat, invstd, weight, has_bias, training = cache
    if xhat.size == 0:  # an empty batch: every sum is 0
        zeros = np.zeros_like(invstd)
        return (
            np.zeros_like(grad_output) if needs_input_grad[0] else None,
            zeros if weight is not None and needs_input_grad[1] else None,
            zeros.copy() if has_bias and needs_input_grad[2] else None,
        )
    axes, ndim = _channel_axes(xhat), xhat.ndim
    grad_weight = (grad_output * xhat).sum(axis=axes) if weight is not None and needs_input_grad[1] else None
    grad_bias = grad_output.sum(axis=axes) if has_bias and needs_input_grad[2] else None
    grad_input = None
    if needs_input_grad[0]:
        dxhat = grad_output if weight is None else grad_output * _per_channel(weight, ndim)
        if training:
            grad_input = normalized_input_grad(dxhat, xhat, _per_channel(invstd, ndim), axes)
        else:
            grad_input = dxhat * _per_channel(invstd, ndim)
    return grad_input, grad_weight, grad_bias


def layer_norm_forward(x, weight=None, bias=None, *, normalized_shape, eps=1e-5) -> tuple[np.ndarray, Any]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) var over the last
    len(normalized_shape) axes of each sample; weight and bias (each optional) have normalized_shape."""
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(axis=axes, dtype=x.dtype, keepdims=True)
    var = x.var(axis=axes, dtype=x.dtype, keepdims=True)
    invstd = 1 / np.sqrt(var + x.dtype.type(eps))
    xhat = (x - mean) * invstd
    out = xhat if weight is None else xhat * weight
    out = out if bias is None else out + bias
    # backward needs the normalised input, 1/std (one per sample), and which parameters there are
    return out, (xhat, invstd, weight, bias is not None, axes)


def layer_norm_backward(grad_output, cache, needs_input_grad=ALL) -> tuple:
    """With G = dL/dy, m = prod(normalized_shape), sums over the normalised axes for grad_input and
    over the others (the samples) for the parameters:

    grad_weight = sum(G * xhat)            grad_bias = sum(G)
    dxhat       = G * weight               (G without a weight)
    grad_input  = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
    """
    xhat, invstd, weight, has_bias, axes = cache
    samples = tuple(range(xhat.ndim - len(axes)))
    grad_weight = (grad_output * xhat).sum(axis=samples) if weight is not None and needs_input_grad[1] else None
    grad_bias = grad_output.sum(axis=samples) if has_bias and needs_input_grad[2] else None
    grad_input = None
    if needs_input_grad[0]:
        dxhat = grad_output if weight is None else grad_output * weight
        grad_input = normalized_input_grad(dxhat, xhat, invstd, axes)
    return grad_input, grad_weight, grad_bias


# -- checks shared by the layers and the bridge ----------------------------------------------------------
def check_batch_norm(where, x, running_mean, running_var, weight, bias, training) -> None:
    """The input and the per-channel tensors of a batch normalisation, as torch checks them (an
    empty input is returned empty whatever its shape, so only its statistics' shapes are checked)."""
    if x.ndim < 2 and x.size:
        raise ShapeError(where, f"expected input of shape (N, C, *) (at least 2-D), got {fmt_shape(x.shape)}")
    channels = x.shape[1] if x.ndim > 1 else 0
    if (running_mean is None) != (running_var is None):
        raise HandgradError(where, "running_mean and running_var must both be None or both be given")
    if running_mean is None and not training:
        raise HandgradError(
            where, "running_mean and running_var are needed when training=False (or pass training=True)"
        )
    named = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, value in named.items():
        if value is None:
            continue
        if value.shape != (channels,):
            raise ShapeError(
                where,
                f"expected {name} of shape ({channels},) (one per channel of input {fmt_shape(x.shape)}), "
                f"got {fmt_shape(value.shape)}",
            )
        if value.dtype != x.dtype:
            raise DTypeError(where, f"expected {name} of dtype {x.dtype.name} (the input's), got {value.dtype.name}")
    if training and x.size and x.size // channels == 1:
        raise ShapeError(where, f"expected more than 1 value per channel when training, got input {fmt_shape(x.shape)}")


def layer_norm_shape(where, normalized_shape) -> tuple[int, ...]:
    """normalized_shape as torch takes it (an int, or a sequence of ints), as a tuple."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or any(d < 0 for d in shape) or isinstance(normalized_shape, bool):
        raise HandgradError(
            where, f"expected normalized_shape to be an int or a sequence of sizes >= 0, got {normalized_shape!r}"
        )
    return shape


def check_layer_norm(where, x, normalized_shape, weight, bias) -> None:
    """The input must end in normalized_shape, and weight and bias (where given) have that shape."""
    d = len(normalized_shape)
    if x.ndim < d or tuple(x.shape[x.ndim - d :]) != tuple(normalized_shape):
        raise ShapeError(
            where,
            f"expected input of shape (*, {', '.join(map(str, normalized_shape))}) (ending in normalized_shape "
            f"{fmt_shape(normalized_shape)}), got {fmt_shape(x.shape)}",
        )
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and tuple(value.shape) != tuple(normalized_shape):
            raise ShapeError(
                where,
                f"expected {name} of shape normalized_shape {fmt_shape(normalized_shape)}, "
                f"got {fmt_shape(value.shape)}",
            )


# -- specs -----------------------------------------------------------------------------------------
def _batch_norm_reference(torch):
    def batch_norm(
        input, weight=None, bias=None, running_mean=None, running_var=None, training=False, momentum=0.1, eps=1e-5
    ):
        # copies: torch updates running statistics in place, and they are the caller's arrays
        stats = [
            None if s is None else torch.from_numpy(np.array(s, dtype=np.float64)).to(input.dtype)
            for s in (running_mean, running_var)
        ]
        return torch.nn.functional.batch_norm(
            input,
            *stats,
            weight,
            bias,
            training=training or stats[0] is None,
            momentum=0.0 if momentum is None else momentum,
            eps=eps,
        )

    return batch_norm


#: how a case names its parameters: none, a weight alone, or both (the default, unnamed)
_PARAMETERS = (", no affine", ", weight only", "")


def _batch_norm_cases(rng):
    """Training and eval over (N, C), (N, C, L) and (N, C, H, W); then without affine parameters,
    with a weight and no bias, without running statistics, and with other momentum and eps."""
    configurations = [
        ((5, 3), True, 2, {}),
        ((2, 3, 3, 3), True, 2, {}),
        ((5, 3), False, 2, {}),
        ((2, 3, 3, 3), False, 2, {}),
        ((4, 3, 5), True, 2, {"momentum": 0.3, "eps": 1e-3}),
        ((4, 3, 5), False, 2, {}),
        ((4, 3), True, 0, {}),
        ((2, 3, 2, 2), False, 1, {}),
        ((4, 3, 2), True, 0, {"running_mean": None, "running_var": None}),
    ]
    for shape, training, parameters, options in configurations:
        running = {"running_mean": rng.standard_normal(3), "running_var": rng.uniform(0.5, 2.0, 3)}
        tensors = (rng.standard_normal(shape) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3))
        config = f"x {shape}, {'training' if training else 'eval'}" + _PARAMETERS[parameters]
        config += "".join(f", {k} {v}" for k, v in options.items() if k != "running_var")
        yield Case(config, tensors[: 1 + parameters], running | {"training": training} | options)


def _check_batch_norm(where, arrays, options):
    training = bool(options["training"])
    running_mean, running_var = options["running_mean"], options["running_var"]
    check_batch_norm(where, arrays["input"], running_mean, running_var, arrays["weight"], arrays["bias"], training)
    return {
        "running_mean": running_mean,
        "running_var": running_var,
        "training": training,
        "momentum": float(options["momentum"]),
        "eps": float(options["eps"]),
    }


#: the input layout of each torch.nn BatchNorm, as its forward checks it
BATCH_NORM_LAYOUTS = {"BatchNorm1d": ((2, 3), "(N, C) or (N, C, L)"), "BatchNorm2d": ((4,), "(N, C, H, W)")}


def _batch_norm_twin_options(module, inputs) -> dict:
    """torch.nn's BatchNorm forward before its call of batch_norm: the input's rank checked, the
    batch counted, momentum None as the cumulative average 1 / num_batches_tracked, and the
    batch's own statistics wherever no running ones are tracked."""
    ndims, layout = BATCH_NORM_LAYOUTS[type(module).__name__]
    x = inputs[0]
    if x.dim() not in ndims:
        rank = " or ".join(f"{d}-D" for d in ndims)
        raise ShapeError(
            f"handgrad.torch.{type(module).__name__}",
            f"expected input of shape {layout} ({rank}), got shape {fmt_shape(tuple(x.shape))} ({x.dim()}-D)",
        )
    momentum = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:
            momentum = 1.0 / float(module.num_batches_tracked)
    tracked = not module.training or module.track_running_stats
    return {
        "running_mean": module.running_mean if tracked else None,
        "running_var": module.running_var if tracked else None,
        "training": module.training or (module.running_mean is None and module.running_var is None),
        "momentum": momentum,
    }


def _layer_norm_reference(torch):
    def layer_norm(input, weight=None, bias=None, normalized_shape=None, eps=1e-5):
        return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)

    return layer_norm


def _layer_norm_cases(rng):
    """Over the last axis, the last two and all three; without affine parameters, with a weight and
    no bias, and with eps."""
    for shape, normalized, parameters, eps in (
        ((4, 5), (5,), 2, 1e-5),
        ((2, 3, 4), (3, 4), 2, 1e-5),
        ((2, 2, 3), (2, 2, 3), 2, 0.1),
        ((3, 4), (4,), 0, 1e-5),
        ((2, 3, 4), (4,), 1, 1e-3),
    ):
        tensors = (rng.standard_normal(shape) * 2 + 1, rng.standard_normal(normalized), rng.standard_normal(normalized))
        config = f"x {shape}, normalized_shape {normalized}" + _PARAMETERS[parameters]
        yield Case(config + f", eps {eps}", tensors[: 1 + parameters], {"normalized_shape": normalized, "eps": eps})


def _check_layer_norm(where, arrays, options):
    normalized_shape = layer_norm_shape(where, options["normalized_shape"])
    check_layer_norm(where, arrays["input"], normalized_shape, arrays["weight"], arrays["bias"])
    return {"normalized_shape": normalized_shape, "eps": float(options["eps"])}


def _normalization_spec(name, forward, backward, reference, cases, options, bridge) -> OpSpec:
    """An op of an input and an optional weight and bias, whose backward takes needs_input_grad."""
    return OpSpec(
        name,
        forward,
        backward,
        reference,
        cases,
        tensors=("input", "weight", "bias"),
        optional=("weight", "bias"),
        needs_input_grad=True,
        options=options,
        bridge=bridge,
    )


register(
    _normalization_spec(
        "batch_norm",
        batch_norm_forward,
        batch_norm_backward,
        _batch_norm_reference,
        _batch_norm_cases,
        (("running_mean", REQUIRED), ("running_var", REQUIRED), ("training", False), ("momentum", 0.1), ("eps", 1e-5)),
        Bridge(
            "BatchNorm1d",
            function="BatchNormFunction",
            check=_check_batch_norm,
            signature=("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
            modules=("BatchNorm2d",),
            twin_options=_batch_norm_twin_options,
        ),
    ),
    _normalization_spec(
        "layer_norm",
        layer_norm_forward,
        layer_norm_backward,
        _layer_norm_reference,
        _layer_norm_cases,
        (("normalized_shape", REQUIRED), ("eps", 1e-5)),
        Bridge("LayerNorm", check=_check_layer_norm, signature=("input", "normalized_shape", "weight", "bias", "eps")),
    ),
)
