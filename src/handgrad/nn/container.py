"""Sequential: layers run in order forward, in reverse order backward."""
from __future__ import annotations

import functools
import inspect
from collections import OrderedDict

from .module import Module


@functools.lru_cache(maxsize=None)
def _takes_input_grad(cls) -> bool:
    """User layers may define ``backward(grad_output)`` without the ``input_grad`` flag."""
    params = inspect.signature(cls.backward).parameters
    return "input_grad" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def layer_backward(layer: Module, grad_output, input_grad: bool):
    if _takes_input_grad(type(layer)):
        return layer.backward(grad_output, input_grad=input_grad)
    return layer.backward(grad_output)


class Sequential(Module):
    """Chain of layers: ``forward`` feeds each output to the next; ``backward`` walks them in
    reverse, each turning dL/d(its output) into dL/d(its input).

    Layers before the first one with parameters get ``input_grad=False`` unless dL/dx of the whole
    model is asked for, so no work is spent on gradients nobody uses.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, layer in layers[0].items():
                setattr(self, name, layer)
        else:
            for i, layer in enumerate(layers):
                setattr(self, str(i), layer)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):  # keeps the keys, so the slice's state_dict matches torch's
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def append(self, layer: Module) -> "Sequential":
        setattr(self, str(len(self)), layer)
        return self

    def forward(self, x):
        for layer in self:
            x = layer(x)
        return x

    def backward(self, grad_output, input_grad: bool = True):
        layers = list(self)
        # has_params_before[i]: does some layer before i hold a trainable parameter?
        has_params_before, seen = [], False
        for layer in layers:
            has_params_before.append(seen)
            seen = seen or any(p.requires_grad for p in layer.parameters())
        grad = grad_output
        for i in reversed(range(len(layers))):
            needs = input_grad or has_params_before[i]
            if not needs and not any(p.requires_grad for p in layers[i].parameters()):
                return None  # nothing from here down has a gradient anyone needs
            grad = layer_backward(layers[i], grad, needs)
        return grad


class ModuleList(Module):
    """A list of layers registered as sub-modules (keys "0", "1", ...); no forward of its own."""

    def __init__(self, layers=()):
        super().__init__()
        for layer in layers:
            self.append(layer)

    def append(self, layer: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), layer)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        return list(self._modules.values())[index]
