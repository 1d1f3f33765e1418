"""RMSprop: gradient steps divided by a running root mean square of the gradient."""

from __future__ import annotations

import numpy as np

from ..nn.parameter import Parameter
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; centered: Graves, 2013), as ``torch.optim.RMSprop``.

    For each parameter ``p`` with gradient ``g``, in order of increasing complexity::

        g = g  (g = -g with maximize)
        g = g + weight_decay * p                               (L2 penalty)
        v = alpha * v + (1 - alpha) * g * g                    (square_avg)
        m = alpha * m + (1 - alpha) * g                        (grad_avg, centered only)
        avg = sqrt(v - m * m) + eps  centered,  else  sqrt(v) + eps    (eps outside the square root)
        buf = momentum * buf + g / avg;  p = p - lr * buf      (momentum > 0)
        p = p - lr * g / avg                                   (otherwise)

    Example::

        opt = RMSprop(model.parameters(), lr=1e-3, momentum=0.9, centered=True)
        opt.step()

    torch's ``capturable``, ``foreach`` and ``differentiable`` are accepted at their defaults only.
    """

    nonnegative = ("lr", "eps", "momentum", "weight_decay", "alpha")

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults, capturable=capturable, foreach=foreach, differentiable=differentiable)

    update_op = "rmsprop_update"
    update_args = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def _update(self, p: Parameter, grad: np.ndarray, state: dict, group: dict) -> None:
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(p.data)
        # created when first needed, so a momentum or centering switched on later (a scheduler) starts at zero
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = np.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = np.zeros_like(p.data)
        state["step"] += 1
        # the formulas: optim/functional.py (rmsprop_update); compiled in kernels/optim.py
        averages = state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")
        self._update_fn(p.data, grad, *averages, **self._update_kwargs(p, group))
