"""The optimizers' updates of one parameter, in place: the readable references.

``SGD``, ``Adam``/``AdamW``, ``RMSprop`` and ``Adagrad`` keep the state and the hyperparameters; each
step they call one of these per parameter (through ``handgrad.kernels.op``, which runs the compiled one-pass version in
``kernels/optim.py`` unless the references are asked for). Arithmetic stays in the parameter's
dtype: every scalar is cast to it first, so float32 is never promoted.

Two things keep a long run fast without changing its math:

- ``flush``: state that only ever decays (the momentum of a dead ReLU unit, whose gradient is 0)
  sinks geometrically into subnormal floats, which x86 CPUs compute 10-100x slower. The optimizer
  asks every few steps for subnormal state entries to be set to zero; that changes a parameter by
  at most lr * 1e-38, below the rounding of any normal value.
- ``scratch``: a parameter-shaped work array, reused across steps, for the temporaries; a fresh
  parameter-sized array per operation costs more (allocation, page faults) than the math.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "adagrad_update",
    "adam_update",
    "flush_subnormals",
    "lerp_",
    "rmsprop_update",
    "sgd_update",
    "sgd_update_group",
]


def flush_subnormals(*arrays) -> None:
    """Set the subnormal entries (0 < |v| < the dtype's smallest normal) of each array to zero."""
    for array in arrays:
        array[np.abs(array) < np.finfo(array.dtype).tiny] = 0


def sgd_update(
    param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, flush=False, scratch=None
) -> np.ndarray | None:
    """One step of ``torch.optim.SGD`` on ``param``, in place; returns the momentum buffer.

    With g = grad::

        d_p = g                                       (d_p = -g with maximize)
        d_p = d_p + weight_decay * p                  (L2 penalty)
        buf = d_p                                     first step (momentum_buffer is None), when momentum != 0
        buf = momentum * buf + (1 - dampening) * d_p  later steps
        d_p = d_p + momentum * buf  with nesterov,  else  d_p = buf
        p   = p - lr * d_p

    ``momentum_buffer`` is updated in place (or created on the first step) and returned; None when
    momentum is 0. ``grad`` is never modified.
    """
    cast = param.dtype.type
    lr, momentum, dampening, weight_decay = cast(lr), cast(momentum), cast(dampening), cast(weight_decay)
    if scratch is None:
        scratch = np.empty_like(param)

    d_p = grad
    if weight_decay != 0:
        d_p = np.multiply(param, weight_decay, out=scratch)
        d_p += -grad if maximize else grad  # d_p = g + weight_decay * p
    elif maximize:
        d_p = np.negative(grad, out=scratch)  # d_p = -g
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d_p.copy()  # buf = d_p on the first step
        else:
            momentum_buffer *= momentum  # buf = momentum * buf + (1 - dampening) * d_p
            momentum_buffer += d_p if dampening == 0 else (1 - dampening) * d_p
            if flush:
                flush_subnormals(momentum_buffer)
        d_p = d_p + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= np.multiply(d_p, lr, out=scratch)  # p = p - lr * d_p
    return momentum_buffer


def sgd_update_group(
    params, grads, buffers, lr, momentum, dampening, weight_decay, nesterov, maximize, flush=False, scratch=None
) -> list:
    """``sgd_update`` on each parameter of a group in turn: ``params``, ``grads``, ``buffers`` (the
    momentum buffers, None where a parameter has none yet) and ``scratch`` (None, or one work array
    per parameter) are lists in the same order. Returns the momentum buffers, in that order.
    (One call for the whole group: the compiled version updates every parameter in one pass.)"""
    scratch = [None] * len(params) if scratch is None else scratch
    return [
        sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, flush, work)
        for p, g, buf, work in zip(params, grads, buffers, scratch)
    ]


def adam_update(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    step,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    decoupled_weight_decay,
    flush=False,
    scratch=None,
) -> None:
    """One step of ``torch.optim.Adam`` (``decoupled_weight_decay``: ``AdamW``) on ``param``, in place.

    ``step`` is t, this parameter's update count including this one (1 on the first step). With
    m = exp_avg, v = exp_avg_sq (zeros before the first step) and g = grad::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                        (L2; decoupled: p = p * (1 - lr * weight_decay))
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, v)     (amsgrad only)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps      (eps outside the square root)
        p = p - lr / (1 - beta1**t) * m / denom

    exp_avg, exp_avg_sq and max_exp_avg_sq (None unless amsgrad) are updated in place.
    """
    cast = param.dtype.type
    if scratch is None:
        scratch = np.empty_like(param)

    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= cast(1 - lr * weight_decay)  # p = p * (1 - lr * weight_decay)
        else:
            g = g + cast(weight_decay) * param  # g = g + weight_decay * p

    exp_avg *= cast(beta1)  # m = beta1 * m + (1 - beta1) * g
    exp_avg += cast(1 - beta1) * g
    exp_avg_sq *= cast(beta2)  # v = beta2 * v + (1 - beta2) * g * g
    exp_avg_sq += cast(1 - beta2) * g * g
    if flush:
        flush_subnormals(exp_avg, exp_avg_sq)
    v = exp_avg_sq
    if amsgrad:
        v = np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)

    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = np.sqrt(v, out=scratch)  # denom = sqrt(v) / sqrt(bc2) + eps
    denom /= cast(math.sqrt(bias_correction2))
    denom += cast(eps)
    param -= cast(lr / bias_correction1) * (exp_avg / denom)  # p = p - lr / bc1 * m / denom


