"""The optimizer updates, compiled: ``optim/functional.py``'s formulas as one pass per parameter.

The references make four to ten passes over every parameter (a multiply, an add and a subtract per
formula line, each through memory); here every element is read once and its parameter and state
written once, with the subnormal flush folded into the same pass.

SGD updates a whole parameter group in one call (``sgd_update_group``): one Python call per
parameter cost more than the update of the small ones (a bias, the last layer). The group's values,
laid end to end, are cut into one run per thread from ``SPLIT_MIN_SIZE`` values on (the MLP's 266k):
the pass is memory-bound, and a second core brings its own cache bandwidth. Under the workqueue and
omp threading layers a parallel region's start-up cost more than it saved; with tbb's pool (the
default) the MLP's training step measured as fast or faster with the split (paired blocks of steps,
on a busy 2-core machine: a quiet run should confirm it). The other updates run per parameter,
serially.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from numba import njit, prange

from .. import _threads
from ..optim import functional as reference
from . import COMPILED_DTYPES

__all__ = ["adagrad_update", "adam_update", "rmsprop_update", "sgd_update", "sgd_update_group"]


@njit(cache=True)
def _sgd(param, grad, buf, lo, hi, first, hyper):
    """For each element i in [lo, hi): d_p = g + weight_decay * p; buf = momentum * buf + (1 -
    dampening) * d_p (buf = d_p on the first step); d_p = d_p + momentum * buf (nesterov) or buf;
    p = p - lr * d_p. ``hyper``: (lr, momentum, 1 - dampening, weight_decay, nesterov, maximize,
    flush, tiny), the numbers in the parameter's dtype."""
    lr, momentum, one_minus_dampening, weight_decay, nesterov, maximize, flush, tiny = hyper
    has_momentum = momentum != 0
    zero = tiny - tiny  # 0 in the parameter's dtype: a literal 0 would promote float32 math to float64
    flush_below = tiny if flush else zero  # a select per element, not a branch: the loop vectorises
    for i in range(np.uintp(lo), np.uintp(hi)):
        d_p = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            d_p = param[i] * weight_decay + d_p
        if has_momentum:
            if first:
                b = d_p
            else:
                b = buf[i] * momentum + one_minus_dampening * d_p
                if abs(b) < flush_below:
                    b = zero
            buf[i] = b
            d_p = d_p + momentum * b if nesterov else b
        param[i] = param[i] - d_p * lr


@njit(cache=True)
def _sgd_group(params, grads, bufs, first, hyper):
    """``_sgd`` over every parameter of a group, one after the other (tuples of flat arrays;
    ``first[t]``: parameter t's first momentum step)."""
    for t in range(len(params)):
        _sgd(params[t], grads[t], bufs[t], 0, params[t].size, first[t], hyper)


@njit(parallel=True, cache=True)
def _sgd_group_split(params, grads, bufs, first, hyper, offsets, n_parts):
    """The same as ``_sgd_group``, the parameters laid end to end (parameter t at
    [offsets[t], offsets[t + 1])) and cut into ``n_parts`` equal runs, one per thread."""
    total = offsets[-1]
    for part in prange(n_parts):
        start, stop = total * part // n_parts, total * (part + 1) // n_parts
        for t in range(len(params)):
            lo, hi = max(start, offsets[t]) - offsets[t], min(stop, offsets[t + 1]) - offsets[t]
            if lo < hi:
                _sgd(params[t], grads[t], bufs[t], lo, hi, first[t], hyper)


@njit(cache=True, error_model="numpy")  # IEEE division (no zero check per element), so the loop vectorises
def _adam(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    decay,
    weight_decay,
    sqrt_bias_correction2,
    eps,
    step_size,
    amsgrad,
    maximize,
    flush,
    tiny,
):
    """For each element: m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;
    v = max(max_v, v) (amsgrad); p = p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
    ``decay`` = 1 - lr * weight_decay (decoupled, else 1); ``weight_decay`` the L2 term (else 0)."""
    zero = tiny - tiny  # 0 in the parameter's dtype: a literal 0 would promote float32 math to float64
    flush_below = tiny if flush else zero  # a select per element, not a branch: the loop vectorises
    for i in range(np.uintp(param.size)):
        g = -grad[i] if maximize else grad[i]
        p = param[i] * decay
        if weight_decay != 0:
            g = g + weight_decay * p
        m = exp_avg[i] * beta1 + one_minus_beta1 * g
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
        if abs(m) < flush_below:
            m = zero
        if abs(v) < flush_below:
            v = zero
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v_max = max_exp_avg_sq[i]
            if v > v_max or v != v:  # NaN propagates, as np.maximum
                v_max = v
            max_exp_avg_sq[i] = v_max
            v = v_max
        param[i] = p - step_size * (m / (np.sqrt(v) / sqrt_bias_correction2 + eps))


