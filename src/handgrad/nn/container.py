"""Sequential: layers run in order forward, in reverse order backward."""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict

from .. import kernels
from .._grad_mode import is_grad_enabled
from ..errors import check_grad_output
from .activation import ReLU
from .conv import Conv2d
from .module import Module
from .pooling import MaxPool2d


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
        layers = list(self)
        fused = {}  # first layer of a fused run -> (its cache, the run's output shape)
        object.__setattr__(self, "_cache", None)
        i = 0
        while i < len(layers):
            if i in self._fusable(layers) and kernels.enabled():
                out = self._fused_forward(layers[i : i + 3], x)
                if out is not None:
                    x, cache = out
                    if is_grad_enabled():
                        fused[i] = (cache, x.shape)
                    i += 3
                    continue
            x = layers[i](x)
            i += 1
        object.__setattr__(self, "_cache", fused or None)
        return x

    def _fusable(self, layers) -> frozenset:
        """The indices i where layers i, i+1, i+2 are Conv2d, ReLU, MaxPool2d (exactly those
        classes: a subclass may change what they compute). Found once per list of layers."""
        key = tuple(map(id, layers))
        found = self.__dict__.get("_fusion")
        if found is None or found[0] != key:
            runs = frozenset(
                i for i in range(len(layers) - 2) if tuple(map(type, layers[i : i + 3])) == (Conv2d, ReLU, MaxPool2d)
            )
            found = (key, runs)
            object.__setattr__(self, "_fusion", found)
        return found[1]

    @staticmethod
    def _fused_forward(run, x):
        """Conv2d -> ReLU -> MaxPool2d as one compiled op: the same output as the three layers.
        None where the fused kernel does not apply (a dtype it is not compiled for, a convolution
        option it does not take, a pool window larger than the convolution's output), and the
        layers then run one by one."""
        conv, _, pool = run
        if pool.dilation != (1, 1) or pool.ceil_mode or pool.return_indices:
            return None  # pool options the fused kernel does not implement: the layers one by one
        conv.check_input(x)
        padding = conv.plain_padding()
        if x.dtype not in kernels.COMPILED_DTYPES or padding is None or x.ndim != 4:
            return None  # dilation, groups, padding modes, uneven 'same', unbatched: the layers one by one
        ho, wo = conv.output_size(*x.shape[2:])
        if any(s + 2 * p < k for s, k, p in zip((ho, wo), pool.kernel_size, pool.padding)):
            return None  # MaxPool2d raises its own error
        bias = None if conv.bias is None else conv.bias.data
        out, cache = kernels.op("conv2d_relu_max_pool2d_forward")(
            x,
            conv.weight.data,
            bias,
            conv.stride,
            padding,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            keep_cache=is_grad_enabled(),
        )
        for layer in run:  # their caches would be stale: a backward of one of them alone must fail
            object.__setattr__(layer, "_cache", None)
        return out, cache

    def backward(self, grad_output, input_grad: bool = True):
        layers = list(self)
        fused = self._cache or {}
        # has_params_before[i]: does some layer before i hold a trainable parameter?
        has_params_before, seen = [], False
        for layer in layers:
            has_params_before.append(seen)
            seen = seen or any(p.requires_grad for p in layer.parameters())
        grad = grad_output
        i = len(layers) - 1
        while i >= 0:
            needs = input_grad or has_params_before[i]
            if not needs and not any(p.requires_grad for p in layers[i].parameters()):
                return None  # nothing from here down has a gradient anyone needs
            if i - 2 in fused:
                conv = layers[i - 2]
                cache, out_shape = fused[i - 2]
                check_grad_output(layers[i], grad, out_shape)
                needs = input_grad or has_params_before[i - 2]
                flags = (needs, conv.weight.requires_grad, conv.bias is not None and conv.bias.requires_grad)
                grad, grad_weight, grad_bias = kernels.op("conv2d_relu_max_pool2d_backward")(grad, cache, flags)
                conv.weight.accumulate_grad(grad_weight, owned=True)
                if conv.bias is not None:
                    conv.bias.accumulate_grad(grad_bias, owned=True)
                i -= 3
                continue
            grad = layer_backward(layers[i], grad, needs)
            i -= 1
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
