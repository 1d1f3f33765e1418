"""Module: the base of every layer. Parameters, buffers and sub-modules are found by walking the
attributes in the order they were set, which gives the same state_dict keys as PyTorch."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Iterator

import numpy as np

from .._grad_mode import is_grad_enabled
from ..errors import BackwardBeforeForwardError, StateDictError, check_grad_output, fmt_shape
from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

#: Every layer class by name, registered as it is defined; ``models.CONSTRUCTOR_ARGS`` reads each
#: one's ``constructor_args``. A user's class cannot shadow handgrad's; it replaces a user's class of
#: its name (a notebook cell run again, a plug-in imported anew), as the activations' registry does.
LAYERS: dict[str, type[Module]] = {}


class Module:
    """Base class: subclasses define ``forward(x)`` and ``backward(grad_output, input_grad=True)``.

    ``backward`` takes dL/doutput, accumulates dL/dparameter into each ``Parameter.grad`` and
    returns dL/dinput (or None when ``input_grad`` is False: the first layer need not compute it).

    ``op``: the name of the functional op the layer runs (its spec in ``functional.SPECS`` gives
    ``handgrad explain`` the formulas and the torch reference); ``constructor_args()``: the arguments
    that rebuild the layer, saved in checkpoints.
    """

    op: str | None = None
    #: How a checkpoint's architecture entry for this layer is checked before anything is built:
    #: keyword -> (kind, required), kinds as ``models.check_architecture`` knows them ("size",
    #: "size pair", "bool", "number", ...). None: the layer cannot be stored in a checkpoint.
    arguments: dict[str, tuple[str, bool]] | None = None
    #: Buffers a state_dict or checkpoint may lack; they keep their value then (BatchNorm's
    #: num_batches_tracked, which older files do not hold).
    optional_buffers: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            current = LAYERS.get(cls.__name__)
            if current is None or not _builtin(current) and not _builtin(cls):
                LAYERS[cls.__name__] = cls

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)

    # -- attribute walk --------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() in {type(self).__name__}.__init__ before assigning {name!r}")
        if isinstance(value, (Parameter, Module)):
            target = self._parameters if isinstance(value, Parameter) else self._modules
            for store in (self._parameters, self._buffers, self._modules):
                if store is not target:
                    store.pop(name, None)
            target[name] = value  # replacing keeps the key's place (layer order, state_dict order), as PyTorch
            object.__setattr__(self, name, value)  # mirrored in __dict__, as the note below says
        elif name in self._buffers:
            self._buffers[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r}: wrap it in nn.Parameter")
            self._parameters[name] = None
            object.__setattr__(self, name, None)
        else:
            object.__setattr__(self, name, value)

    # Parameters and sub-modules live in ``_parameters`` / ``_modules`` (the attribute walk reads
    # them) and are mirrored in the instance's __dict__, so that ``layer.weight`` is a plain attribute
    # lookup: through ``__getattr__``, which Python calls only after the plain lookup has failed,
    # each read cost over a microsecond, a dozen times in every training step. Buffers, replaced by
    # assignment as often as read, are found by ``__getattr__`` alone.

    def __getattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self.__dict__.pop(name, None)  # its mirror
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """A non-trainable array saved in the state_dict (e.g. BatchNorm's running statistics)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        self._parameters[name] = value
        object.__setattr__(self, name, value)  # mirrored, as __setattr__ does

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Each parameter once, under its first name: a tied weight must not be stepped twice."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- forward / backward ----------------------------------------------------------------------
    def forward(self, *args) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _save_for_backward(self, cache, out_shape) -> None:
        """Keep the forward's cache (and output shape, to check grad_output) unless in no_grad."""
        object.__setattr__(self, "_cache", (cache, tuple(out_shape)) if is_grad_enabled() else None)

    def _saved(self, grad_output):
        """The cache of the last forward, after checking that there was one and grad_output fits it."""
        if self._cache is None:
            raise BackwardBeforeForwardError(
                self, "backward() called before forward() (or the forward ran under handgrad.no_grad())"
            )
        cache, out_shape = self._cache
        check_grad_output(self, grad_output, out_shape)
        return cache

    # -- modes and gradients ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def apply(self, fn) -> Module:
        for module in list(self.modules())[::-1]:
            fn(module)
        return self

    # -- dtype -----------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (float32 unless converted)."""
        for p in self.parameters():
            return p.dtype
        return np.dtype(np.float32)

    def to(self, dtype) -> Module:
        """Convert every floating parameter and buffer to ``dtype``, in place; returns self."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"{self!r}: to() takes a floating dtype, got {dtype.name}")
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None and np.issubdtype(p.dtype, np.floating):
                    p.data = p.data.astype(dtype)
                    p.grad = None if p.grad is None else p.grad.astype(dtype)
            for name, b in module._buffers.items():
                if b is not None and np.issubdtype(b.dtype, np.floating):
                    module._buffers[name] = b.astype(dtype)
            object.__setattr__(module, "_cache", None)
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # -- state_dict ------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, under PyTorch's keys (``"0.weight"``, ...)."""
        state = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    state[prefix + name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None:
                    state[prefix + name] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into this module's parameters and buffers, cast to their dtype.

        Everything is checked first (missing, unexpected and mis-shaped keys are all listed in one
        error), so a failed load leaves the module unchanged. With ``strict=False`` missing and
        unexpected keys are returned instead of raised; shape mismatches always raise.
        """
        targets = {}
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for store in (module._parameters, module._buffers):
                for name, value in store.items():
                    if value is not None:
                        targets[prefix + name] = (module, store, name)
        missing = [
            k
            for k, (module, store, name) in targets.items()
            if k not in state_dict and not (store is module._buffers and name in module.optional_buffers)
        ]
        unexpected = [k for k in state_dict if k not in targets]
        mis_shaped = []
        for key, (_, store, name) in targets.items():
            if key in state_dict:
                current = store[name].data if isinstance(store[name], Parameter) else store[name]
                got = np.shape(_as_numpy(state_dict[key]))
                if tuple(got) != tuple(np.shape(current)):
                    mis_shaped.append(f"{key}: expected {fmt_shape(np.shape(current))}, got {fmt_shape(got)}")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mis_shaped:
            problems.append("mis-shaped: " + "; ".join(mis_shaped))
        if problems:
            first_line = repr(self).split("\n")[0]  # the layer as it prints; a container's name alone
            raise StateDictError(first_line.rstrip("(") + ".load_state_dict()", "; ".join(problems))
        for key, (module, store, name) in targets.items():
            if key not in state_dict:
                continue
            current = store[name]
            value = _as_numpy(state_dict[key])
            if isinstance(current, Parameter):
                current.data = np.array(value, dtype=current.dtype, copy=True)
            else:
                store[name] = np.array(value, dtype=current.dtype, copy=True)
            object.__setattr__(module, "_cache", None)
        return IncompatibleKeys(missing, unexpected)

    # -- printing and rebuilding -------------------------------------------------------------------
    def constructor_args(self) -> dict:
        """The arguments that rebuild this layer, ``type(layer)(**layer.constructor_args())`` (the dtype
        aside), read back from it. Written with attributes torch.nn's namesake has too, so it reads a
        torch layer alike (``handgrad.torch.to_handgrad``)."""
        return {}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _builtin(cls) -> bool:
    return cls.__module__.startswith("handgrad.")


def _as_numpy(value):
    """Accept numpy arrays and anything with ``.numpy()`` (a CPU torch tensor) without importing torch."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        return value.numpy()
    return np.asarray(value)