@njit(cache=True, error_model="numpy")
def _rmsprop(
    param,
    grad,
    square_avg,
    grad_avg,
    buf,
    lr,
    alpha,
    one_minus_alpha,
    alpha_again,
    eps,
    weight_decay,
    momentum,
    centered,
    maximize,
    flush,
    tiny,
):
    """For each element: v = alpha * v + (1 - alpha) * g * g; m = lerp(m, g, 1 - alpha) (centered);
    avg = sqrt(v - m * m) + eps (else sqrt(v) + eps); buf = momentum * buf + g / avg, p = p - lr * buf
    (momentum > 0), else p = p - lr * g / avg. ``alpha_again`` = 1 - (1 - alpha), as the reference's lerp rounds it."""
    zero = tiny - tiny  # 0 in the parameter's dtype: a literal 0 would promote float32 math to float64
    flush_below = tiny if flush else zero
    has_momentum = momentum > 0
    small_weight = abs(one_minus_alpha) < 0.5  # torch.lerp's two forms (see functional.lerp_)
    for i in range(np.uintp(param.size)):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g = g + weight_decay * param[i]
        v = square_avg[i] * alpha + one_minus_alpha * g * g
        if abs(v) < flush_below:
            v = zero
        square_avg[i] = v
        if centered:
            m = grad_avg[i]
            m = m + one_minus_alpha * (g - m) if small_weight else g - (g - m) * alpha_again
            if abs(m) < flush_below:
                m = zero
            grad_avg[i] = m
            avg = np.sqrt(v - m * m) + eps
        else:
            avg = np.sqrt(v) + eps
        if has_momentum:
            b = buf[i] * momentum + g / avg
            if abs(b) < flush_below:
                b = zero
            buf[i] = b
            param[i] = param[i] - lr * b
        else:
            param[i] = param[i] - (lr * g) / avg


@njit(cache=True, error_model="numpy")
def _adagrad(param, grad, state_sum, clr, weight_decay, eps, maximize):
    """For each element: s = s + g * g; p = p - clr * g / (sqrt(s) + eps)."""
    for i in range(np.uintp(param.size)):
        g = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            g = g + weight_decay * param[i]
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = param[i] - (clr * g) / (np.sqrt(s) + eps)


def _flat(a):
    return a.reshape(-1)


_TINY = {
    np.dtype(np.float32): np.float32(np.finfo(np.float32).tiny),
    np.dtype(np.float64): np.float64(np.finfo(np.float64).tiny),
}  # the smallest normal value


def _tiny(dtype):
    return _TINY[dtype] if dtype in _TINY else dtype.type(np.finfo(dtype).tiny)


def _or_reference(reference_update):
    """Run the decorated compiled update, or ``reference_update`` with the same arguments where the
    loop cannot run: a dtype it is not compiled for, or an array other than the gradient that is not
    contiguous (the loop updates the parameter and its state in place through flat views, which only
    a contiguous array has; the gradient is only read, and copied when it is not contiguous)."""

    def decorate(compiled_update):
        @functools.wraps(compiled_update)
        def update(param, grad, *args, **kwargs):
            arrays = [a for a in (param, *args, *kwargs.values()) if isinstance(a, np.ndarray)]
            if param.dtype in COMPILED_DTYPES and all(a.flags.c_contiguous for a in arrays):
                return compiled_update(param, grad, *args, **kwargs)
            return reference_update(param, grad, *args, **kwargs)

        return update

    return decorate


def _sgd_hyper(dtype, lr, momentum, dampening, weight_decay, nesterov, maximize, flush):
    """``_sgd``'s ``hyper``: the numbers cast to the parameter's dtype (float32 math stays float32)."""
    cast = dtype.type
    numbers = (cast(lr), cast(momentum), 1 - cast(dampening), cast(weight_decay))
    return (*numbers, bool(nesterov), bool(maximize), bool(flush), _tiny(dtype))


@_or_reference(reference.sgd_update)
def sgd_update(
    param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, flush=False, scratch=None
):
    """torch.optim.SGD's step as one pass over the parameter (the reference's four to six passes
    fused; no scratch array needed). Returns the momentum buffer (None without momentum)."""
    first = momentum != 0 and momentum_buffer is None
    buf = np.empty_like(param) if first else momentum_buffer
    hyper = _sgd_hyper(param.dtype, lr, momentum, dampening, weight_decay, nesterov, maximize, flush)
    flat_buf = _flat(param if buf is None else buf)
    _sgd(_flat(param), _flat(np.ascontiguousarray(grad)), flat_buf, 0, param.size, first, hyper)
    return buf


