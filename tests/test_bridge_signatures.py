"""The bridge takes torch's exact signatures: every twin in ``handgrad.torch.TWINS`` has its torch.nn
layer's constructor and ``forward`` (names, kinds, defaults), and every lower-case function has
torch.nn.functional's (read from the function, or from the first line of its docstring where torch
defines it in C++), so code written for torch, keywords and all, runs on the bridge unchanged."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from handgrad.functional import SPECS

torch = pytest.importorskip("torch")

from conftest import assert_close, to_numpy  # noqa: E402

import handgrad.torch as ht  # noqa: E402

TWINS = [pytest.param(original, twin, id=original.__name__) for original, twin in ht.TWINS.items()]
#: ops whose functional form does not take all of torch's keywords yet (conv2d's dilation and
#: groups): strict, so an entry must go as soon as its op takes them
NOT_YET = {"conv2d"}
FUNCTIONS = [
    pytest.param(
        name,
        id=name,
        marks=[pytest.mark.xfail(strict=True, reason="takes part of torch's keywords")] if name in NOT_YET else [],
    )
    for name, spec in SPECS.items()
    if spec.bridge is not None and hasattr(torch.nn.functional, name)
]


def _parameters(signature: inspect.Signature, skip_self: bool = False) -> list:
    """(name, kind, default) of each parameter: what a caller sees, annotations aside."""
    params = list(signature.parameters.values())[1 if skip_self else 0 :]
    return [(p.name, p.kind, p.default) for p in params]


def _documented_signature(function) -> inspect.Signature:
    """The signature in the first line of a C++ function's docstring: ``conv2d(input, weight, bias=None,
    stride=1, padding=0, dilation=1, groups=1) -> Tensor``."""
    head = inspect.cleandoc(function.__doc__).split("\n")[0].split(" -> ")[0]
    tree = ast.parse(f"def {head}: pass").body[0]
    assert isinstance(tree, ast.FunctionDef)
    P, args = inspect.Parameter, tree.args
    defaults = [P.empty] * (len(args.args) - len(args.defaults)) + [ast.literal_eval(d) for d in args.defaults]
    params = [P(a.arg, P.POSITIONAL_OR_KEYWORD, default=d) for a, d in zip(args.args, defaults)]
    params += [
        P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else ast.literal_eval(d))
        for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    return inspect.Signature(params)


def torch_signature(function) -> inspect.Signature:
    """torch.nn.functional's signature of ``function``: its own where Python defines it, else (a C++
    builtin, or a dispatcher such as max_pool2d's that takes ``*args, **kwargs``) its docstring's."""
    try:
        signature = inspect.signature(function)
    except ValueError:
        return _documented_signature(function)
    kinds = {p.kind for p in signature.parameters.values()}
    if kinds == {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        return _documented_signature(function)
    return signature


def test_every_bridged_op_has_a_twin_and_the_identity_one():
    assert torch.nn.Identity in ht.TWINS
    bridged = {m for spec in SPECS.values() if spec.bridge for m in (spec.bridge.module, *spec.bridge.modules)}
    assert bridged == {c.__name__ for c in ht.TWINS}


@pytest.mark.parametrize("original, twin", TWINS)
def test_twin_constructor_takes_torchs_signature(original, twin):
    assert _parameters(inspect.signature(twin.__init__)) == _parameters(inspect.signature(original.__init__))


@pytest.mark.parametrize("original, twin", TWINS)
def test_twin_forward_takes_torchs_signature(original, twin):
    assert _parameters(inspect.signature(twin.forward)) == _parameters(inspect.signature(original.forward))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functional_form_takes_torchs_signature(name):
    ours = _parameters(inspect.signature(getattr(ht, name)))
    assert ours == _parameters(torch_signature(getattr(torch.nn.functional, name)))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functional_form_runs_with_every_keyword_at_torchs_default(name):
    """Every option passed by keyword, at torch's default: the result is that of the call without them."""
    spec = SPECS[name]
    case = spec.make_cases(seed=7)[0]
    tensors = {t: torch.from_numpy(a.copy()) for t, a in zip(spec.tensors, case.tensors)}
    defaults = {
        p.name: p.default
        for p in torch_signature(getattr(torch.nn.functional, name)).parameters.values()
        if p.name not in spec.tensors and p.default is not inspect.Parameter.empty
    }
    options = {**defaults, **case.options}
    if name in ("dropout", "dropout2d"):  # random masks: p = 0 keeps every element in both libraries
        options = {**defaults, "p": 0.0}
    options = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    expected = getattr(torch.nn.functional, name)(**tensors, **options)
    assert_close(to_numpy(getattr(ht, name)(**tensors, **options)), to_numpy(expected), f"ht.{name} by keyword")


@pytest.mark.parametrize("original, twin", [p for p in TWINS if p.id in ("ReLU", "GELU", "Identity", "MSELoss")])
def test_twin_forward_takes_its_tensors_by_keyword(original, twin, rng):
    x = torch.from_numpy(rng.standard_normal((3, 4)))
    inputs = {"input": x} if original is not torch.nn.MSELoss else {"input": x, "target": torch.zeros(3, 4).double()}
    assert_close(to_numpy(twin()(**inputs)), to_numpy(original()(**inputs)), f"{original.__name__} by keyword")


def test_mse_loss_weight_matches_torch(rng):
    x, target = (torch.from_numpy(rng.standard_normal((3, 4))).requires_grad_(True) for _ in range(2))
    weight = torch.from_numpy(rng.uniform(0.5, 2.0, (3, 4)))
    for reduction in ("mean", "sum", "none"):
        ours = ht.mse_loss(x, target, reduction=reduction, weight=weight)
        theirs = torch.nn.functional.mse_loss(x, target, reduction=reduction, weight=weight)
        assert_close(to_numpy(ours), to_numpy(theirs), f"mse_loss weight {reduction}")
        upstream = torch.ones_like(theirs)
        assert_close(
            [g.numpy() for g in torch.autograd.grad(ours, (x, target), upstream)],
            [g.numpy() for g in torch.autograd.grad(theirs, (x, target), upstream)],
            f"mse_loss weight {reduction} gradients",
        )
