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
from .linear import Linear
from .module import Module
from .pooling import MaxPool2d

#: The runs of layers Sequential hands to one fused op (``kernels/fused.py``) while the kernels are
#: on: exactly these classes (a subclass may change what it computes), the longer run first.
FUSIONS = ((Conv2d, ReLU, MaxPool2d), (Linear, ReLU))


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

    While the compiled kernels are on, each run of ``FUSIONS`` (Linear -> ReLU, Conv2d -> ReLU ->
    MaxPool2d) goes through one fused op of ``handgrad.kernels``, with the layers' result; each
    layer still works alone.
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
        runs = self._fusable(layers) if kernels.enabled() else {}
        keep = is_grad_enabled()
        fused = {}  # last layer of a fused run -> (the run, the op's backward, its cache, its output shape)
        object.__setattr__(self, "_cache", None)
        i = 0
        while i < len(layers):
            size = runs.get(i)
            if size:
                run = layers[i : i + size]
                out = _fused_forward(run, x, keep)
                if out is not None:
                    x, backward, cache = out
                    if keep:
                        fused[i + size - 1] = (run, backward, cache, x.shape)
                    i += size
                    continue
            x = layers[i](x)
            i += 1
        object.__setattr__(self, "_cache", fused or None)
        return x

    def _fusable(self, layers) -> dict[int, int]:
        """Where a run of ``FUSIONS`` starts -> its length, taken from the left, the longer run first
        where two start at one layer. Found once per list of layers."""
        key = tuple(map(id, layers))
        found = self.__dict__.get("_fusion")
        if found is None or found[0] != key:
            types, runs, i = tuple(map(type, layers)), {}, 0
            while i < len(layers):
                size = next((len(run) for run in FUSIONS if types[i : i + len(run)] == run), 1)
                if size > 1:
                    runs[i] = size
                i += size
            found = (key, runs)
            object.__setattr__(self, "_fusion", found)
        return found[1]

    def backward(self, grad_output, input_grad: bool = True):
        layers = list(self)
        fused = self._cache or {}
        # below the first layer with a trainable parameter, only dL/dx of the whole model could be wanted
        first = next((i for i, layer in enumerate(layers) if _trainable(layer)), len(layers))
        grad = grad_output
        i = len(layers) - 1
        while i >= 0:
            if i < first and not input_grad:
                return None  # nothing from here down has a gradient anyone needs
            if i in fused:
                run, backward, cache, out_shape = fused[i]
                check_grad_output(layers[i], grad, out_shape)
                start = i - len(run) + 1
                weight, bias = run[0].weight, run[0].bias
                flags = (input_grad or start > first, weight.requires_grad, bias is not None and bias.requires_grad)
                grad, grad_weight, grad_bias = backward(grad, cache, flags)
                weight.accumulate_grad(grad_weight, owned=True)
                if bias is not None:
                    bias.accumulate_grad(grad_bias, owned=True)
                i = start - 1
                continue
            grad = layer_backward(layers[i], grad, input_grad or i > first)
            i -= 1
        return grad


def _trainable(layer: Module) -> bool:
    """Does ``layer`` hold a parameter that requires a gradient? A layer without sub-modules is read
    off its own dict, as walking ``parameters()`` costs several microseconds a layer."""
    if layer._modules:
        return any(p.requires_grad for p in layer.parameters())
    return any(p is not None and p.requires_grad for p in layer._parameters.values())


def _fused_forward(run, x, keep_cache: bool):
    """A run of ``FUSIONS`` as one compiled op: (its output, the op's backward, its cache), the
    output the same as the layers' one by one. None where the fused kernel does not apply (a dtype
    it is not compiled for, a pool window larger than the convolution's output), and the layers then
    run one by one. The backward is looked up now, so it always reads the cache its forward wrote."""
    first = run[0]
    first.check_input(x)  # the errors of the first layer, as it would raise them alone
    if x.dtype not in kernels.COMPILED_DTYPES:
        return None
    weight, bias = first.weight.data, first.bias
    bias = None if bias is None else bias.data
    if type(first) is Linear:
        out, cache = kernels.op("linear_relu_forward")(x, weight, bias, keep_cache=keep_cache)
        backward = kernels.op("linear_relu_backward")
    else:
        pool = run[2]
        if pool.dilation != (1, 1) or pool.ceil_mode or pool.return_indices:
            return None  # pool options the fused kernel does not implement: the layers one by one
        padding = first.plain_padding()
        if padding is None or x.ndim != 4:
            return None  # dilation, groups, padding modes, uneven 'same', unbatched: the layers one by one
        size = first.output_size(*x.shape[2:])
        if any(s + 2 * p < k for s, k, p in zip(size, pool.kernel_size, pool.padding)):
            return None  # MaxPool2d raises its own error
        out, cache = kernels.op("conv2d_relu_max_pool2d_forward")(
            x,
            weight,
            bias,
            first.stride,
            padding,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            keep_cache=keep_cache,
        )
        backward = kernels.op("conv2d_relu_max_pool2d_backward")
    for layer in run:  # their caches would be stale: a backward of one of them alone must fail
        object.__setattr__(layer, "_cache", None)
    return out, backward, cache


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
