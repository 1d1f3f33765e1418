"""Everything that iterates the ops reads their specs (``functional.SPECS``) and the layers' registry
(``nn.LAYERS``): an op added with its spec and its layer is bridged to torch, checked against torch and
finite differences, explained and saved in checkpoints with no list edited anywhere else."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest

import handgrad
from handgrad import models, nn
from handgrad.app.explain import explain, forward_formula
from handgrad.functional import SPECS

torch = pytest.importorskip("torch")

from conftest import assert_close, check_against_torch, to_numpy  # noqa: E402

import handgrad.torch as ht  # noqa: E402

BRIDGED = [name for name, spec in SPECS.items() if spec.bridge is not None]


def _torch_arguments(spec, case):
    """The case's arguments for the bridge: floating tensors as float64 leaves that require grad."""

    def as_torch(value, tensor):
        if not isinstance(value, np.ndarray):
            return value
        t = torch.from_numpy(value.copy())
        return t.requires_grad_(True) if t.is_floating_point() and tensor else t

    arguments = spec.arguments(case)
    return tuple(as_torch(v, i < len(spec.tensors)) for i, v in enumerate(arguments))


# -- the bridge ------------------------------------------------------------------------------------------
def test_every_bridged_op_has_a_function_a_functional_form_and_a_twin():
    for name in BRIDGED:
        bridge = SPECS[name].bridge
        function, call = getattr(ht, bridge.function_name), getattr(ht, name)
        assert issubclass(function, ht.HandWrittenFunction) and function.spec is SPECS[name]
        order = bridge.signature or SPECS[name].tensors + SPECS[name].option_names
        assert [p for p in inspect.signature(call).parameters] == list(order)
        for module in (bridge.module,) + bridge.modules:
            twin = getattr(ht, module)
            assert ht.TWINS[getattr(torch.nn, module)] is twin and issubclass(twin, getattr(torch.nn, module))
            assert {function.__name__, name, twin.__name__} <= set(ht.__all__)


@pytest.mark.parametrize("name", BRIDGED)
def test_function_passes_torch_gradcheck_and_matches_the_torch_reference(name):
    spec = SPECS[name]
    function = getattr(ht, spec.bridge.function_name)
    for case in spec.make_cases(seed=3):
        args = _torch_arguments(spec, case)
        tensors, options = args[: len(spec.tensors)], args[len(spec.tensors) :]

        def apply(*tensors, options=options):  # fresh options on each call: dropout's generator, statistics
            return function.apply(*tensors, *copy.deepcopy(options))

        assert torch.autograd.gradcheck(apply, tensors, eps=1e-6, atol=1e-6, rtol=1e-5), case.config
        expected = spec.torch_reference(torch)(*[t for t in tensors if t is not None], **copy.deepcopy(case.options))
        assert_close(to_numpy(apply(*tensors)), to_numpy(expected), f"{name} [{case.config}] output")
        call = getattr(ht, name)  # by name: its order is torch's
        named = dict(zip(spec.tensors + spec.option_names, tensors + copy.deepcopy(options)))
        if set(named) <= set(inspect.signature(call).parameters):  # else dropout: its generator is handgrad's
            assert_close(to_numpy(call(**named)), to_numpy(expected), f"ht.{name} [{case.config}]")


def _twin_cases():
    """Ops whose torch.nn layer is built from the op's options alone (no weight to size)."""
    return [
        pytest.param(name, id=name)
        for name in BRIDGED
        if set(SPECS[name].tensors) <= {"input", "target"} and not _random_op(SPECS[name])
    ]


def _random_op(spec):
    """An op with an option torch's signature lacks: dropout's generator (its tests check properties)."""
    return bool(spec.bridge.signature) and not set(spec.option_names) <= set(spec.bridge.signature)


@pytest.mark.parametrize("name", _twin_cases())
def test_twin_matches_its_torch_nn_layer_and_convert_picks_it(name, rng):
    spec = SPECS[name]
    original = getattr(torch.nn, spec.bridge.module)
    for case in spec.make_cases(seed=4):
        if not set(case.options) <= set(inspect.signature(original).parameters):
            continue  # an option of the functional form alone (mse_loss's weight)
        # an array option (class weights) as torch.nn's constructor takes it
        options = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in case.options.items()}
        twin, theirs = getattr(ht, spec.bridge.module)(**options), original(**options)
        inputs = [torch.from_numpy(t.copy()) for t in case.tensors]
        ours = [t.requires_grad_(True) if t.is_floating_point() else t for t in inputs]
        copies = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        out, expected = twin(*ours), theirs(*copies)
        assert_close(to_numpy(out), to_numpy(expected), f"{name} [{case.config}] output")
        upstream = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        out.backward(upstream)
        expected.backward(upstream)
        for a, b in zip(ours, copies):
            if a.is_floating_point():
                assert_close(to_numpy(a.grad), to_numpy(b.grad), f"{name} [{case.config}] gradient")
        converted = ht.convert(torch.nn.Sequential(original(**options)))
        assert type(converted[0]) is type(twin)


