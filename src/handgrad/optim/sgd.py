"""SGD: stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay."""

from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g``, in order of increasing complexity::

        d_p = g                                       (d_p = -g with maximize)
        d_p = d_p + weight_decay * p                  (L2 penalty)
        buf = d_p                                     first step, when momentum != 0
        buf = momentum * buf + (1 - dampening) * d_p  later steps
        d_p = d_p + momentum * buf  with nesterov,  else  d_p = buf
        p   = p - lr * d_p

    Example::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        opt.step()

    torch's ``foreach``, ``differentiable`` and ``fused`` are accepted at their defaults only.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults, foreach=foreach, differentiable=differentiable, fused=fused)

    @classmethod
    def _check_hyperparameters(cls, group: dict) -> None:
        # ``< 0`` rather than the others' ``not >= 0``: torch's SGD lets NaN through, and so does this
        if group["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    update_op = "sgd_update_group"
    update_args = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def _update_group(self, params: list, grads: list, states: list, group: dict) -> None:
        # the formulas: optim/functional.py (sgd_update); compiled in kernels/optim.py, the whole
        # group in one call (one per parameter costs more in Python than the small ones' updates)
        kwargs = {name: group[name] for name in self.update_args}
        buffers = self._update_fn(
            [p.data for p in params],
            grads,
            [state.get("momentum_buffer") for state in states],
            **kwargs,
            flush=self._flush_due,
            scratch=[self._scratch(p) for p in params],
        )
        for state, buf in zip(states, buffers):
            if buf is not None:
                state["momentum_buffer"] = buf
