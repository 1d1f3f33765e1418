"""Adagrad: per-coordinate step sizes shrinking with the sum of all squared gradients seen."""

from __future__ import annotations

import numpy as np

from ..nn.parameter import Parameter
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011), as ``torch.optim.Adagrad``.

    For each parameter ``p`` with gradient ``g``; ``t`` counts this parameter's updates, one per
    ``step()``::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                        (L2 penalty)
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g                                   (sum; initial_accumulator_value at the start)
        p = p - clr * g / (sqrt(s) + eps)

    As in torch, every parameter's state (``step`` 0, ``sum``) exists from construction on.

    Example::

        opt = Adagrad(model.parameters(), lr=1e-2, lr_decay=1e-4)
        opt.step()

    torch's ``foreach``, ``differentiable`` and ``fused`` are accepted at their defaults only.
    """

    nonnegative = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            maximize=maximize,
        )
        super().__init__(params, defaults, foreach=foreach, differentiable=differentiable, fused=fused)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(p, self.state.setdefault(p, {}), group)

    @staticmethod
    def _init_state(p: Parameter, state: dict, group: dict) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = np.full_like(p.data, group["initial_accumulator_value"])

    update_op = "adagrad_update"
    update_args = ("lr", "lr_decay", "weight_decay", "eps", "maximize")
    update_flushes = False  # the sum only grows: nothing in it sinks into subnormals

    def _update(self, p: Parameter, grad: np.ndarray, state: dict, group: dict) -> None:
        self._init_state(p, state, group)  # after load_state_dict of a state without this parameter
        state["step"] += 1
        # the formulas: optim/functional.py (adagrad_update); compiled in kernels/optim.py
        self._update_fn(p.data, grad, state["sum"], state["step"], **self._update_kwargs(p, group))
