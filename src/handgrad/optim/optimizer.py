"""Optimizer: the base of SGD, Adam and AdamW, with torch.optim's layout.

Parameters live in ``param_groups`` (dicts holding ``"params"`` and that group's hyperparameters);
per-parameter state (momentum buffers, moment estimates, step counts) lives in ``state``, keyed by
the Parameter object itself. ``step()`` is the one loop over the parameters, here; a subclass gives
its torch signature, the names of its hyperparameters (``nonnegative``, ``update_args``) and one
method, ``_update(p, grad, state, group)``: the update of one parameter, in place on ``p.data``,
which creates the state it needs and calls ``self._update_fn`` (the op named by ``update_op``, from
``optim/functional.py`` or its compiled kernel, looked up once per step) with
``**self._update_kwargs(p, group)``; or, to update a whole group in one call,
``_update_group(params, grads, states, group)`` (SGD's).
"""

from __future__ import annotations

import copy
import numbers
from itertools import chain

import numpy as np

from .. import kernels
from ..errors import HandgradError, StateDictError, fmt_shape
from ..nn.parameter import Parameter

_SET_MESSAGE = (
    "optimizer parameters need to be organized in ordered collections, but the ordering "
    "of parameters in sets will change between runs. Please use a list instead."
)


FLUSH_EVERY = 8  # steps between flushes of subnormal state values (see optim/functional.py)

#: Why each of torch's switches between implementations of the same update has no other value here.
_IMPLEMENTATION_FLAGS = {
    "foreach": "handgrad has one implementation of each update, per parameter (compiled in handgrad.kernels); "
    "leave foreach as None or False",
    "fused": "handgrad has one implementation of each update, per parameter (compiled in handgrad.kernels); "
    "leave fused as None or False",
    "capturable": "it makes the update capturable in a CUDA graph, and handgrad runs on the CPU; "
    "leave capturable=False",
    "differentiable": "handgrad does not differentiate through optimizer steps; leave differentiable=False",
}


#: How torch names a hyperparameter in "Invalid ...: value"; any other ``name`` reads "name value".
_TORCH_WORDING = {"lr": "learning rate", "eps": "epsilon value"}


def check_implementation_flags(optimizer_name: str, **flags) -> None:
    """Accept torch's ``foreach``, ``fused``, ``capturable`` and ``differentiable`` at their defaults
    (None or False), so torch code runs unchanged; refuse any other value, saying why."""
    for name, value in flags.items():
        if value is not None and value is not False:
            raise HandgradError(optimizer_name, f"{name}={value!r} is not supported: {_IMPLEMENTATION_FLAGS[name]}")


def check_lr(optimizer_name: str, lr) -> None:
    """A learning rate is a number or, as torch's Tensor lr, a one-element tensor or array (a NumPy
    or torch one), which stays in the group as given and is read as a number at each step."""
    if isinstance(lr, numbers.Real):
        return
    try:
        float(lr)
    except (TypeError, ValueError, RuntimeError):
        raise HandgradError(
            optimizer_name, f"lr must be a number or a one-element tensor, got {type(lr).__name__} {lr!r}"
        ) from None


