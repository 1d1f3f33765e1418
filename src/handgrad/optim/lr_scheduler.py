"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``: call ``scheduler.step()`` once per
epoch (OneCycleLR: once per batch), after that epoch's ``optimizer.step()`` calls.

Each scheduler gives its lr in two forms, as torch does:

- the chainable form, ``get_lr()``: the new lr from the group's current one (``lr = lr * gamma``),
  used by ``step()``. Several schedulers can then act on the same optimizer (ChainedScheduler), each
  multiplying in its own factor; and the values are torch's to the last bit.
- the closed form, ``_get_closed_form_lr()``: the lr at ``last_epoch`` from ``base_lrs`` alone,
  used by ``step(epoch)`` (deprecated in torch, and warned about here too) and by a run resumed
  with a different schedule length.

The formula of each is in its docstring, with ``epoch`` for ``last_epoch`` and ``initial_lr`` for
the group's lr when the scheduler was made (kept in the group as ``"initial_lr"``).
"""

from __future__ import annotations

import copy
import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections import Counter

from ..errors import HandgradError
from .optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "CyclicLR",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. "
    "Please use `scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from "
    "None, the closed form is used instead of the new chainable form, where available."
)

_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`: call them in the opposite order, "
    "`optimizer.step()` before `lr_scheduler.step()`, or the first value of the learning rate schedule is skipped."
)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: How an integer argument's lower bound reads in an error.
_AT_LEAST = {0: "a non-negative integer", 1: "a positive integer"}


def _check_integer(where: str, name: str, value, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) of at least ``minimum`` (0 or 1)."""
    if not _is_int(value) or value < minimum:
        raise HandgradError(where, f"{name} must be {_AT_LEAST[minimum]}, got {value!r}")


def _check_factor(where: str, name: str, kind: str, value, above_zero: bool = False) -> None:
    """Refuse a multiplicative factor outside [0, 1], or outside (0, 1] when ``above_zero``."""
    if not (0 < value <= 1.0 if above_zero else 0 <= value <= 1.0):
        bounds = "greater than 0 and at most 1" if above_zero else "between 0 and 1"
        raise HandgradError(where, f"{name} (the {kind} multiplicative factor) must be {bounds}, got {value}")


def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _per_group(where: str, name: str, optimizer: Optimizer, value) -> list:
    """``value`` for every param group: a list or tuple gives one per group, a scalar is repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise HandgradError(
                where,
                f"{name} must have one value per param group: got {len(value)} values, "
                f"the optimizer has {len(optimizer.param_groups)} param groups",
            )
        return list(value)
    return [value] * len(optimizer.param_groups)


def _cycles_beta1(where: str, optimizer: Optimizer) -> bool:
    """Whether cycle_momentum moves the groups' beta1 (Adam's betas) rather than their momentum
    (SGD's, RMSprop's); an optimizer with neither is refused."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise HandgradError(
            where,
            f"cycle_momentum needs an optimizer with momentum or betas, "
            f"{type(optimizer).__name__} has neither; pass cycle_momentum=False",
        )
    return "betas" in optimizer.defaults


def _group_lrs(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


class LRScheduler:
    """Base class: sets each param group's ``lr`` to ``get_lr()`` at the epoch ``last_epoch``.

    On construction with ``last_epoch=-1`` each group keeps its starting lr as ``initial_lr`` (an
    existing one is left alone, so a second scheduler starts from the same value); ``base_lrs`` are
    those values. The constructor then takes the first step, to epoch 0. With ``last_epoch >= 0``
    (resuming), every group must already hold ``initial_lr``.
    """

    _get_lr_called_within_step = False
    _is_initial = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] "
                        "when resuming scheduler with last_epoch >= 0"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The step the constructor takes: to epoch ``last_epoch + 1``, with ``_is_initial`` set
        (most chainable forms then leave the group's lr as it is)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The chainable form: each group's lr for ``last_epoch`` from its current one."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr()")

    def _warn_if_called_outside_step(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning,
                stacklevel=3,
            )

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch and set every group's lr for it. ``epoch`` (deprecated, as in torch)
        jumps to that epoch instead, with the closed form where the scheduler has one."""
        if self._step_count == 1 and not getattr(self.optimizer, "_step_count", 0):
            warnings.warn(_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = _group_lrs(self.optimizer)

    def _scaled_lrs(self, factor: float) -> list[float]:
        """Every group's current lr times ``factor``: the usual chainable step."""
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _scaled_base_lrs(self, factor: float) -> list[float]:
        """Every group's initial lr times ``factor``: the usual closed form."""
        return [base_lr * factor for base_lr in self.base_lrs]

    def get_last_lr(self) -> list[float]:
        """The lrs set by the latest ``step()``, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """A copy of every attribute but the optimizer (whose own state_dict holds the lrs): the
        same keys and values as torch's scheduler of the same name."""
        return {key: copy.deepcopy(value) for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(copy.deepcopy(state_dict))

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={getattr(self, 'last_epoch', None)}, last_lr={self._last_lr})"


