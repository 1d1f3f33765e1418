"""SGD, Adam, AdamW, RMSprop and Adagrad in every configuration of torch's own optimizer test
database (``torch.testing._internal.common_optimizers.optim_db``) that runs on the CPU: step for step
with torch in float64 (parameters and state to 1e-6 relative, in fact to rounding), state_dicts
round-tripped mid-run and torch's own state_dicts loaded; and torch's implementation switches
(foreach, fused, capturable, differentiable) accepted at their defaults and refused otherwise,
naming the option."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import optim
from handgrad.errors import HandgradError
from handgrad.nn.parameter import Parameter

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch.testing's databases import it
from conftest import assert_close  # noqa: E402
from torch.testing._internal.common_optimizers import optim_db  # noqa: E402

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")
STEPS = 6
SHAPES = [(3, 2), (4,), (), (2, 1, 3)]  # a matrix, a vector, a scalar and a 3-d one


def _configurations():
    """(optimizer name, description, keywords) for every CPU configuration optim_db lists."""
    cases = []
    for info in optim_db:
        name = info.optim_cls.__name__
        if name not in OPTIMIZERS:
            continue
        for config in info.optim_inputs_func(device="cpu", dtype=torch.float64):
            assert config.params is None  # every one runs on the model's parameters, as here
            cases.append(pytest.param(name, config.kwargs, id=f"{name}-{config.desc}"))
    return cases


CONFIGURATIONS = _configurations()


def test_every_optimizer_has_configurations():
    assert {c.values[0] for c in CONFIGURATIONS} == set(OPTIMIZERS)


def _kwargs(kwargs):
    """The keywords for handgrad: a Tensor lr cloned (each optimizer its own, as torch's copies it)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def _pair(name, kwargs, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) for shape in SHAPES]
    params = [Parameter(a.copy()) for a in arrays]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    return getattr(optim, name)(params, **_kwargs(kwargs)), getattr(torch.optim, name)(tparams, **_kwargs(kwargs))


def _step(opt, topt, rng):
    for p, tp in zip(opt.param_groups[0]["params"], topt.param_groups[0]["params"]):
        g = rng.standard_normal(p.shape)
        p.grad, tp.grad = g.copy(), torch.tensor(g)
    opt.step()
    topt.step()


def _assert_same(opt, topt, what):
    for i, (p, tp) in enumerate(zip(opt.param_groups[0]["params"], topt.param_groups[0]["params"])):
        assert_close(p.data, tp.detach().numpy(), f"{what}: parameter {i}", tol=1e-6)
        ours, theirs = opt.state.get(p, {}), topt.state.get(tp, {})
        assert sorted(ours) == sorted(theirs), f"{what}: state keys of parameter {i}"
        for key, value in theirs.items():
            expected = value.detach().numpy() if isinstance(value, torch.Tensor) else value
            assert_close(np.asarray(ours[key], np.float64), np.asarray(expected, np.float64), f"{what}: {key}", 1e-6)


@pytest.mark.parametrize("name, kwargs", CONFIGURATIONS)
def test_steps_match_torch_in_float64(name, kwargs):
    opt, topt = _pair(name, kwargs)
    rng = np.random.default_rng(1)
    for step in range(STEPS):
        _step(opt, topt, rng)
        _assert_same(opt, topt, f"{name} {kwargs} step {step + 1}")


@pytest.mark.parametrize("name, kwargs", CONFIGURATIONS)
def test_state_dict_round_trip_mid_run_continues_as_torch(name, kwargs):
    opt, topt = _pair(name, kwargs)
    rng = np.random.default_rng(2)
    for _ in range(3):
        _step(opt, topt, rng)
    saved = opt.state_dict()
    params = [Parameter(p.data.copy()) for p in opt.param_groups[0]["params"]]
    resumed = getattr(optim, name)(params, **_kwargs(kwargs))
    resumed.load_state_dict(saved)
    for _ in range(3):
        _step(resumed, topt, rng)
        _assert_same(resumed, topt, f"{name} {kwargs} after loading")


@pytest.mark.parametrize("name, kwargs", CONFIGURATIONS)
def test_loads_torchs_state_dict_and_continues_as_torch(name, kwargs):
    opt, topt = _pair(name, kwargs)
    rng = np.random.default_rng(3)
    for _ in range(3):
        _step(opt, topt, rng)
    opt.load_state_dict(topt.state_dict())
    for _ in range(3):
        _step(opt, topt, rng)
        _assert_same(opt, topt, f"{name} {kwargs} after loading torch's")


def test_a_tensor_lr_is_read_at_every_step():
    """torch's reason for a Tensor lr: changed in place, the optimizer sees the new value."""
    lr = torch.tensor(0.1)
    p = Parameter(np.ones(3))
    opt = optim.SGD([p], lr=lr)
    p.grad = np.ones(3)
    opt.step()
    lr.fill_(0.5)
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.1 - 0.5)
    assert opt.param_groups[0]["lr"] is lr


FLAGS = {
    "SGD": ("foreach", "differentiable", "fused"),
    "Adam": ("foreach", "capturable", "differentiable", "fused"),
    "AdamW": ("foreach", "capturable", "differentiable", "fused"),
    "RMSprop": ("foreach", "capturable", "differentiable"),
    "Adagrad": ("foreach", "differentiable", "fused"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_implementation_flags_at_their_defaults_are_accepted_and_others_refused(name):
    for flag in FLAGS[name]:
        for default in (None, False) if flag in ("foreach", "fused") else (False,):
            getattr(optim, name)([Parameter(np.ones(2))], **{flag: default})
        with pytest.raises(HandgradError, match=f"{name}: {flag}=True is not supported: .* leave {flag}") as caught:
            getattr(optim, name)([Parameter(np.ones(2))], **{flag: True})
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("lr", [torch.tensor([0.1, 0.2]), np.array([0.1, 0.2]), "0.1x"], ids=["tensor", "array", "str"])
def test_an_lr_of_more_than_one_value_is_refused(lr):
    with pytest.raises(HandgradError, match="SGD: lr must be a number or a one-element tensor"):
        optim.SGD([Parameter(np.ones(2))], lr=lr)