class Optimizer:
    """Base class. ``params``: an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}``
    whose missing hyperparameters are taken from ``defaults``.

    Example::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss.backward(...); opt.step()
    """

    update_op: str | None = None  # e.g. "sgd_update": the kernels.op that _update calls
    #: the group's entries that the update op takes by name, as keyword arguments
    update_args: tuple[str, ...] = ()
    #: whether the update op takes ``flush`` (an op whose state only grows has nothing to flush)
    update_flushes = True
    #: hyperparameters that must be >= 0, checked in this order
    nonnegative: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict, **implementation_flags):
        """``implementation_flags``: torch's ``foreach``, ``fused``, ``capturable`` and
        ``differentiable``, as the subclass's signature takes them (see check_implementation_flags)."""
        check_implementation_flags(type(self).__name__, **implementation_flags)
        check_lr(type(self).__name__, defaults.get("lr", 0.0))
        self._check_hyperparameters(defaults)  # the defaults first, as torch does, before any group
        self.defaults = dict(defaults)
        self.state: dict[Parameter, dict] = {}
        self.param_groups: list[dict] = []
        self._scratch_arrays: dict[int, np.ndarray] = {}  # per-parameter temporaries, not state
        if isinstance(params, (Parameter, np.ndarray, dict)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Parameters or dicts, but got {type(params).__name__}"
            )
        if isinstance(params, set):
            raise TypeError(_SET_MESSAGE)
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- hyperparameters -------------------------------------------------------------------------
    @classmethod
    def _check_hyperparameters(cls, group: dict) -> None:
        """Raise ValueError, worded as torch words it, for an invalid value in ``group``.

        This checks the ``nonnegative`` ones (``not v >= 0`` also refuses NaN, as torch does); a
        subclass with other conditions extends it."""
        for name in cls.nonnegative:
            if not group[name] >= 0.0:
                raise ValueError(f"Invalid {_TORCH_WORDING.get(name, name + ' value')}: {group[name]}")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (e.g. layers unfrozen while fine-tuning); unset hyperparameters take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(_SET_MESSAGE)
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizer can only optimize Parameters, but one of the params is {type(p).__name__}")
        if len(set(params)) != len(params):
            # torch only warns here; a parameter listed twice would be updated twice per step.
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        if not {p for group in self.param_groups for p in group["params"]}.isdisjoint(params):
            raise ValueError("some parameters appear in more than one parameter group")

        group = {**self.defaults, **param_group, "params": params}
        check_lr(type(self).__name__, group.get("lr", 0.0))
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    # -- the update ------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (the default), or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad(set_to_none)

    def step(self, closure=None):
        """Update every parameter whose ``grad`` is not None; the others are skipped, their state untouched.

        ``closure``, if given, re-evaluates the model and returns the loss, which ``step`` returns.
        """
        loss = closure() if closure is not None else None
        self._step_count = getattr(self, "_step_count", 0) + 1
        self._flush_due = self._step_count % FLUSH_EVERY == 0  # the updates' ``flush`` argument
        self._update_fn = kernels.op(self.update_op) if self.update_op else None
        for group in self.param_groups:
            if not isinstance(group["lr"], numbers.Real):  # a Tensor lr: its value now, as a number
                group = {**group, "lr": float(group["lr"])}
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                # State and arithmetic stay in the parameter's dtype (float32 stays float32).
                grads = [p.grad if p.grad.dtype == p.dtype else p.grad.astype(p.dtype) for p in params]
                self._update_group(params, grads, [self.state.setdefault(p, {}) for p in params], group)
        return loss

    def _update_group(self, params: list, grads: list, states: list, group: dict) -> None:
        """The update of a group's parameters that have a gradient (with their gradients and
        states, in order): ``_update`` on each in turn, unless a subclass updates them all in one call."""
        for p, grad, state in zip(params, grads, states):
            self._update(p, grad, state, group)

    def _scratch(self, p: Parameter) -> np.ndarray:
        """A parameter-shaped work array reused across steps (its contents are garbage)."""
        buf = self._scratch_arrays.get(id(p))
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
            buf = self._scratch_arrays[id(p)] = np.empty_like(p.data)
        return buf

    def _update_kwargs(self, p: Parameter, group: dict) -> dict:
        """The update op's keyword arguments for ``p`` in ``group``: its ``update_args``, then
        ``flush`` (when it takes one) and ``scratch``."""
        kwargs = {name: group[name] for name in self.update_args}
        if self.update_flushes:
            kwargs["flush"] = self._flush_due
        kwargs["scratch"] = self._scratch(p)
        return kwargs

    def _update(self, p: Parameter, grad: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _update()")

    # -- state_dict ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A copy of the state in torch's layout, parameters numbered in group order::

        {"state": {index: {"step": ..., "exp_avg": array, ...}},
         "param_groups": [{"lr": ..., ..., "params": [index, ...]}]}
        """
        index: dict[Parameter, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(p, len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[p]: {k: _copy(v) for k, v in s.items()} for p, s in self.state.items() if p in index}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a ``state_dict()`` (group hyperparameters and per-parameter state).

        Everything is checked before anything changes, so a failed load leaves the optimizer as it
        was. State arrays are copied and cast to their parameter's dtype.
        """
        name = type(self).__name__
        missing = [key for key in ("state", "param_groups") if key not in state_dict]
        if missing:
            raise StateDictError(name, f"state dict has no {' or '.join(map(repr, missing))} entry")
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if len(saved_groups) != len(self.param_groups):
            raise StateDictError(
                name,
                "loaded state dict has a different number of parameter groups: "
                f"it has {len(saved_groups)}, the optimizer has {len(self.param_groups)}",
            )
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise StateDictError(
                    name,
                    "loaded state dict contains a parameter group that doesn't match the "
                    f"size of optimizer's group: group {i} has {len(saved['params'])} "
                    f"parameters, the optimizer's has {len(group['params'])}",
                )

        # Saved indices map, in order, onto this optimizer's parameters.
        param_of = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(g["params"] for g in self.param_groups),
            )
        )
        problems: list[str] = []
        state: dict = {}
        for index, saved in saved_state.items():
            p = param_of.get(index)
            if p is None:
                problems.append(f"state[{index!r}] belongs to no parameter of the loaded param_groups")
                continue
            state[p] = {}
            for key, value in saved.items():
                if key == "step":
                    state[p][key] = int(value)
                elif value is None:
                    state[p][key] = None
                else:
                    # Every other entry is an array shaped like the parameter (a plain float for a 0-d one).
                    value = np.asarray(value)
                    if value.shape != p.shape:
                        problems.append(
                            f"state[{index}][{key!r}] has shape {fmt_shape(value.shape)}, "
                            f"expected {fmt_shape(p.shape)} (the parameter's)"
                        )
                    else:
                        state[p][key] = np.array(value, dtype=p.dtype)
        if problems:
            raise StateDictError(name, "; ".join(problems))

        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {**group, **{k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}}
            new_group["params"] = group["params"]
            self._check_hyperparameters(new_group)
            new_groups.append(new_group)
        for group, new_group in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new_group)  # the same dict objects: references to a group stay valid
        self.state = state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else copy.deepcopy(value)