#: From this many values in a group on, the SGD update is split across the threads (smaller, and
#: starting the parallel region costs more than the second thread saves).
SPLIT_MIN_SIZE = 65_536


def sgd_update_group(
    params, grads, buffers, lr, momentum, dampening, weight_decay, nesterov, maximize, flush=False, scratch=None
):
    """torch.optim.SGD's step on every parameter of a group in one compiled call: ``sgd_update``'s
    one pass over each, all in one loop (one call instead of one per parameter, each costing more in
    Python than a small parameter's update), the parameters laid end to end and cut into one equal
    run per thread when there are many values. Returns the momentum buffers (None without momentum).
    A group whose arrays do not share one compiled dtype, or are not all contiguous, is updated one
    parameter at a time (``sgd_update``, or its reference)."""
    dtype = params[0].dtype if params else None
    arrays = [*params, *grads, *(buf for buf in buffers if buf is not None)]
    if dtype not in COMPILED_DTYPES or not all([a.dtype == dtype and a.flags.c_contiguous for a in arrays]):
        scratch = [None] * len(params) if scratch is None else scratch
        hyper = (lr, momentum, dampening, weight_decay, nesterov, maximize, flush)
        return [sgd_update(p, g, buf, *hyper, work) for p, g, buf, work in zip(params, grads, buffers, scratch)]
    has_momentum = momentum != 0
    first = tuple([has_momentum and buf is None for buf in buffers])
    buffers = [np.empty_like(p) if new else buf for p, buf, new in zip(params, buffers, first)]
    flat_params = tuple([p.reshape(-1) for p in params])
    flat_grads = tuple([g.reshape(-1) for g in grads])
    flat_buffers = tuple([buf.reshape(-1) for buf in buffers]) if has_momentum else flat_params
    hyper = _sgd_hyper(dtype, lr, momentum, dampening, weight_decay, nesterov, maximize, flush)
    n_parts = _threads.numba_threads()
    if n_parts > 1 and sum([p.size for p in params]) >= SPLIT_MIN_SIZE:
        offsets = tuple(itertools.accumulate([p.size for p in params], initial=0))
        _sgd_group_split(flat_params, flat_grads, flat_buffers, first, hyper, offsets, n_parts)
    else:
        _sgd_group(flat_params, flat_grads, flat_buffers, first, hyper)
    return buffers if has_momentum else [None] * len(params)


@_or_reference(reference.adam_update)
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
):
    """torch.optim.Adam/AdamW's step as one pass over the parameter and its moments (the
    reference's ten passes and three temporaries fused)."""
    cast = param.dtype.type
    decoupled = decoupled_weight_decay and weight_decay != 0
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    _adam(
        _flat(param),
        _flat(np.ascontiguousarray(grad)),
        _flat(exp_avg),
        _flat(exp_avg_sq),
        _flat(max_exp_avg_sq if amsgrad else exp_avg_sq),
        cast(beta1),
        cast(1 - beta1),
        cast(beta2),
        cast(1 - beta2),
        cast(1 - lr * weight_decay) if decoupled else cast(1),
        cast(0) if decoupled else cast(weight_decay),
        cast(np.sqrt(bias_correction2)),
        cast(eps),
        cast(lr / bias_correction1),
        bool(amsgrad),
        bool(maximize),
        bool(flush),
        _tiny(param.dtype),
    )


@_or_reference(reference.rmsprop_update)
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
    """torch.optim.RMSprop's step as one pass over the parameter and its state (the reference's
    six to twelve passes and two temporaries fused)."""
    cast = param.dtype.type
    _rmsprop(
        _flat(param),
        _flat(np.ascontiguousarray(grad)),
        _flat(square_avg),
        _flat(grad_avg if centered else square_avg),
        _flat(momentum_buffer if momentum > 0 else square_avg),
        cast(lr),
        cast(alpha),
        cast(1 - alpha),
        cast(1 - (1 - alpha)),
        cast(eps),
        cast(weight_decay),
        cast(momentum),
        bool(centered),
        bool(maximize),
        bool(flush),
        _tiny(param.dtype),
    )


@_or_reference(reference.adagrad_update)
def adagrad_update(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, maximize, scratch=None):
    """torch.optim.Adagrad's step as one pass over the parameter and its sum (the reference's five
    to seven passes fused)."""
    cast = param.dtype.type
    _adagrad(
        _flat(param),
        _flat(np.ascontiguousarray(grad)),
        _flat(state_sum),
        cast(lr / (1 + (step - 1) * lr_decay)),
        cast(weight_decay),
        cast(eps),
        bool(maximize),
    )
