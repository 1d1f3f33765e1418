"""The PyTorch bridge: every handgrad op as a ``torch.autograd.Function`` whose forward and backward
run handgrad's own NumPy math (``handgrad.functional``), and ``torch.nn`` twins that swap in one for
one. The only module of handgrad that imports torch; ``import handgrad`` never loads it.

Three layers, each wrapping the one below and adding no math, built for every op whose spec names a
torch.nn layer (``functional.SPECS``; see ``functional/spec.py``), so a new op is bridged where it is
defined:

1. Functions (``LinearFunction``, ``ReLUFunction``, ... ``CrossEntropyFunction``; the spec names
   them). forward turns the tensors into NumPy arrays that share their memory, calls
   ``<op>_forward`` (through ``handgrad.kernels``), hands the arrays of the cache to
   ``ctx.save_for_backward`` (as the very input/output tensors where they are those) and returns the
   output as a tensor over the same memory. backward rebuilds the cache from ``ctx.saved_tensors``
   and calls ``<op>_backward`` (with ``ctx.needs_input_grad`` where it takes them).
2. Lower-case functions named as the ops (``linear``, ``conv2d``, ..., ``cross_entropy``) taking
   torch.nn.functional's arguments.
3. Modules (``Linear``, ``Conv2d``, ..., ``MSELoss``): subclasses of their ``torch.nn`` namesakes
   that replace only ``forward``: same constructor, parameters, initialisation, repr and state_dict
   keys. ``convert(model)`` switches every supported layer of a torch model to its twin (``TWINS``).

``ElementwiseFunction`` and the module ``Activation`` wrap a user-defined element-wise activation.

Checkpoints: ``save(module, path)`` writes a handgrad checkpoint from a torch Sequential and
``load(path)`` rebuilds one as a torch Sequential of twins (``to_handgrad`` / ``from_handgrad``).

Tensors must be on the CPU, strided, float32 or float64 (class targets: integer). Every Function is a
``HandWrittenFunction``: differentiable once, and any second derivative through it (Hessians, hvp,
create_graph=True then a second gradient), forward-mode AD or torch.func raises ``DoubleBackwardError``.

Example::

    >>> import torch, handgrad.torch as ht
    >>> model = ht.convert(torch.nn.Sequential(torch.nn.Linear(784, 10)))
    >>> loss = ht.CrossEntropyLoss()(model(torch.randn(32, 784)), torch.randint(0, 10, (32,)))
    >>> loss.backward()          # runs functional.linear_backward and cross_entropy_backward
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
from collections.abc import Callable

import numpy as np
import torch

from . import functional as F
from . import kernels
from . import nn as hnn
from .errors import DTypeError, HandgradError, ShapeError, fmt_shape

FLOAT_DTYPES = (torch.float32, torch.float64)


class DeviceError(HandgradError, RuntimeError):
    """A tensor handed to the bridge is not a strided CPU tensor."""


class UnsupportedError(HandgradError):
    """A torch.nn option the bridge does not implement (e.g. Conv2d's dilation or groups)."""


# -- tensors <-> arrays -------------------------------------------------------------------------------
def _array(where, name, tensor, floating=True) -> np.ndarray:
    """The tensor's data as a NumPy array over the same memory (no copy)."""
    if not isinstance(tensor, torch.Tensor):
        raise HandgradError(where, f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise DeviceError(
            where,
            f"{name} is on {tensor.device}, but handgrad runs on the CPU: move the tensor "
            f"with .cpu() (and the model with model.cpu()), or keep this layer as torch.nn",
        )
    if tensor.layout != torch.strided:
        raise DeviceError(
            where, f"expected {name} to be a dense (strided) tensor, got layout {tensor.layout}; use .to_dense()"
        )
    if floating and tensor.dtype not in FLOAT_DTYPES:
        raise DTypeError(
            where,
            f"expected {name} of dtype float32 or float64, got {tensor.dtype}; convert it with .float() or .double()",
        )
    return tensor.detach().numpy()


def _same_dtype(where, reference: str, arrays: dict) -> None:
    """Every floating array must have the dtype of ``arrays[reference]`` (handgrad never casts)."""
    dtype = arrays[reference].dtype
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise DTypeError(
                where,
                f"expected {name} of dtype {dtype.name} (the {reference}'s), got {a.dtype.name}; "
                f"convert the model or the input with .to() so they agree",
            )


def _tensor(a, avoid=()) -> torch.Tensor:
    """A NumPy result as a tensor over the same memory. Copied only when torch may not own it as it
    is: read-only, or sharing memory with an input (an output must not alias an input)."""
    a = np.asarray(a)
    if not a.flags.writeable or any(np.may_share_memory(a, other) for other in avoid):
        a = a.copy()
    return torch.from_numpy(a)


def _upstream(grad_output) -> np.ndarray:
    """dL/doutput as an array over the tensor's memory (read only by every functional backward)."""
    return grad_output.detach().numpy()


def _grads(*grads):
    return tuple(None if g is None else _tensor(g) for g in grads)


# -- the cache through save_for_backward ---------------------------------------------------------------
class _Slot:
    """Where the i-th saved tensor goes back into the cache."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


def _save_cache(ctx, cache, known) -> None:
    """Save every array of ``cache`` with ``ctx.save_for_backward``; the rest (shapes, flags,
    strides) stays on ``ctx``. An array that *is* an input's or the output's view is saved as that
    tensor, so autograd's version check catches an in-place change made before backward."""
    tensors = []

    def pack(item):
        if isinstance(item, tuple):
            return tuple(pack(part) for part in item)
        if isinstance(item, np.ndarray):
            tensor = next((t for a, t in known if a is item), None)
            tensors.append(_tensor(item) if tensor is None else tensor)
            return _Slot(len(tensors) - 1)
        return item

    ctx.cache_layout = pack(cache)
    ctx.save_for_backward(*tensors)


def _load_cache(ctx):
    arrays = [t.detach().numpy() for t in ctx.saved_tensors]

    def unpack(item):
        if isinstance(item, tuple):
            return tuple(unpack(part) for part in item)
        return arrays[item.index] if isinstance(item, _Slot) else item

    return unpack(ctx.cache_layout)


def _finish(ctx, out, cache, inputs) -> torch.Tensor:
    """Wrap the forward's output and save its cache. ``inputs``: (array, tensor) pairs."""
    out = np.asarray(out)
    # contiguous like torch's own outputs (Conv2d's arrives as a transposed view), so .view() works
    out_tensor = _tensor(out if out.flags.c_contiguous else np.ascontiguousarray(out), avoid=[a for a, _ in inputs])
    _save_cache(ctx, cache, list(inputs) + [(out, out_tensor)])
    return out_tensor


# -- double backward -------------------------------------------------------------------------------
class DoubleBackwardError(HandgradError, RuntimeError):
    """Autograd tried to differentiate a bridge Function's hand-written backward (or to run it under
    forward-mode AD or a torch.func transform)."""


def _refuse(name, what="double backward"):
    return DoubleBackwardError(
        f"handgrad.torch.{name}",
        f"{what} is not supported: the backward is handgrad's hand-written NumPy code, which autograd runs "
        f"once but cannot differentiate or transform (second gradients after create_graph=True, Hessians, "
        f"hvp/vhp/jvp of torch.autograd.functional, gradient penalties, forward-mode AD, torch.func). Use "
        f"the torch.nn layer for this part of the model: handgrad.torch.convert leaves any layer you do "
        f"not convert alone.",
    )


class _Refusal(torch.autograd.Function):
    """A node that raises ``DoubleBackwardError`` when autograd reaches it. Its outputs are copies of
    ``values`` (or one empty tensor); ``links`` are its inputs, there only to put it on the path from
    the copies back to every tensor that could influence them."""

    @staticmethod
    def forward(ctx, name, values, *links):
        ctx.name = name
        return tuple(v.clone() for v in values) if values else links[0].new_empty(0)

    @staticmethod
    def backward(ctx, *grads):
        raise _refuse(ctx.name)


class HandWrittenFunction(torch.autograd.Function):
    """Base of the bridge's Functions: a backward written by hand in NumPy, differentiable once.

    The contract of ``torch.autograd.function.once_differentiable``, kept on every autograd path.
    backward runs without recording a graph; when autograd records one (``create_graph=True``, as
    ``torch.autograd.functional.hessian``, ``hvp``, ``vhp`` and ``jvp`` do) the gradients it returns
    come out of a ``_Refusal`` node linked to the Function's inputs (through ``ctx.inputs_link``,
    made when the forward is recorded) and to the incoming gradients. Any second derivative in
    anything that reaches this Function therefore passes through that node and raises
    ``DoubleBackwardError``; it is never silently zero, as it is when the refusing node hangs off
    the graph (once_differentiable's) and ``allow_unused`` fills the gap. First-order gradients
    are the backward's own, unchanged. Forward-mode AD (``jvp``) raises the same error.

    Subclasses write ``forward`` and ``backward`` as for ``torch.autograd.Function``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in vars(cls):
            cls.backward = staticmethod(_differentiable_once(cls.__name__, cls.backward))

    @classmethod
    def apply(cls, *args):
        if torch._C._are_functorch_transforms_active():  # torch.func would otherwise fail on the old-style ctx
            raise _refuse(cls.__name__, "a torch.func transform (grad, vmap, jacrev, jacfwd, hessian)")
        out = super().apply(*args)
        node = out.grad_fn if isinstance(out, torch.Tensor) else None
        if node is not None:  # the forward was recorded: link its inputs to where a second backward would go
            tracked = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            node.inputs_link = _Refusal.apply(cls.__name__, (), *tracked)
        return out

    @classmethod
    def jvp(cls, ctx, *grad_inputs):
        raise _refuse(cls.__name__, "forward-mode AD")


def _differentiable_once(name, backward):
    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with torch.no_grad():
            grads = backward(ctx, *grad_outputs)
        if not torch.is_grad_enabled():
            return grads
        grads = grads if isinstance(grads, tuple) else (grads,)
        links = [g for g in grad_outputs if isinstance(g, torch.Tensor) and g.requires_grad]
        links += [ctx.inputs_link] if hasattr(ctx, "inputs_link") else []
        if not links:  # recorded outside apply (no link to the inputs): refuse now rather than risk a zero
            raise _refuse(name)
        present = [g for g in grads if g is not None]
        refused = iter(_Refusal.apply(name, tuple(present), *links)) if present else iter(())
        return tuple(None if g is None else next(refused) for g in grads)

    return wrapper


# -- every bridged op, built from its spec ----------------------------------------------------------
def _signature(spec, order=()) -> inspect.Signature:
    """The op's arguments: the tensors (None by default for an optional one), then the options with
    their defaults; or the names of ``order`` in that order (torch.nn.functional's, where it differs)."""
    P = inspect.Parameter
    defaults = {name: None for name in spec.optional} | {
        name: default for name, default in spec.options if default is not F.REQUIRED
    }
    params: list = []
    for name in reversed(order or spec.tensors + spec.option_names):
        # a default only where every later argument has one (BatchNorm's bias precedes running_mean)
        has_default = name in defaults and all(p.default is not P.empty for p in params)
        params.insert(0, P(name, P.POSITIONAL_OR_KEYWORD, **({"default": defaults[name]} if has_default else {})))
    return inspect.Signature(params)


def _first_paragraph(fn) -> str:
    return inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0]


def _function(spec) -> type:
    """The op as a ``HandWrittenFunction``: ``apply(*tensors, *options)`` in the spec's order.

    forward turns the tensors into arrays over their memory, checks them (``bridge.check``), runs
    ``<op>_forward`` (``kernels.op``: the compiled kernel where there is one) and saves the cache;
    backward runs ``<op>_backward`` on the saved cache with ``ctx.needs_input_grad`` where it takes them.
    """
    bridge, signature, count = spec.bridge, _signature(spec), len(spec.tensors)
    name = bridge.function_name

    def forward(ctx, *args):
        bound = signature.bind(*args)
        bound.apply_defaults()
        values = list(bound.arguments.values())
        tensors, options = values[:count], dict(zip(spec.option_names, values[count:]))
        arrays = {
            t: None if v is None and t in spec.optional else _array(name, t, v, floating=t not in spec.integer)
            for t, v in zip(spec.tensors, tensors)
        }
        _same_dtype(name, spec.tensors[0], {t: a for t, a in arrays.items() if t not in spec.integer})
        # a tensor among the options (a loss's class weights) is read as an array, with no gradient
        options = {k: _array(name, k, v) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
        if bridge.check is not None:
            options = bridge.check(name, arrays, options)
        out, cache = kernels.op(f"{spec.name}_forward")(*arrays.values(), **options)
        known = [(a, t) for a, t in zip(arrays.values(), tensors) if t is not None]
        if not isinstance(out, tuple):
            return _finish(ctx, out, cache, known)
        # the output, then integer ones with no gradient (max_pool2d's indices), saved as themselves
        extra = [(a, _tensor(a)) for a in out[1:]]
        ctx.mark_non_differentiable(*(t for _, t in extra))
        return (_finish(ctx, out[0], cache, known + extra), *(t for _, t in extra))

    def backward(ctx, grad_output, *no_gradient):
        needs = tuple(ctx.needs_input_grad[:count])
        flags = (needs,) if spec.needs_input_grad else ()
        result = kernels.op(f"{spec.name}_backward")(_upstream(grad_output), _load_cache(ctx), *flags)
        return _grads(*spec.tensor_gradients(result, needs)) + (None,) * len(spec.options)

    doc = (
        f"``{name}.apply{signature}``: the op ``{spec.name}`` on handgrad's math.\n\n"
        f"Forward (``functional.{spec.name}_forward``):\n\n{inspect.cleandoc(spec.forward.__doc__ or '')}\n\n"
        f"Backward (``functional.{spec.name}_backward``):\n\n{inspect.cleandoc(spec.backward.__doc__ or '')}"
    )
    namespace = {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
        "spec": spec,
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": name,
    }
    return types.new_class(name, (HandWrittenFunction,), exec_body=lambda ns: ns.update(namespace))


def _functional(spec, function) -> Callable:
    """The op as ``torch.nn.functional`` calls it, on handgrad's math."""
    signature = _signature(spec, spec.bridge.signature)
    # an option torch's signature lacks takes its default, None where it has none (dropout's generator)
    defaults = {name: None if default is F.REQUIRED else default for name, default in spec.options}

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        first = values[spec.tensors[0]]
        for t in spec.bridge.casts:  # through autograd, so the gradient flows back to the original dtype
            v = values[t]
            if (
                isinstance(v, torch.Tensor)
                and isinstance(first, torch.Tensor)
                and v.dtype != first.dtype
                and v.dtype.is_floating_point
            ):
                values[t] = v.to(first.dtype)
        return function.apply(
            *(values.get(name) for name in spec.tensors),
            *(values.get(name, defaults[name]) for name in spec.option_names),
        )

    call.__name__ = call.__qualname__ = spec.name
    call.__module__ = __name__
    call.__signature__ = signature  # type: ignore[attr-defined]  # read by inspect.signature
    call.__doc__ = f"``torch.nn.functional.{spec.name}`` on handgrad's math: {_first_paragraph(spec.forward)}"
    return call


# -- nn.Module twins ----------------------------------------------------------------------------------
class _Twin:
    """Mixin for the twins: ``unsupported(module)`` says why a torch.nn layer's configuration cannot
    run on handgrad's math (None when it can); the constructor refuses such a configuration."""

    @staticmethod
    def unsupported(module):
        return None

    def _get_name(self):  # the repr says which layers run on handgrad: "handgrad.Linear(...)"
        return "handgrad." + type(self).__name__

    def _check_supported(self):
        reason = type(self).unsupported(self)
        if reason is not None:
            raise UnsupportedError(f"handgrad.torch.{type(self).__name__}", reason)


def _twin(spec, functional, module) -> type:
    """A subclass of the torch.nn layer ``module`` that replaces only ``forward``: same constructor,
    parameters, initialisation, repr and state_dict. forward passes the tensors it is called with
    (the input, a loss's target), then the layer's own (weight, bias) and options, found by name on
    the layer (or given by the bridge's ``twin_options``)."""
    bridge = spec.bridge
    original = getattr(torch.nn, module)
    accepted = set(inspect.signature(functional).parameters)

    @functools.wraps(original.__init__)
    def __init__(self, *args, **kwargs):
        original.__init__(self, *args, **kwargs)
        self._check_supported()

    # torch.nn's own forward signature, so forward(input=x) and forward(input, target=y) work as there
    forward_signature = inspect.signature(original.forward)

    def forward(self, *args, **kwargs):
        inputs = list(forward_signature.bind(self, *args, **kwargs).arguments.values())[1:]
        tensors = dict(zip(spec.tensors, inputs)) | {name: getattr(self, name) for name in spec.tensors[len(inputs) :]}
        # an option torch.nn's layer does not keep (softmax's dtype, a loss's size_average) at its default
        options = {name: getattr(self, name, default) for name, default in spec.options}
        if bridge.twin_options is not None:
            options |= bridge.twin_options(self, inputs)
        return functional(**tensors, **{k: v for k, v in options.items() if k in accepted})

    forward.__signature__ = forward_signature  # type: ignore[attr-defined]  # read by inspect.signature

    unsupported = bridge.unsupported or _Twin.unsupported
    doc = (
        f"``torch.nn.{module}`` whose forward and backward are handgrad's ``{spec.name}`` pair: "
        f"{_first_paragraph(spec.forward)}"
    )
    return type(
        module,
        (_Twin, original),
        {
            "__init__": __init__,
            "forward": forward,
            "unsupported": staticmethod(unsupported),
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": module,
        },
    )


#: torch.nn class -> its twin
TWINS: dict = {}
_BRIDGED: list = []
for _spec in F.SPECS.values():
    if _spec.bridge is None:
        continue
    _fn = _function(_spec)
    _call = _functional(_spec, _fn)
    globals().update({_fn.__name__: _fn, _call.__name__: _call})
    _BRIDGED += [_fn.__name__, _call.__name__]
    for _module in (_spec.bridge.module,) + _spec.bridge.modules:
        _cls = _twin(_spec, _call, _module)
        TWINS[getattr(torch.nn, _module)] = _cls
        globals()[_cls.__name__] = _cls
        _BRIDGED.append(_cls.__name__)
del _spec, _fn, _call, _cls, _module


class MaxUnpool2d(TWINS[torch.nn.MaxUnpool2d]):  # type: ignore[misc, valid-type]
    """``torch.nn.MaxUnpool2d`` on handgrad's ``max_unpool2d`` pair: its forward takes ``output_size``
    beside the tensors, where the other twins' take the layer's options."""

    def forward(self, input, indices, output_size=None):
        return max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)  # noqa: F821


TWINS[torch.nn.MaxUnpool2d] = MaxUnpool2d


class ElementwiseFunction(HandWrittenFunction):
    """A user-defined activation y = function(x), dL/dx = G * derivative(x), both element-wise on
    NumPy arrays (``functional.elementwise_forward/backward``).

    ``ElementwiseFunction.apply(input, function, derivative)``
    """

    @staticmethod
    def forward(ctx, input, function, derivative):
        x = _array("ElementwiseFunction", "input", input)
        out, cache = F.elementwise_forward(x, function)
        if out.shape != x.shape:
            raise ShapeError(
                "ElementwiseFunction",
                f"the activation function must be element-wise: input {fmt_shape(x.shape)} gave {fmt_shape(out.shape)}",
            )
        ctx.derivative = derivative
        return _finish(ctx, out, cache, [(x, input)])

    @staticmethod
    def backward(ctx, grad_output):
        return _grads(F.elementwise_backward(_upstream(grad_output), _load_cache(ctx), ctx.derivative)) + (None, None)


class Activation(torch.nn.Module):
    """A user-defined element-wise activation as a torch module, running handgrad's
    ``elementwise_forward/backward`` (no parameters, so nothing in the state_dict).

    ``activation``: a handgrad ``nn.ElementwiseActivation`` subclass (or instance), e.g. one made by
    ``handgrad.nn.define_activation``, or a ``(function, derivative)`` pair of NumPy functions; a
    pair's derivative is checked against finite differences here, as handgrad checks its classes.

    Example::

        >>> swish = Activation((lambda x: x / (1 + np.exp(-x)),
        ...                     lambda x: (s := 1 / (1 + np.exp(-x))) * (1 + x * (1 - s))), name="Swish")
    """

    def __init__(self, activation, name: str | None = None):
        super().__init__()
        self.activation: type[hnn.ElementwiseActivation] | None  # the class, when one was given
        if isinstance(activation, hnn.ElementwiseActivation):
            activation = type(activation)
        if isinstance(activation, type) and issubclass(activation, hnn.ElementwiseActivation):
            self.name = name or activation.__name__
            self.function, self.derivative = activation.function, activation.derivative
            self.activation = activation
        elif isinstance(activation, (tuple, list)) and len(activation) == 2 and all(map(callable, activation)):
            self.name = name or "Activation"
            self.function, self.derivative = activation
            hnn.check_derivative(self.name, self.function, self.derivative)
            self.activation = None
        else:
            raise HandgradError(
                "handgrad.torch.Activation",
                f"expected a handgrad nn.ElementwiseActivation subclass "
                f"or a (function, derivative) pair, got {activation!r}",
            )

    def forward(self, input):
        return ElementwiseFunction.apply(input, self.function, self.derivative)

    def extra_repr(self) -> str:
        return self.name


#: torch.nn class -> its twin


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Swap every supported layer of ``model`` (the model itself included) for its handgrad twin and
    leave the rest alone: subclasses of torch.nn layers (their forward may be the user's) and
    configurations the twin refuses (see each twin's ``unsupported``) stay on autograd.

    The twin is a subclass of the torch.nn layer that replaces only ``forward``, so the swap keeps the
    same parameters, buffers, hooks and state_dict. ``inplace=False`` (default) converts a deep copy.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        twin = TWINS.get(type(module))
        if twin is not None and twin.unsupported(module) is None:
            module.__class__ = twin
    return model


# -- handgrad models and checkpoints <-> torch ------------------------------------------------------------
def from_handgrad(model) -> torch.nn.Sequential:
    """A handgrad ``nn.Sequential`` as a ``torch.nn.Sequential`` of twins with the same weights (copied),
    dtype and state_dict keys. Layers with no twin (Flatten, Dropout, BatchNorm, Softmax, ...) become
    their torch.nn namesakes; user activations become ``Activation``."""
    from .models import architecture

    layers = []
    for spec in architecture(model):
        spec = dict(spec)
        kind = spec.pop("type")
        cls = globals().get(kind) if kind in {c.__name__ for c in TWINS.values()} else getattr(torch.nn, kind, None)
        if cls is None:
            layers.append(Activation(hnn.get_activation(kind)))
            continue
        layers.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}))
    module = torch.nn.Sequential(*layers).to(getattr(torch, np.dtype(model.dtype).name))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    module.train(model.training)
    return module


def to_handgrad(module: torch.nn.Sequential):
    """A ``torch.nn.Sequential`` (twins or torch.nn layers) as a handgrad ``nn.Sequential`` with the same
    weights (copied). Every layer must be one handgrad has; an ``Activation`` must wrap a handgrad class."""
    from .models import CONSTRUCTOR_ARGS, from_architecture

    if not isinstance(module, torch.nn.Sequential):
        raise HandgradError(
            "handgrad.torch.to_handgrad", f"expected a torch.nn.Sequential, got {type(module).__name__}"
        )
    specs = []
    for layer in module:
        if isinstance(layer, Activation):
            if layer.activation is None:
                raise UnsupportedError(
                    "handgrad.torch.to_handgrad",
                    f"{layer!r} wraps a (function, derivative) pair; give it a handgrad ElementwiseActivation class",
                )
            specs.append({"type": layer.activation.__name__})
            continue
        kind = type(layer).__name__
        if not hasattr(hnn, kind):
            raise UnsupportedError("handgrad.torch.to_handgrad", f"handgrad has no layer {kind} (in {layer!r})")
        specs.append({"type": kind, **CONSTRUCTOR_ARGS.get(kind, lambda m: {})(layer)})
    params = [p for p in module.parameters()] + [b for b in module.buffers() if b.is_floating_point()]
    dtype = params[0].dtype if params else torch.float32
    model = from_architecture(specs).to(str(dtype).replace("torch.", ""))
    model.load_state_dict({k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()})
    model.train(module.training)
    return model


def save(module: torch.nn.Sequential, path, /, **metadata) -> None:
    """Save a torch Sequential as a handgrad checkpoint (``handgrad.save`` of ``to_handgrad(module)``)."""
    from .serialization import save as save_handgrad

    save_handgrad(to_handgrad(module), path, **metadata)


def load(path) -> torch.nn.Sequential:
    """A handgrad checkpoint as a torch Sequential of twins; ``.metadata`` holds the header."""
    from .serialization import load as load_handgrad

    model = load_handgrad(path)
    module = from_handgrad(model)
    module.metadata = model.metadata
    return module


__all__ = [
    "HandWrittenFunction",
    "ElementwiseFunction",
    "Activation",
    "TWINS",
    "convert",
    "from_handgrad",
    "to_handgrad",
    "save",
    "load",
    "DeviceError",
    "DoubleBackwardError",
    "UnsupportedError",
] + _BRIDGED