# -- the layers: torch parity, checkpoints and explain, for every layer that runs an op ------------------------
def _layer_cases():
    """Every handgrad layer that runs an op of one input and is built from that op's options, with
    the op's first case: (layer class, constructor arguments, input)."""
    params = []
    for name, cls in sorted(nn.LAYERS.items()):
        spec = SPECS.get(cls.op)
        if spec is None or getattr(nn, name, None) is not cls or spec.tensors != ("input",):
            continue
        case = spec.make_cases(seed=5)[0]
        try:
            inspect.signature(cls).bind(**case.options)
        except TypeError:
            continue  # built from other arguments (Dropout draws its mask from handgrad's generator)
        params.append(pytest.param(cls, dict(case.options), case.tensors[0], id=name))
    return params


LAYER_CASES = _layer_cases()


def test_layer_cases_cover_the_activations_and_pools():
    names = {p.id for p in LAYER_CASES}
    assert {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MaxPool2d", "AvgPool2d"} <= names


@pytest.mark.parametrize("cls, options, x", LAYER_CASES)
def test_layer_matches_its_torch_nn_namesake(cls, options, x, rng):
    check_against_torch(cls(**options), getattr(torch.nn, cls.__name__)(**options), x * 2, rng)


@pytest.mark.parametrize("cls, options, x", LAYER_CASES)
def test_layer_round_trips_through_a_checkpoint(cls, options, x, tmp_path):
    model = nn.Sequential(cls(**options), nn.Flatten())
    rebuilt = models.from_architecture(models.architecture(model))
    assert repr(rebuilt) == repr(model)
    handgrad.save(model, tmp_path / "m.safetensors")
    loaded = handgrad.load(tmp_path / "m.safetensors")
    x = x.astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    module = ht.load(tmp_path / "m.safetensors")  # the same checkpoint as torch twins (torch.nn without one)
    with torch.no_grad():
        # float32: exact where a twin runs handgrad's math, to rounding where torch.nn's own runs
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), model(x), rtol=1e-6, atol=1e-7)
    assert repr(ht.to_handgrad(module)) == repr(model)


@pytest.mark.parametrize("cls, options, x", LAYER_CASES)
def test_explain_shows_the_ops_formula_and_checks_it_against_torch(cls, options, x):
    layer = cls(**options)
    report = explain(nn.Sequential(layer, nn.Flatten()), x, np.zeros(len(x), np.int64), samples=0)
    assert report.passed, str(report)
    step = report.steps[0]
    assert step.forward_formula == forward_formula(layer)
    assert step.forward_formula == inspect.cleandoc(SPECS[cls.op].forward.__doc__).split("\n\n")[0]
    assert step.grads and all(g.torch_rel_error is not None for g in step.grads)


# -- the layers' registry -------------------------------------------------------------------------------
def test_every_public_layer_is_registered_with_its_constructor_arguments():
    public = {
        name: cls
        for name, cls in vars(nn).items()
        if isinstance(cls, type) and issubclass(cls, nn.Module) and cls is not nn.Module
    }
    assert all(nn.LAYERS[name] is cls for name, cls in public.items())
    assert models.CONSTRUCTOR_ARGS["Linear"](nn.Linear(3, 2, bias=False)) == {
        "in_features": 3,
        "out_features": 2,
        "bias": False,
    }
    assert models.CONSTRUCTOR_ARGS["BatchNorm2d"](torch.nn.BatchNorm2d(4, momentum=None)) == {
        "num_features": 4,
        "eps": 1e-5,
        "momentum": None,
        "affine": True,
        "track_running_stats": True,
    }


def test_a_layer_defined_later_is_registered_and_cannot_shadow_handgrads():
    class Scale(nn.Module):
        def __init__(self, factor=2.0):
            super().__init__()
            self.factor = factor

        def constructor_args(self):
            return {"factor": self.factor}

    class Linear(nn.Module):  # a user's class of the same name as handgrad's
        pass

    assert models.CONSTRUCTOR_ARGS["Scale"](Scale(3.0)) == {"factor": 3.0}
    assert models.architecture(nn.Sequential(Scale(3.0))) == [{"type": "Scale", "factor": 3.0}]
    assert nn.LAYERS["Linear"] is nn.Linear and Linear is not nn.Linear


def test_explain_compares_a_user_activation_with_no_torch_layer_of_the_same_name():
    """A user's activation named as a torch.nn layer (here sin, under torch's "Mish") is not a handgrad
    layer: it has no torch reference, rather than torch's Mish as one."""
    mish = nn.define_activation("Mish", np.sin, np.cos)
    x = np.random.default_rng(6).standard_normal((3, 4))
    report = explain(nn.Sequential(nn.Linear(4, 3), mish()), x, np.array([0, 1, 2]))
    assert report.passed, str(report)
    assert [g.torch_rel_error for g in report.steps[1].grads] == [None]