class _LambdaScheduler(LRScheduler):
    """LambdaLR and MultiplicativeLR: one function of the epoch per param group. Plain functions
    are not saved in ``state_dict()`` (None in their place); a callable object's ``__dict__`` is."""

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        name = type(self).__name__
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(optimizer.param_groups):
                raise HandgradError(
                    name,
                    f"expected {len(optimizer.param_groups)} lr_lambdas (one per param group), got {len(lr_lambda)}",
                )
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"{name}: lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict:
        state = {
            key: copy.deepcopy(value) for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")
        }
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__) for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = copy.deepcopy(state_dict)
        saved_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for fn, saved in zip(self.lr_lambdas, saved_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
    """Each group's initial lr times a function of the epoch::

        lr = initial_lr * lr_lambda(epoch)

    ``lr_lambda``: one function, or a list with one per param group.

    Example::

        sched = LambdaLR(opt, lr_lambda=lambda epoch: 0.95 ** epoch)
    """

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_LambdaScheduler):
    """Each epoch after the first, multiply each group's lr by a function of the epoch::

    lr = lr * lr_lambda(epoch)     (epoch >= 1; lr = initial_lr at epoch 0)
    """

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self._is_initial:
            return _group_lrs(self.optimizer)
        return [
            group["lr"] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


class StepLR(LRScheduler):
    """Decay each group's lr by ``gamma`` every ``step_size`` epochs::

    lr = initial_lr * gamma ** (epoch // step_size)
    chainable: lr = lr * gamma  when epoch > 0 and epoch % step_size == 0
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not _is_real(step_size) or step_size != int(step_size) or step_size < 1:
            raise HandgradError("StepLR", f"step_size must be a positive integer, got {step_size!r}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_lrs(self.optimizer)
        return self._scaled_lrs(self.gamma)

    def _get_closed_form_lr(self) -> list[float]:
        return self._scaled_base_lrs(self.gamma ** (self.last_epoch // self.step_size))


class MultiStepLR(LRScheduler):
    """Decay each group's lr by ``gamma`` at each milestone epoch (a milestone listed twice decays twice)::

    lr = initial_lr * gamma ** (number of milestones <= epoch)
    chainable: lr = lr * gamma ** milestones.count(epoch)
    """

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        try:
            milestones = list(milestones)
        except TypeError:
            raise HandgradError(
                "MultiStepLR", f"milestones must be a list of epochs, got {type(milestones).__name__}"
            ) from None
        for m in milestones:
            if not _is_int(m):
                raise HandgradError("MultiStepLR", f"milestones must be integer epochs, got {m!r} in {milestones}")
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self.last_epoch not in self.milestones:
            return _group_lrs(self.optimizer)
        return self._scaled_lrs(self.gamma ** self.milestones[self.last_epoch])

    def _get_closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        return self._scaled_base_lrs(self.gamma ** bisect_right(milestones, self.last_epoch))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # A state_dict stored as JSON comes back with the epochs as strings.
        self.milestones = Counter({int(epoch): count for epoch, count in self.milestones.items()})


class ConstantLR(LRScheduler):
    """Multiply each group's lr by ``factor`` until epoch ``total_iters``::

    lr = initial_lr * factor   (epoch < total_iters),   initial_lr   (epoch >= total_iters)
    """

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1):
        _check_factor("ConstantLR", "factor", "constant", factor)
        _check_integer("ConstantLR", "total_iters", total_iters, 0)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0:
            return self._scaled_lrs(self.factor)
        if self.last_epoch != self.total_iters:
            return _group_lrs(self.optimizer)
        return self._scaled_lrs(1.0 / self.factor)

    def _get_closed_form_lr(self) -> list[float]:
        return self._scaled_base_lrs(self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))


class LinearLR(LRScheduler):
    """Move each group's lr linearly from ``initial_lr * start_factor`` to ``initial_lr * end_factor``
    over ``total_iters`` epochs, then hold it::

        lr = initial_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)
        chainable, 0 < epoch <= total_iters:
            lr = lr * (1 + (end_factor - start_factor)
                           / (total_iters * start_factor + (epoch - 1) * (end_factor - start_factor)))
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        _check_factor("LinearLR", "start_factor", "starting", start_factor, above_zero=True)
        _check_factor("LinearLR", "end_factor", "ending", end_factor)
        _check_integer("LinearLR", "total_iters", total_iters, 1)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0:
            return self._scaled_lrs(self.start_factor)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_lrs(self.optimizer)
        slope = self.end_factor - self.start_factor
        ratio = 1.0 + slope / (self.total_iters * self.start_factor + (self.last_epoch - 1) * slope)
        return self._scaled_lrs(ratio)

    def _get_closed_form_lr(self) -> list[float]:
        fraction = min(self.total_iters, self.last_epoch) / self.total_iters
        return self._scaled_base_lrs(self.start_factor + (self.end_factor - self.start_factor) * fraction)


