"""An op's spec: what the rest of handgrad needs to know about a forward/backward pair besides its math.

Each ``functional/<op>.py`` ends by registering one ``OpSpec`` per pair it defines. The PyTorch bridge
(``handgrad.torch``: its Function, lower-case function and torch.nn twin), ``handgrad gradcheck``
(``verify``), ``handgrad explain`` and the tests iterate ``SPECS``; none keeps a list of ops of its
own. Adding an op is its pair and spec in ``functional/`` and its layer in ``nn/``.

Arguments are named as ``torch.nn.functional`` names them (``input``, ``weight``, ``bias``, ``target``,
``stride``, ...), so one call, ``f(*tensors, **options)``, runs the pair's forward, its torch reference
and the bridge's Function alike. Nothing here imports torch: a torch reference is a function that is
handed the torch module when it is first needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ShapeError, fmt_shape


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: The default of an option that has none: every call must give it.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Case:
    """One configuration to check an op in: ``forward(*tensors, **options)``.

    ``tensors``: the op's tensor arguments in its spec's order (a trailing optional one, a bias, may
    be left out); the gradient of every floating one is checked. ``options``: the other arguments.
    """

    config: str
    tensors: tuple
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bridge:
    """What ``handgrad.torch`` needs beyond the spec to wrap an op as a ``HandWrittenFunction``, a
    ``torch.nn.functional``-style function and a twin of a ``torch.nn`` layer.

    ``module``: the torch.nn class the twin subclasses (the twin takes its name); ``function``: the
    Function's name (default ``module + "Function"``). ``check(where, arrays, options) -> options``:
    the op's checks at that boundary (shapes, option values), returning the options as the pair takes
    them. ``unsupported(module) -> str | None``: why the twin cannot run a torch.nn layer's
    configuration (None when it can). ``casts``: tensors the lower-case function casts to the
    input's dtype first, through autograd (a loss target, as torch does).

    ``signature``: the lower-case function's argument names in torch's order, where torch mixes
    tensors and options (``batch_norm(input, running_mean, running_var, weight, ...)``); () for
    the tensors, then the options. An option left out of it takes its default. ``modules``: more
    torch.nn classes with a twin of this op (BatchNorm2d besides BatchNorm1d).
    ``twin_options(module, inputs) -> options``: what the twin's forward passes where torch.nn's
    layer does more than read its attributes of the options' names (BatchNorm counting batches).
    """

    module: str
    function: str | None = None
    check: Callable[..., dict] | None = None
    unsupported: Callable[[Any], str | None] | None = None
    casts: tuple[str, ...] = ()
    signature: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    twin_options: Callable[[Any, tuple], dict] | None = None

    @property
    def function_name(self) -> str:
        return self.function or self.module + "Function"


@dataclass(frozen=True)
class OpSpec:
    """One op: its pair, how to check it, and how to bridge it.

    ``forward(*tensors, **options) -> (out, cache)`` and ``backward(grad_output, cache[, needs_input_grad])``
    are the reference pair, named ``<name>_forward`` / ``<name>_backward`` (``handgrad.kernels.op``
    finds a compiled kernel by that name). ``tensors``: the tensor arguments in order; ``optional``:
    those that may be None (a bias); ``integer``: those of integer dtype, with no gradient (class
    indices). ``options``: ``(name, default)`` of every other argument, ``REQUIRED`` where there is no
    default. ``needs_input_grad``: the backward takes the flags of which gradients to compute.
    ``gradients(result, needs) -> one gradient per tensor``: where the backward does not return that
    already (default: its result, None for the tensors past it).

    ``torch_reference(torch) -> f(*tensors, **options)``: the same op in torch, for autograd to
    differentiate. ``cases(rng) -> iterable of Case``: the configurations to check, each built from
    ``rng`` with arrays of its own. ``bridge``: how ``handgrad.torch`` wraps it (None: not bridged).
    """

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    torch_reference: Callable[[Any], Callable[..., Any]]
    cases: Callable[[np.random.Generator], Iterable[Case]]
    tensors: tuple[str, ...] = ("input",)
    options: tuple[tuple[str, Any], ...] = ()
    optional: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()
    needs_input_grad: bool = False
    gradients: Callable[[Any, tuple], tuple] | None = None
    bridge: Bridge | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.options)

    def make_cases(self, seed: int = 0) -> list[Case]:
        """The op's configurations, freshly built from ``seed``."""
        return list(self.cases(np.random.default_rng(seed)))

    def arguments(self, case: Case) -> tuple:
        """The case as positional arguments in the spec's order: the tensors (None for a missing
        optional one), then every option (its default where the case gives none)."""
        tensors = tuple(case.tensors) + (None,) * (len(self.tensors) - len(case.tensors))
        return tensors + tuple(case.options.get(name, default) for name, default in self.options)

    def tensor_gradients(self, result, needs: tuple) -> tuple:
        """The backward's result as one gradient per tensor argument (None where there is none)."""
        if self.gradients is not None:
            return tuple(self.gradients(result, needs))
        grads = result if isinstance(result, tuple) else (result,)
        return tuple(grads) + (None,) * (len(self.tensors) - len(grads))


#: Every op by name, in the order the functional modules define them.
SPECS: dict[str, OpSpec] = {}


def register(*specs: OpSpec) -> None:
    for spec in specs:
        if spec.name in SPECS:
            raise ValueError(f"an op named {spec.name!r} is already registered")
        if spec.forward.__name__ != f"{spec.name}_forward" or spec.backward.__name__ != f"{spec.name}_backward":
            raise ValueError(
                f"op {spec.name!r}: its pair must be named {spec.name}_forward / {spec.name}_backward, "
                f"got {spec.forward.__name__} / {spec.backward.__name__}"
            )
        SPECS[spec.name] = spec


def check_input_weight_bias(where: str, arrays: Mapping, layout_ok: bool, feature_axis: int, expected: str) -> None:
    """A bridge check for an op whose weight is (out, in, ...) and whose bias is (out,): one
    ShapeError that gives all three shapes unless ``layout_ok`` (the caller's test of the dims),
    input.shape[feature_axis] == weight.shape[1] and the bias (if any) is (weight.shape[0],).
    ``expected`` says the layouts taken, e.g. "input (N, C, H, W), weight (O, C, kH, kW) and bias (O,)"."""
    x, weight, bias = arrays["input"], arrays["weight"], arrays["bias"]
    if (
        not layout_ok
        or x.shape[feature_axis] != weight.shape[1]
        or (bias is not None and bias.shape != weight.shape[:1])
    ):
        raise ShapeError(
            where,
            f"expected {expected}; got input {fmt_shape(x.shape)}, weight {fmt_shape(weight.shape)}, "
            f"bias {None if bias is None else fmt_shape(bias.shape)}",
        )


def refuse_inplace(module) -> str | None:
    """A twin's ``unsupported`` for torch.nn activations with an ``inplace`` flag."""
    return "inplace=True is not supported (handgrad writes a new output)" if module.inplace else None
