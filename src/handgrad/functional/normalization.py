"""Batch normalisation over the channel axis (axis 1) of (N, C), (N, C, L) or (N, C, H, W)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .spec import REQUIRED, Case, OpSpec, register

ALL = (True, True, True)


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(
    x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5
) -> tuple[np.ndarray, Any]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel.

    Training: mean and (biased) var of this batch over every axis but 1; the running statistics are
    updated in place, running = (1 - momentum) * running + momentum * batch, with the unbiased var
    (var * m / (m - 1), m values per channel), as PyTorch. Eval: the running statistics.
    """
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
    out = xhat if weight is None else xhat * _per_channel(weight, x.ndim) + _per_channel(bias, x.ndim)
    # backward needs the normalised input, 1/std and whether the statistics came from this batch.
    return out, (xhat, invstd, weight, training)


def batch_norm_backward(grad_output, cache, needs_input_grad=ALL) -> tuple:
    """With G = dL/dy, m values per channel and sums over every axis but the channel:

    grad_weight = sum(G * xhat)            grad_bias = sum(G)
    dxhat       = G * weight
    training:   grad_input = invstd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
    eval:       grad_input = dxhat * invstd          (mean and var are constants then)
    """
    xhat, invstd, weight, training = cache
    axes, ndim = _channel_axes(xhat), xhat.ndim
    affine = weight is not None
    grad_weight = (grad_output * xhat).sum(axis=axes) if affine and needs_input_grad[1] else None
    grad_bias = grad_output.sum(axis=axes) if affine and needs_input_grad[2] else None
    grad_input = None
    if needs_input_grad[0]:
        dxhat = grad_output * _per_channel(weight, ndim) if affine else grad_output
        if training:
            m = xhat.size // xhat.shape[1]
            sum_dxhat = _per_channel(dxhat.sum(axis=axes), ndim)
            sum_dxhat_xhat = _per_channel((dxhat * xhat).sum(axis=axes), ndim)
            grad_input = _per_channel(invstd / m, ndim) * (m * dxhat - sum_dxhat - xhat * sum_dxhat_xhat)
        else:
            grad_input = dxhat * _per_channel(invstd, ndim)
    return grad_input, grad_weight, grad_bias


# -- spec -------------------------------------------------------------------------------------------
def _batch_norm_reference(torch):
    def batch_norm(
        input, weight=None, bias=None, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5
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


def _batch_norm_cases(rng):
    for shape, training in (((5, 3), True), ((2, 3, 3, 3), True), ((5, 3), False), ((2, 3, 3, 3), False)):
        running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
        yield Case(
            f"x {shape}, {'training' if training else 'eval'}",
            (rng.standard_normal(shape) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3)),
            {"running_mean": running_mean, "running_var": running_var, "training": training},
        )


register(
    OpSpec(
        "batch_norm",
        batch_norm_forward,
        batch_norm_backward,
        _batch_norm_reference,
        _batch_norm_cases,
        tensors=("input", "weight", "bias"),
        optional=("weight", "bias"),
        needs_input_grad=True,
        options=(
            ("running_mean", REQUIRED),
            ("running_var", REQUIRED),
            ("training", REQUIRED),
            ("momentum", 0.1),
            ("eps", 1e-5),
        ),
    )
)