class ExponentialLR(LRScheduler):
    """Decay each group's lr by ``gamma`` every epoch::

    lr = initial_lr * gamma ** epoch
    chainable: lr = lr * gamma
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self._is_initial:
            return _group_lrs(self.optimizer)
        return self._scaled_lrs(self.gamma)

    def _get_closed_form_lr(self) -> list[float]:
        return self._scaled_base_lrs(self.gamma**self.last_epoch)


class PolynomialLR(LRScheduler):
    """Decay each group's lr to 0 along a polynomial of degree ``power`` over ``total_iters`` epochs::

    lr = initial_lr * (1 - min(epoch, total_iters) / total_iters) ** power
    chainable, 0 < epoch <= total_iters:
        lr = lr * ((1 - epoch / total_iters) / (1 - (epoch - 1) / total_iters)) ** power
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1):
        _check_integer("PolynomialLR", "total_iters", total_iters, 1)
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_lrs(self.optimizer)
        decay = (
            (1.0 - self.last_epoch / self.total_iters) / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return self._scaled_lrs(decay)

    def _get_closed_form_lr(self) -> list[float]:
        return self._scaled_base_lrs((1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power)


class CosineAnnealingLR(LRScheduler):
    """Anneal each group's lr from ``initial_lr`` to ``eta_min`` along half a cosine over ``T_max``
    epochs (and back up over the next ``T_max``, as torch does when stepped past ``T_max``)::

        lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2
        chainable: lr = eta_min + (lr - eta_min) * (1 + cos(pi * epoch / T_max))
                                                  / (1 + cos(pi * (epoch - 1) / T_max))
                   (at the bottom, epoch = T_max + 1 + 2k T_max, where that ratio is 0/0:
                    lr = lr + (initial_lr - eta_min) * (1 - cos(pi / T_max)) / 2)
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not _is_real(T_max) or T_max <= 0:
            raise HandgradError("CosineAnnealingLR", f"T_max must be positive, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        if self._is_initial:
            return _group_lrs(self.optimizer)
        if self._step_count == 1 and self.last_epoch > 0:
            return [
                self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                for base_lr in self.base_lrs
            ]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [
                group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (
            1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)
        )
        return [ratio * (group["lr"] - self.eta_min) + self.eta_min for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class _Composite(LRScheduler):
    """SequentialLR and ChainedScheduler: schedulers of one optimizer, saved and loaded together."""

    _schedulers: list

    @staticmethod
    def _check_schedulers(where: str, optimizer: Optimizer, schedulers) -> None:
        if len(schedulers) < 1:
            raise HandgradError(where, "expects at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(f"{where}: the scheduler at index {i} should have `optimizer` as its attribute")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise HandgradError(
                    where,
                    f"does not support ReduceLROnPlateau (at index {i}): its step() needs "
                    "the metric; step it on its own",
                )
            if scheduler.optimizer is not optimizer:
                raise HandgradError(
                    where,
                    f"expects all schedulers to belong to the same optimizer, but the "
                    f"{type(scheduler).__name__} at index {i} belongs to another one",
                )

    def state_dict(self) -> dict:
        state = {
            key: copy.deepcopy(value) for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = copy.deepcopy(state_dict)
        saved = state.pop("_schedulers")
        self.__dict__.update(state)
        for scheduler, saved_state in zip(self._schedulers, saved, strict=True):
            scheduler.load_state_dict(saved_state)


class SequentialLR(_Composite):
    """Run ``schedulers[i]`` from epoch ``milestones[i-1]`` on (the first from epoch 0), each
    restarted at its milestone (its epoch 0, from ``initial_lr``)::

        i = number of milestones <= epoch
        lr = schedulers[i]'s lr at epoch - milestones[i-1]

    Example::

        warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
        decay = CosineAnnealingLR(opt, T_max=45)
        sched = SequentialLR(opt, [warmup, decay], milestones=[5])
    """

    def __init__(self, optimizer: Optimizer, schedulers, milestones, last_epoch: int = -1):
        self._check_schedulers("SequentialLR", optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise HandgradError(
                "SequentialLR",
                "expects one more scheduler than milestones, got "
                f"{len(schedulers)} schedulers and {len(milestones)} milestones",
            )
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # Making each scheduler took its first step; undo those and start the first one afresh.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo_steps(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @classmethod
    def _undo_steps(cls, scheduler) -> None:
        """Take one epoch off ``last_epoch`` of every scheduler inside, nested ones included."""
        if hasattr(scheduler, "_schedulers"):
            for inner in scheduler._schedulers:
                cls._undo_steps(inner)
        elif hasattr(scheduler, "last_epoch"):
            scheduler.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]  # torch's signature: no epoch
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # its epoch 0, in closed form from initial_lr
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    """Step every scheduler in order, each multiplying in its own factor (so only chainable ones
    compose: not LambdaLR, CosineAnnealingWarmRestarts or OneCycleLR, which set the lr outright)::

        lr = the lr after schedulers[0].step(), ..., schedulers[-1].step()

    Example::

        sched = ChainedScheduler([ConstantLR(opt, factor=0.1, total_iters=2), ExponentialLR(opt, gamma=0.9)])
    """

    def __init__(self, schedulers, optimizer: Optimizer | None = None):
        if len(schedulers) < 1:
            raise HandgradError("ChainedScheduler", "expects at least one scheduler to be chained, got none")
        optimizer = optimizer or schedulers[0].optimizer
        self._check_schedulers("ChainedScheduler", optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_lrs(self._schedulers[-1].optimizer)

    def step(self) -> None:  # type: ignore[override]  # torch's signature: no epoch
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_lrs(self._schedulers[-1].optimizer)


class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's lr by ``factor`` once the metric given to ``step(metric)`` has not
    improved for more than ``patience`` epochs::

        improved = metric < best * (1 - threshold)     (mode 'min', threshold_mode 'rel')
                   metric < best - threshold           ('min', 'abs')
                   metric > best * (1 + threshold)     ('max', 'rel');   metric > best + threshold  ('max', 'abs')
        bad_epochs = 0 if improved (and best = metric) else bad_epochs + 1;  0 during a cooldown
        if bad_epochs > patience:
            lr = max(lr * factor, min_lr)  (unless that changes lr by eps or less);
            then cooldown epochs during which bad epochs are not counted

    Example::

        sched = ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=3)
        sched.step(val_loss)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr=0,
        eps: float = 1e-8,
    ):
        if factor >= 1.0:
            raise HandgradError("ReduceLROnPlateau", f"factor must be < 1.0, got {factor}")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise HandgradError(
                    "ReduceLROnPlateau",
                    f"expected {len(optimizer.param_groups)} min_lrs (one per param group), got {len(min_lr)}",
                )
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_lrs(optimizer)
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None) -> None:  # type: ignore[override]  # torch's: the metric first
        """Record this epoch's metric (a float: the validation loss, say) and reduce the lrs if it
        has stopped improving."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise HandgradError(
                "ReduceLROnPlateau",
                f"step(metrics) needs one number, the monitored metric, got {type(metrics).__name__}",
            ) from None
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in a cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise HandgradError(
                    "ReduceLROnPlateau",
                    f"the optimizer has {len(self.optimizer.param_groups)} "
                    f"param groups but min_lr gave {len(self.min_lrs)} values "
                    "(a group was added since); set min_lrs to one per group",
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise HandgradError("ReduceLROnPlateau", f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise HandgradError("ReduceLROnPlateau", f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from ``initial_lr`` to ``eta_min`` over ``T_i`` epochs, then a restart at
    ``initial_lr`` (SGDR, Loshchilov & Hutter 2017); each period ``T_mult`` times the one before::

        lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2
        T_cur: epochs since the last restart;  T_0 the first period, T_i = T_0 * T_mult ** i

    ``step(epoch)`` may be given a fractional epoch (``epoch + batch / batches``), and is then not
    deprecated: it finds T_cur and T_i for that epoch directly.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1):
        where = "CosineAnnealingWarmRestarts"
        _check_integer(where, "T_0", T_0, 1)
        if not _is_int(T_mult) or T_mult < 1:  # torch's wording: the factor between periods
            raise HandgradError(where, f"T_mult must be an integer >= 1, got {T_mult!r}")
        if not _is_real(eta_min):
            raise HandgradError(
                where, f"eta_min must be a float or int, got {eta_min!r} of type {type(eta_min).__name__}"
            )
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        cosine = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]

    def step(self, epoch=None) -> None:
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:  # a restart
                self.T_cur -= self.T_i
                self.T_i *= self.T_mult
        else:
            if epoch < 0:
                raise HandgradError("CosineAnnealingWarmRestarts", f"epoch must be non-negative, got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    # restarts so far: the n with T_0 (T_mult**n - 1) / (T_mult - 1) <= epoch
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = _group_lrs(self.optimizer)


def _phase(end_step: float, lrs: tuple[str, str], momentums: tuple[str, str]) -> dict:
    """One phase of OneCycleLR, in torch's layout: its last step, and the group entries that its lr
    and its momentum anneal from and to."""
    return dict(
        end_step=end_step, start_lr=lrs[0], end_lr=lrs[1], start_momentum=momentums[0], end_momentum=momentums[1]
    )


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2018), stepped once per batch: the lr rises from
    ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then
    falls to ``initial_lr / final_div_factor``; the momentum (SGD's ``momentum``, Adam's beta1)
    moves the opposite way between ``max_momentum`` and ``base_momentum``::

        phase 1, step s in [0, pct_start * total - 1]:  lr = anneal(initial_lr, max_lr, s / (pct_start * total - 1))
        phase 2, to total - 1:                           lr = anneal(max_lr, min_lr, (s - end_1) / (total - 1 - end_1))
        anneal(a, b, t) = b + (a - b) * (1 + cos(pi t)) / 2    ('cos')   or   a + (b - a) t    ('linear')
        three_phase: up to max_lr, back down to initial_lr by step 2 * pct_start * total - 2, then to min_lr

    Stepping past ``total_steps`` is an error.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ):
        where = "OneCycleLR"
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            _check_integer(where, "total_steps", total_steps, 1)
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            _check_integer(where, "epochs", epochs, 1)
            _check_integer(where, "steps_per_epoch", steps_per_epoch, 1)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise HandgradError(where, "give either total_steps, or both epochs and steps_per_epoch")
        if not _is_real(pct_start) or not 0 <= pct_start <= 1:
            raise HandgradError(where, f"pct_start must be a float between 0 and 1, got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise HandgradError(where, f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")

        up_end = float(pct_start * self.total_steps) - 1
        self._schedule_phases: list[dict]
        if three_phase:
            self._schedule_phases = [
                _phase(up_end, ("initial_lr", "max_lr"), ("max_momentum", "base_momentum")),
                _phase(
                    float(2 * pct_start * self.total_steps) - 2,
                    ("max_lr", "initial_lr"),
                    ("base_momentum", "max_momentum"),
                ),
                _phase(self.total_steps - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum")),
            ]
        else:
            self._schedule_phases = [
                _phase(up_end, ("initial_lr", "max_lr"), ("max_momentum", "base_momentum")),
                _phase(self.total_steps - 1, ("max_lr", "min_lr"), ("base_momentum", "max_momentum")),
            ]
        self._anneal_func_type = anneal_strategy

        max_lrs = _per_group(where, "max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, group_max_lr in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _cycles_beta1(where, optimizer)
            max_momentums = _per_group(where, "max_momentum", optimizer, max_momentum)
            base_momentums = _per_group(where, "base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for group, group_max, group_base in zip(optimizer.param_groups, max_momentums, base_momentums):
                    self._set_momentum(group, group_max)
                    group["max_momentum"] = group_max
                    group["base_momentum"] = group_base
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict, momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        step = self.last_epoch
        if step > self.total_steps:
            raise HandgradError(
                "OneCycleLR",
                f"stepped {step} times, past total_steps={self.total_steps}; "
                "make it with the number of batches the run takes",
            )
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                self._set_momentum(group, momentum)
        return lrs


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith, 2017), stepped once per batch: the lr climbs from ``base_lr``
    to ``max_lr`` over ``step_size_up`` batches and falls back over ``step_size_down`` (default: the
    same), the height of each cycle scaled by a policy; the momentum (SGD's ``momentum``, Adam's
    beta1) moves the opposite way between ``max_momentum`` and ``base_momentum``::

        cycle = floor(1 + b / (up + down)),   x = 1 + b / (up + down) - cycle       (b: batches so far)
        s = x / r  while x <= r,  else (x - 1) / (r - 1)                            (r = up / (up + down))
        lr = base_lr + (max_lr - base_lr) * s * scale(cycle or b)
        momentum = max_momentum - (max_momentum - base_momentum) * s * scale(cycle or b)

    ``mode``: 'triangular' (scale 1), 'triangular2' (scale 1 / 2 ** (cycle - 1)) or 'exp_range'
    (scale gamma ** b). ``scale_fn(v)`` replaces the mode's scale, evaluated on the cycle number or,
    with ``scale_mode='iterations'``, on b. As in torch, the constructor sets each group's lr to
    ``base_lr``; a plain function ``scale_fn`` is not saved in ``state_dict()``, a callable object's
    ``__dict__`` is.

    Example::

        sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=200, mode="triangular2")
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr,
        max_lr,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn=None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum=0.8,
        max_momentum=0.9,
        last_epoch: int = -1,
    ):
        where = "CyclicLR"
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if not _is_real(step_size_up) or not step_size_up > 0:
            raise HandgradError(where, f"step_size_up must be a positive number of batches, got {step_size_up!r}")
        if step_size_down is not None and (not _is_real(step_size_down) or not step_size_down >= 0):
            raise HandgradError(
                where, f"step_size_down must be a non-negative number of batches or None, got {step_size_down!r}"
            )
        if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
            raise HandgradError(
                where, f"mode must be 'triangular', 'triangular2' or 'exp_range' (or give scale_fn), got {mode!r}"
            )
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"{where}: scale_fn should be a function, but got {type(scale_fn).__name__}")
        if scale_mode not in ("cycle", "iterations"):
            raise HandgradError(where, f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")

        base_lrs = _per_group(where, "base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr
        self.max_lrs = _per_group(where, "max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _cycles_beta1(where, optimizer)
            self.base_momentums = _per_group(where, "base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group(where, "max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for group, top, bottom in zip(optimizer.param_groups, self.max_momentums, self.base_momentums):
                    self._set_momentum(group, top)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        # the built-in modes fix what the scale reads, as torch's: the cycle for the triangles, b for exp_range
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x) -> float:
        """The policy's scale at ``x`` (the cycle number, or the batch count with scale_mode 'iterations')."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        if self.mode == "exp_range":
            return self.gamma**x
        return 1.0

    def _set_momentum(self, group: dict, momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def get_lr(self) -> list[float]:
        self._warn_if_called_outside_step()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        height = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * height * scale for base, top in zip(self.base_lrs, self.max_lrs, strict=True)]
        if self.cycle_momentum:
            for group, bottom, top in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                self._set_momentum(group, top - (top - bottom) * height * scale)
        return lrs

    def state_dict(self) -> dict:
        state = {
            key: copy.deepcopy(v) for key, v in self.__dict__.items() if key not in ("optimizer", "_scale_fn_custom")
        }
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = None if fn is None or isinstance(fn, types.FunctionType) else dict(fn.__dict__)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = copy.deepcopy(state_dict)
        saved_fn = state.pop("_scale_fn_custom", None)
        self.__dict__.update(state)
        if saved_fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(saved_fn)
        self._init_scale_fn()
