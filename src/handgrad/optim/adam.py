"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

import numpy as np

from ..nn.parameter import Parameter
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam``.

    For each parameter ``p`` with gradient ``g``; ``t`` counts this parameter's updates, one per
    ``step()``::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                        (L2; or, decoupled, p = p * (1 - lr * weight_decay))
        t = t + 1
        m = beta1 * m + (1 - beta1) * g                 (exp_avg)
        v = beta2 * v + (1 - beta2) * g * g             (exp_avg_sq)
        v = max_exp_avg_sq = max(max_exp_avg_sq, v)     (amsgrad only)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps      (eps outside the square root)
        p = p - lr / (1 - beta1**t) * m / denom

    Example::

        opt = Adam(model.parameters(), lr=1e-3)
        opt.step()

    torch's ``foreach``, ``capturable``, ``differentiable`` and ``fused`` are accepted at their
    defaults only.
    """

    nonnegative = ("lr", "eps", "weight_decay")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        flags = dict(foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, **flags)

    @classmethod
    def _check_hyperparameters(cls, group: dict) -> None:
        super()._check_hyperparameters(group)
        beta1, beta2 = group["betas"]
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {beta1}")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {beta2}")

    update_op = "adam_update"
    update_args = ("lr", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")

    def _update(self, p: Parameter, grad: np.ndarray, state: dict, group: dict) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        # the formulas: optim/functional.py (adam_update); compiled in kernels/optim.py
        moments = state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")
        self._update_fn(
            p.data, grad, *moments, state["step"], beta1=beta1, beta2=beta2, **self._update_kwargs(p, group)
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    The same update as Adam, except that the decay shrinks the parameter directly instead of
    entering the gradient (and so the moment estimates)::

        p = p * (1 - lr * weight_decay)    then the Adam step on the plain gradient

    Example::

        opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