def lerp_(start, end, weight):
    """``start`` moved in place the fraction ``weight`` of the way to ``end``, as ``torch.lerp_``
    computes it (the form that rounds least for each half of the weights)::

        start = start + weight * (end - start)          |weight| < 0.5
        start = end - (end - start) * (1 - weight)      otherwise
    """
    cast = start.dtype.type
    if abs(weight) < 0.5:
        start += cast(weight) * (end - start)
    else:
        np.subtract(end, (end - start) * cast(1 - weight), out=start)
    return start


def _l2_gradient(param, grad, weight_decay, maximize):
    """g = grad (-grad with maximize), then g = g + weight_decay * p (the L2 penalty); ``grad`` unmodified."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + param.dtype.type(weight_decay) * param
    return g


def rmsprop_update(
    param,
    grad,
    square_avg,
    grad_avg,
    momentum_buffer,
    lr,
    alpha,
    eps,
    weight_decay,
    momentum,
    centered,
    maximize,
    flush=False,
    scratch=None,
):
    """One step of ``torch.optim.RMSprop`` on ``param``, in place.

    With v = square_avg, m = grad_avg (centered only), buf = momentum_buffer (momentum > 0 only),
    all zeros before the first step, and g = grad::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                         (L2 penalty)
        v = alpha * v + (1 - alpha) * g * g
        m = lerp(m, g, 1 - alpha)  = alpha * m + (1 - alpha) * g      (centered)
        avg = sqrt(v - m * m) + eps    centered,   else   avg = sqrt(v) + eps
        buf = momentum * buf + g / avg;   p = p - lr * buf             (momentum > 0)
        p = p - lr * g / avg                                           (otherwise)

    square_avg, grad_avg and momentum_buffer are updated in place; ``grad`` is never modified.
    """
    cast = param.dtype.type
    if scratch is None:
        scratch = np.empty_like(param)

    g = _l2_gradient(param, grad, weight_decay, maximize)
    square_avg *= cast(alpha)  # v = alpha * v + (1 - alpha) * g * g
    square_avg += cast(1 - alpha) * g * g
    if centered:
        lerp_(grad_avg, g, 1 - alpha)  # m = lerp(m, g, 1 - alpha)
    if flush:
        flush_subnormals(*(a for a in (square_avg, grad_avg) if a is not None))
    if centered:
        avg = np.multiply(grad_avg, grad_avg, out=scratch)  # avg = sqrt(v - m * m) + eps
        np.subtract(square_avg, avg, out=avg)
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(square_avg, out=scratch)  # avg = sqrt(v) + eps
    avg += cast(eps)
    if momentum > 0:
        momentum_buffer *= cast(momentum)  # buf = momentum * buf + g / avg
        momentum_buffer += g / avg
        if flush:
            flush_subnormals(momentum_buffer)
        param -= cast(lr) * momentum_buffer  # p = p - lr * buf
    else:
        param -= (cast(lr) * g) / avg  # p = p - lr * g / avg


def adagrad_update(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, maximize, scratch=None):
    """One step of ``torch.optim.Adagrad`` on ``param``, in place.

    ``step`` is t, this parameter's update count including this one (1 on the first step). With
    s = state_sum (``initial_accumulator_value`` before the first step) and g = grad::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                         (L2 penalty)
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)

    ``state_sum`` is updated in place (it only grows, so no subnormal flush is needed).
    """
    cast = param.dtype.type
    if scratch is None:
        scratch = np.empty_like(param)

    g = _l2_gradient(param, grad, weight_decay, maximize)
    clr = lr / (1 + (step - 1) * lr_decay)  # clr = lr / (1 + (t - 1) * lr_decay)
    state_sum += g * g  # s = s + g * g
    std = np.sqrt(state_sum, out=scratch)  # std = sqrt(s) + eps
    std += cast(eps)
    param -= (cast(clr) * g) / std  # p = p - clr * g / std
