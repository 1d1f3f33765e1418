"""GELU (exact and tanh), SiLU and Softplus (beta, threshold) against torch autograd in float64 over
their options, shapes and large inputs: the layers, the bridge's functions and twins, checkpoints,
and the errors for options they refuse."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import models, nn
from handgrad.errors import HandgradError

torch = pytest.importorskip("torch")

from conftest import assert_close, check_against_torch, to_numpy  # noqa: E402

import handgrad.torch as ht  # noqa: E402

# (layer class name, constructor keywords): the same keywords build handgrad's layer and torch's
GRID = [
    ("GELU", {}),
    ("GELU", {"approximate": "none"}),
    ("GELU", {"approximate": "tanh"}),
    ("SiLU", {}),
    ("Softplus", {}),
    ("Softplus", {"beta": 2.0}),
    ("Softplus", {"beta": 0.5, "threshold": 1.0}),
    ("Softplus", {"beta": 3, "threshold": 2}),
    ("Softplus", {"beta": -1.5, "threshold": 20.0}),
    ("Softplus", {"threshold": 0.0}),
]
SHAPES = [(3, 5), (2, 3, 4, 4), (7,), (1,)]
IDS = [f"{name}-{kw}" for name, kw in GRID]


def _input(shape, seed=0):
    """Values over [-6, 6] (both tails of each curve, and softplus's thresholds inside it)."""
    return np.random.default_rng(seed).uniform(-6, 6, shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, kwargs", GRID, ids=IDS)
def test_layer_matches_torch_autograd_in_float64(name, kwargs, shape, rng):
    check_against_torch(getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), _input(shape), rng)


@pytest.mark.parametrize("name, kwargs", GRID, ids=IDS)
def test_large_inputs_stay_finite_and_match_torch(name, kwargs):
    """|x| up to 700: exp overflows in a naive formula; handgrad's outputs and gradients stay finite."""
    x = np.array([-700.0, -60.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 60.0, 700.0])
    layer = getattr(nn, name)(**kwargs).double()
    out = layer(x)
    grad = layer.backward(np.ones_like(x))
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    x_t = torch.tensor(x, requires_grad=True)
    expected = getattr(torch.nn, name)(**kwargs)(x_t)
    expected.backward(torch.ones_like(x_t))
    # torch's own softplus backward is NaN where exp(beta x) overflows below the threshold; compare where it is finite
    finite = np.isfinite(to_numpy(x_t.grad))
    assert_close(out, to_numpy(expected), f"{name} {kwargs} output")
    assert_close(grad[finite], to_numpy(x_t.grad)[finite], f"{name} {kwargs} gradient")


@pytest.mark.parametrize("name, kwargs", GRID, ids=IDS)
def test_bridge_function_and_twin_match_torch(name, kwargs, rng):
    x = _input((4, 6), seed=1)
    upstream = torch.from_numpy(rng.standard_normal((4, 6)))
    ours, theirs = (torch.from_numpy(x.copy()).requires_grad_(True) for _ in range(2))
    functional = getattr(ht, name.lower())(ours, **kwargs)
    expected = getattr(torch.nn.functional, name.lower())(theirs, **kwargs)
    assert_close(to_numpy(functional), to_numpy(expected), f"ht.{name.lower()} output")
    functional.backward(upstream)
    expected.backward(upstream)
    assert_close(to_numpy(ours.grad), to_numpy(theirs.grad), f"ht.{name.lower()} gradient")
    assert torch.autograd.gradcheck(lambda t: getattr(ht, name.lower())(t, **kwargs), (ours.detach().requires_grad_(),))

    converted = ht.convert(torch.nn.Sequential(getattr(torch.nn, name)(**kwargs)))
    assert type(converted[0]) is getattr(ht, name)
    assert_close(to_numpy(converted[0](input=torch.from_numpy(x))), to_numpy(expected), f"ht.{name} twin")


@pytest.mark.parametrize("name, kwargs", GRID, ids=IDS)
def test_checkpoint_rebuilds_the_options(name, kwargs, tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), getattr(nn, name)(**kwargs))
    handgrad.save(model, tmp_path / "m.safetensors")
    loaded = handgrad.load(tmp_path / "m.safetensors")
    assert repr(loaded) == repr(model)
    x = _input((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    module = ht.load(tmp_path / "m.safetensors")
    assert type(module[1]) is getattr(ht, name)
    assert models.architecture(ht.to_handgrad(module)) == models.architecture(model)


@pytest.mark.parametrize("token, cls", [("gelu", nn.GELU), ("silu", nn.SiLU), ("softplus", nn.Softplus)])
def test_layer_spec_token_names_the_activation(token, cls):
    layers = models.parse_layer_spec(f"fc8-{token}", (4,), 3)
    assert [type(layer) for layer in layers] == [nn.Linear, cls, nn.Linear]  # a flat input needs no Flatten


REFUSED = [
    (lambda: nn.GELU(approximate="erf"), "GELU: approximate must be 'none' or 'tanh', got 'erf'"),
    (lambda: ht.gelu(torch.ones(2), approximate="fast"), "approximate must be 'none' or 'tanh', got 'fast'"),
    (lambda: ht.silu(torch.ones(2), inplace=True), "inplace=True is not supported: .* pass inplace=False"),
    (lambda: ht.relu(torch.ones(2), inplace=True), "ReLUFunction: inplace=True is not supported"),
    (lambda: ht.SiLU(inplace=True), "SiLU: inplace=True is not supported"),
]


@pytest.mark.parametrize("make, message", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_refused_options_name_the_option_and_what_to_use(make, message):
    with pytest.raises(HandgradError, match=message) as caught:
        make()
    assert "\n" not in str(caught.value)


def test_inplace_false_is_accepted_as_torch_spells_it():
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    for name in ("relu", "leaky_relu", "elu", "silu"):
        ours = getattr(ht, name)(x, inplace=False)
        assert_close(to_numpy(ours), to_numpy(getattr(torch.nn.functional, name)(x, inplace=False)), name)
