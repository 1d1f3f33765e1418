"""The configurations PyTorch tests its own layers with, read from torch.testing's databases in
float64: the module database (constructor and forward inputs for each ``torch.nn`` class) and the
op database (sample inputs for each ``torch.nn.functional`` op).

``test_torch_configurations.py`` runs every one of them through handgrad (bridge twin, functional
form and nn layer) and through torch, and compares the two.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """One configuration; ``build()`` gives fresh copies of its tensors."""

    name: str  # the torch.nn class or the torch op, e.g. "Conv2d" or "nn.functional.conv2d"
    variant: str  # the op's variant, or "train"/"eval" for a module
    index: int
    desc: str

    @property
    def id(self) -> str:
        label = self.name + (f".{self.variant}" if self.variant not in ("", "train") else "")
        return f"{label}-{self.index}" + (f"-{self.desc}" if self.desc else "")

    @property
    def training(self) -> bool:
        return self.variant != "eval"

    def build(self):
        """(constructor args, constructor kwargs, forward args, forward kwargs) for a module,
        ((input, *args), kwargs) for an op: clones, so that an in-place layer cannot spoil the next."""
        if self.name in _module_db():
            entry = _module_inputs(self.name, self.training)[self.index]
            constructor, forward = entry.constructor_input, entry.forward_input
            return _clone((constructor.args, constructor.kwargs, forward.args, forward.kwargs))
        sample = _op_inputs(self.name, self.variant)[self.index]
        return _clone(((sample.input, *sample.args), sample.kwargs))


@functools.cache
def _module_db() -> dict:
    from torch.testing._internal.common_modules import module_db

    return {info.module_cls.__name__: info for info in module_db}


@functools.cache
def _op_db() -> dict:
    from torch.testing._internal.common_methods_invocations import op_db

    return {(info.name, info.variant_test_name): info for info in op_db}


@functools.cache
def _module_inputs(name: str, training: bool) -> list:
    info = _module_db()[name]
    torch.manual_seed(0)  # the databases draw their tensors from torch's RNG: the same numbers every run
    return info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True, training=training)


@functools.cache
def _op_inputs(name: str, variant: str) -> list:
    torch.manual_seed(0)
    return list(_op_db()[(name, variant)].sample_inputs("cpu", torch.float64, requires_grad=True))


def _clone(tree):
    def copy(x):
        if isinstance(x, torch.Tensor):
            return x.detach().clone().requires_grad_(x.requires_grad)
        return x

    return torch.utils._pytree.tree_map(copy, tree)


def module_cases(name: str) -> list[Case]:
    """Every (constructor, forward) input torch's module database has for ``torch.nn.<name>``, in
    training mode and, where the class behaves differently there, in eval mode too."""
    modes = ("train", "eval") if _module_db()[name].train_and_eval_differ else ("train",)
    return [
        Case(name, mode, i, _short(entry.desc))
        for mode in modes
        for i, entry in enumerate(_module_inputs(name, mode == "train"))
    ]


def op_cases(name: str, variant: str = "") -> list[Case]:
    """Every sample input torch's op database has for ``name`` (e.g. "nn.functional.conv2d")."""
    return [Case(name, variant, i, "") for i in range(len(_op_inputs(name, variant)))]


def _short(desc) -> str:
    return "".join(c if c.isalnum() or c in "_=" else "_" for c in (desc or ""))[:40]
