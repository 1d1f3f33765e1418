"""Optimizers and schedulers: parity with torch.optim step for step, dtype, state_dict, errors."""

import copy
import re

import numpy as np
import pytest

from handgrad import optim
from handgrad.errors import HandgradError, StateDictError
from handgrad.nn.parameter import Parameter

SHAPES = [(4, 3), (3,), (2, 3, 2)]
STEPS = 20
# Far tighter than float64 parity needs to be, so that a misplaced eps (a ~1e-8 relative change) fails.
TOL = dict(rtol=1e-10, atol=1e-12)

CONFIGS = [  # (id, optimizer name, keyword arguments shared by handgrad and torch)
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd-momentum", "SGD", dict(lr=0.1, momentum=0.9)),
    ("sgd-dampening", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov", "SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-weight-decay", "SGD", dict(lr=0.1, weight_decay=0.01)),
    ("sgd-all", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("sgd-maximize", "SGD", dict(lr=0.1, momentum=0.5, weight_decay=0.01, maximize=True)),
    ("adam", "Adam", dict(lr=0.01)),
    ("adam-weight-decay", "Adam", dict(lr=0.01, weight_decay=0.1)),
    ("adam-amsgrad", "Adam", dict(lr=0.01, amsgrad=True)),
    (
        "adam-amsgrad-decay-maximize",
        "Adam",
        dict(lr=0.02, betas=(0.5, 0.6), weight_decay=0.1, amsgrad=True, maximize=True),
    ),
    ("adam-large-eps", "Adam", dict(lr=0.01, eps=0.1)),
    ("adamw", "AdamW", dict(lr=0.01)),
    ("adamw-amsgrad", "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    # torch's own test inputs for RMSprop and Adagrad (optim_inputs_func_*), plus a few more
    ("rmsprop", "RMSprop", dict()),
    ("rmsprop-lr", "RMSprop", dict(lr=1e-3)),
    ("rmsprop-weight-decay", "RMSprop", dict(weight_decay=0.1)),
    ("rmsprop-maximize", "RMSprop", dict(maximize=True)),
    ("rmsprop-centered", "RMSprop", dict(weight_decay=0.1, centered=True)),
    ("rmsprop-maximize-weight-decay", "RMSprop", dict(maximize=True, weight_decay=0.1)),
    ("rmsprop-momentum", "RMSprop", dict(weight_decay=0.1, centered=True, momentum=0.1)),
    ("rmsprop-all", "RMSprop", dict(weight_decay=0.1, centered=True, momentum=0.1, maximize=True)),
    ("rmsprop-momentum-uncentered", "RMSprop", dict(lr=1e-3, momentum=0.9)),
    ("rmsprop-small-alpha-centered", "RMSprop", dict(alpha=0.3, eps=1e-3, centered=True)),
    ("adagrad", "Adagrad", dict()),
    ("adagrad-weight-decay", "Adagrad", dict(weight_decay=0.1)),
    ("adagrad-maximize", "Adagrad", dict(weight_decay=0.1, maximize=True)),
    ("adagrad-lr", "Adagrad", dict(lr=0.1)),
    ("adagrad-initial-accumulator", "Adagrad", dict(initial_accumulator_value=0.1, weight_decay=0.1)),
    ("adagrad-lr-decay", "Adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.1)),
    ("adagrad-eps", "Adagrad", dict(lr=0.1, eps=1e-3)),
]
#: the state each optimizer keeps per parameter, given its keyword arguments
STATE_KEYS = {
    "SGD": lambda kw: {"momentum_buffer"} if kw.get("momentum") else set(),
    "Adam": lambda kw: {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if kw.get("amsgrad") else set()),
    "AdamW": lambda kw: {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if kw.get("amsgrad") else set()),
    "RMSprop": lambda kw: (
        {"step", "square_avg"}
        | ({"momentum_buffer"} if kw.get("momentum") else set())
        | ({"grad_avg"} if kw.get("centered") else set())
    ),
    "Adagrad": lambda kw: {"step", "sum"},
}
CONFIG_IDS = [c[0] for c in CONFIGS]
CONFIGS = [c[1:] for c in CONFIGS]


def make_arrays(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


def make_grads(seed, steps, dtype=np.float64):
    """Random gradients whose scale changes from step to step (so AMSGrad's max matters)."""
    rng = np.random.default_rng(seed)
    return [[(rng.normal(size=shape) * rng.uniform(0.1, 3.0)).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.copy()
        opt.step()


def torch_pair(torch, arrays):
    return [torch.nn.Parameter(torch.tensor(a)) for a in arrays]


def run_torch(torch, opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()


# -- parity with torch.optim ----------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_step_for_step(name, kwargs):
    torch = pytest.importorskip("torch")
    arrays, grads = make_arrays(0), make_grads(1, STEPS)
    params = [Parameter(a.copy()) for a in arrays]
    tparams = torch_pair(torch, arrays)
    opt = getattr(optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for step, step_grads in enumerate(grads):
        run(opt, params, [step_grads])
        run_torch(torch, topt, tparams, [step_grads])
        for i, (p, tp) in enumerate(zip(params, tparams)):
            np.testing.assert_allclose(
                p.data, tp.detach().numpy(), **TOL, err_msg=f"{name} {kwargs}: parameter {i} after step {step + 1}"
            )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("Adam", dict(lr=0.01, weight_decay=0.1)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ],
    ids=["sgd-momentum", "adam", "adamw", "rmsprop", "adagrad"],
)
def test_two_param_groups_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    arrays, grads = make_arrays(2), make_grads(3, STEPS)
    params = [Parameter(a.copy()) for a in arrays]
    tparams = torch_pair(torch, arrays)
    opt = getattr(optim, name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.003}], **kwargs)
    topt = getattr(torch.optim, name)([{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.003}], **kwargs)
    run(opt, params, grads)
    run_torch(torch, topt, tparams, grads)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("Adam", dict(lr=0.01)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ],
    ids=["sgd-momentum", "adam", "rmsprop", "adagrad"],
)
def test_intermittent_grad_none_matches_torch(name, kwargs):
    # A parameter without a gradient is skipped: its buffer and (Adam) step count do not advance.
    torch = pytest.importorskip("torch")
    arrays = make_arrays(4)
    grads = [
        [None if (step % 3 == 0 and i == 1) else g for i, g in enumerate(step_grads)]
        for step, step_grads in enumerate(make_grads(5, STEPS))
    ]
    params = [Parameter(a.copy()) for a in arrays]
    tparams = torch_pair(torch, arrays)
    opt, topt = getattr(optim, name)(params, **kwargs), getattr(torch.optim, name)(tparams, **kwargs)
    run(opt, params, grads)
    run_torch(torch, topt, tparams, grads)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL)


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_buffers_equal_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    arrays, grads = make_arrays(6), make_grads(7, 7)
    params = [Parameter(a.copy()) for a in arrays]
    tparams = torch_pair(torch, arrays)
    opt, topt = getattr(optim, name)(params, **kwargs), getattr(torch.optim, name)(tparams, **kwargs)
    run(opt, params, grads)
    run_torch(torch, topt, tparams, grads)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    for group, tgroup in zip(ours["param_groups"], theirs["param_groups"]):
        assert {k: v for k, v in tgroup.items() if k in group} == group
    keys = STATE_KEYS[name](kwargs)
    for index in range(len(arrays)):
        assert set(ours["state"].get(index, {})) == keys
        for key in keys - {"step"}:
            np.testing.assert_allclose(
                ours["state"][index][key],
                theirs["state"][index][key].numpy(),
                **TOL,
                err_msg=f"state[{index}][{key!r}]",
            )
        if "step" in keys:
            assert ours["state"][index]["step"] == int(theirs["state"][index]["step"]) == len(grads)


# -- dtype, identity, gradients -------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_float32_stays_float32_in_place(name, kwargs):
    arrays, grads = make_arrays(8, np.float32), make_grads(9, 3, np.float32)
    params = [Parameter(a.copy()) for a in arrays]
    data_ids = [id(p.data) for p in params]
    opt = getattr(optim, name)(params, **kwargs)
    run(opt, params, grads)
    assert [id(p.data) for p in params] == data_ids
    assert all(p.data.dtype == np.float32 for p in params)
    assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray))
    assert not any(np.array_equal(p.data, a) for p, a in zip(params, arrays))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    params = [Parameter(a) for a in make_arrays(10)]
    grads = make_grads(11, 1)[0]
    for p, g in zip(params, grads):
        p.grad = g
    optim.SGD(params, lr=0.1).zero_grad(set_to_none=set_to_none)
    for p, g in zip(params, grads):
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is g and not p.grad.any()


@pytest.mark.parametrize(
    "name, kwargs",
    [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01))],
    ids=["sgd-momentum", "adam", "adamw"],
)
def test_params_with_grad_none_are_skipped(name, kwargs):
    arrays = make_arrays(12)
    params = [Parameter(a.copy()) for a in arrays]
    opt = getattr(optim, name)(params, **kwargs)
    params[0].grad = make_grads(13, 1)[0][0]
    opt.step()
    assert not np.array_equal(params[0].data, arrays[0])
    for p, a in zip(params[1:], arrays[1:]):
        np.testing.assert_array_equal(p.data, a)
        assert p not in opt.state


def test_step_returns_closure_loss():
    p = Parameter(np.ones(3))
    p.grad = np.ones(3)
    assert optim.SGD([p], lr=0.1).step(lambda: 1.5) == 1.5


# -- state_dict -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_resumes_exactly(name, kwargs):
    arrays, grads = make_arrays(14), make_grads(15, 10)
    params = [Parameter(a.copy()) for a in arrays]
    run(getattr(optim, name)(params, **kwargs), params, grads)

    first = [Parameter(a.copy()) for a in arrays]
    opt = getattr(optim, name)(first, **kwargs)
    run(opt, first, grads[:5])
    saved = opt.state_dict()
    resumed = [Parameter(p.data.copy()) for p in first]
    fresh = getattr(optim, name)(resumed, **{**kwargs, "lr": 0.5})
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    run(fresh, resumed, grads[5:])
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(q.data, p.data)


def test_state_dict_is_a_copy():
    p = Parameter(np.ones(3))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["exp_avg"][:] = 7.0
    saved["param_groups"][0]["lr"] = 9.0
    assert not (opt.state[p]["exp_avg"] == 7.0).any()
    assert opt.param_groups[0]["lr"] == 0.1


def test_load_state_dict_casts_to_parameter_dtype():
    source = [Parameter(a) for a in make_arrays(16)]
    opt = optim.Adam(source, lr=0.01, amsgrad=True)
    run(opt, source, make_grads(17, 2))
    target = [Parameter(a) for a in make_arrays(16, np.float32)]
    loaded = optim.Adam(target, lr=0.01, amsgrad=True)
    loaded.load_state_dict(opt.state_dict())
    for p in target:
        assert {k: v.dtype for k, v in loaded.state[p].items() if k != "step"} == dict.fromkeys(
            ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], np.dtype(np.float32)
        )
        assert loaded.state[p]["step"] == 2


def test_load_state_dict_accepts_json_style_values():
    # As a checkpoint stored as JSON gives them back: betas a list, step a float, a 0-d state a float.
    params = [Parameter(np.array(0.5)), Parameter(np.ones(2))]
    opt = optim.Adam(params, lr=0.01)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    saved = opt.state_dict()
    saved["param_groups"][0]["betas"] = list(saved["param_groups"][0]["betas"])
    saved["state"][0] = {k: float(v) for k, v in saved["state"][0].items()}
    saved["state"][1]["step"] = np.asarray(1.0)
    loaded = optim.Adam([Parameter(np.array(0.5)), Parameter(np.ones(2))], lr=0.01)
    loaded.load_state_dict(saved)
    for p, q in zip(params, loaded.param_groups[0]["params"]):
        assert loaded.state[q]["step"] == 1
        np.testing.assert_array_equal(loaded.state[q]["exp_avg"], opt.state[p]["exp_avg"])
        assert isinstance(loaded.state[q]["exp_avg"], np.ndarray)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1)),
    ],
    ids=["sgd-momentum", "adamw-amsgrad", "rmsprop-all", "adagrad-all"],
)
def test_loads_torch_state_dict_and_continues_as_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    arrays, grads = make_arrays(20), make_grads(21, 10)
    tparams = torch_pair(torch, arrays)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    run_torch(torch, topt, tparams, grads[:5])
    params = [Parameter(tp.detach().numpy().copy()) for tp in tparams]
    opt = getattr(optim, name)(params, **kwargs)
    opt.load_state_dict(topt.state_dict())
    run(opt, params, grads[5:])
    run_torch(torch, topt, tparams, grads[5:])
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL)


def _trained_adam(shapes, seed=18):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.normal(size=s)) for s in shapes]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.01)
    for p in params:
        p.grad = rng.normal(size=p.shape)
    opt.step()
    return opt


def _bad_state_dicts():
    """(id, a state_dict that must not load into _trained_adam([(2, 3), (3,), (4,)]), error pattern)."""
    good = _trained_adam([(2, 3), (3,), (4,)]).state_dict()
    one_group = copy.deepcopy(good)
    one_group["param_groups"] = [{**good["param_groups"][0], "params": [0, 1, 2]}]
    sizes = copy.deepcopy(good)
    sizes["param_groups"][0]["params"], sizes["param_groups"][1]["params"] = [0, 1], [2]
    shapes = _trained_adam([(3, 2), (3,), (4,)]).state_dict()
    stray = copy.deepcopy(good)
    stray["state"][3] = stray["state"][2]
    return [
        ("group-count", one_group, "different number of parameter groups: it has 1, the optimizer has 2"),
        ("group-size", sizes, "group 0 has 2 parameters, the optimizer's has 1"),
        ("shape", shapes, re.escape("state[0]['exp_avg'] has shape (3, 2), expected (2, 3)")),
        ("stray-index", stray, re.escape("state[3] belongs to no parameter")),
    ]


@pytest.mark.parametrize("case", range(4), ids=["group-count", "group-size", "shape", "stray-index"])
def test_load_state_dict_error_leaves_optimizer_unchanged(case):
    _, bad, pattern = _bad_state_dicts()[case]
    opt = _trained_adam([(2, 3), (3,), (4,)], seed=19)
    before = opt.state_dict()
    with pytest.raises(StateDictError, match=pattern):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for index, state in before["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


def test_load_state_dict_error_is_a_value_error():
    assert issubclass(StateDictError, ValueError)


# -- param groups ---------------------------------------------------------------------------------
def test_add_param_group_fills_defaults():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.01})
    assert opt.param_groups[1] == dict(
        lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False, params=[b]
    )


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda a: optim.SGD([{"params": [a]}, {"params": [a]}]), ValueError, "more than one parameter group"),
        (lambda a: optim.SGD([a, a]), ValueError, "duplicate parameters"),
        (lambda a: optim.SGD([]), ValueError, "empty parameter list"),
        (lambda a: optim.SGD(a), TypeError, "iterable of Parameters or dicts"),
        (lambda a: optim.SGD([a.data]), TypeError, "can only optimize Parameters"),
        (lambda a: optim.SGD({a}), TypeError, "ordered collections"),
    ],
    ids=["shared", "duplicate", "empty", "bare-parameter", "array", "set"],
)
def test_bad_params_raise(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(Parameter(np.ones(2)))


# -- hyperparameter checks ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("SGD", dict(lr=-0.1), "Invalid learning rate: -0.1"),
        ("SGD", dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        ("SGD", dict(lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
        ("SGD", dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (
            "SGD",
            dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        ("Adam", dict(lr=-1.0), "Invalid learning rate: -1.0"),
        ("Adam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        ("Adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        ("Adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        ("Adam", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        ("AdamW", dict(betas=(-0.1, 0.999)), "Invalid beta parameter at index 0: -0.1"),
        ("RMSprop", dict(lr=-0.01), "Invalid learning rate: -0.01"),
        ("RMSprop", dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        ("RMSprop", dict(momentum=-1.0), "Invalid momentum value: -1.0"),
        ("RMSprop", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        ("RMSprop", dict(alpha=-0.5), "Invalid alpha value: -0.5"),
        ("Adagrad", dict(lr=-0.01), "Invalid learning rate: -0.01"),
        ("Adagrad", dict(lr=1e-2, lr_decay=-0.5), "Invalid lr_decay value: -0.5"),
        ("Adagrad", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        ("Adagrad", dict(initial_accumulator_value=-1.0), "Invalid initial_accumulator_value value: -1.0"),
        ("Adagrad", dict(eps=-1e-10), "Invalid epsilon value: -1e-10"),
    ],
)
def test_invalid_hyperparameters_raise_as_torch(name, kwargs, message):
    params = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(optim, name)(params, **kwargs)


# -- torch's implementation switches ----------------------------------------------------------------
FLAGS = {  # the switches each torch optimizer takes, at their default values
    "SGD": dict(foreach=None, differentiable=False, fused=None),
    "Adam": dict(foreach=None, capturable=False, differentiable=False, fused=None),
    "AdamW": dict(foreach=None, capturable=False, differentiable=False, fused=None),
    "RMSprop": dict(foreach=None, capturable=False, differentiable=False),
    "Adagrad": dict(foreach=None, differentiable=False, fused=None),
}


@pytest.mark.parametrize("name", list(FLAGS))
def test_implementation_flags_accepted_at_torch_defaults(name):
    torch = pytest.importorskip("torch")
    arrays, grads = make_arrays(40), make_grads(41, 3)
    params, tparams = [Parameter(a.copy()) for a in arrays], torch_pair(torch, arrays)
    explicit = {**FLAGS[name], "foreach": False} if "foreach" in FLAGS[name] else FLAGS[name]
    opt = getattr(optim, name)(params, lr=0.01, **explicit)
    topt = getattr(torch.optim, name)(tparams, lr=0.01, **explicit)
    run(opt, params, grads)
    run_torch(torch, topt, tparams, grads)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL)


@pytest.mark.parametrize(
    "name, flag",
    [(name, flag) for name in FLAGS for flag in FLAGS[name]],
    ids=[f"{name}-{flag}" for name in FLAGS for flag in FLAGS[name]],
)
def test_implementation_flags_refused_otherwise(name, flag):
    with pytest.raises(HandgradError, match=rf"^{name}: {flag}=True is not supported: .*leave {flag}[ =]"):
        getattr(optim, name)([Parameter(np.ones(2))], lr=0.01, **{flag: True})


def test_adagrad_state_exists_from_construction_as_torch():
    torch = pytest.importorskip("torch")
    arrays = make_arrays(42)
    opt = optim.Adagrad([Parameter(a) for a in arrays], initial_accumulator_value=0.25)
    topt = torch.optim.Adagrad(torch_pair(torch, arrays), initial_accumulator_value=0.25)
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    assert ours.keys() == theirs.keys() == set(range(len(arrays)))
    for index in ours:
        assert ours[index]["step"] == int(theirs[index]["step"]) == 0
        np.testing.assert_array_equal(ours[index]["sum"], theirs[index]["sum"].numpy())
    added = Parameter(np.ones(3))
    opt.add_param_group({"params": [added], "lr": 0.5})
    np.testing.assert_array_equal(opt.state[added]["sum"], np.full(3, 0.25))  # torch would fail at step() here


def test_rmsprop_momentum_switched_on_later_starts_from_zero():
    # A scheduler (OneCycleLR) may set a group's momentum after steps taken without one.
    p = Parameter(np.array([1.0, -2.0]))
    opt = optim.RMSprop([p], lr=0.1)
    p.grad = np.array([0.5, 0.5])
    opt.step()
    assert "momentum_buffer" not in opt.state[p]
    opt.param_groups[0]["momentum"] = 0.9
    opt.step()
    square_avg = opt.state[p]["square_avg"]
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], p.grad / (np.sqrt(square_avg) + 1e-8), rtol=1e-15)


def test_invalid_param_group_hyperparameter_raises():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="^Invalid learning rate: -1$"):
        opt.add_param_group({"params": [Parameter(np.ones(2))], "lr": -1})


# -- schedulers -----------------------------------------------------------------------------------
SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=1e-3)),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULERS, ids=["step", "step-every-epoch", "cosine", "cosine-eta-min"])
def test_scheduler_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    p = Parameter(np.ones(2))
    opt = optim.SGD([{"params": [p]}, {"params": [Parameter(np.ones(3))], "lr": 0.03}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.ones(2))]}, {"params": [torch.nn.Parameter(torch.ones(3))], "lr": 0.03}],
        lr=0.1,
        momentum=0.9,
    )
    sched = getattr(optim.lr_scheduler, name)(opt, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.03]
    for epoch in range(31):
        expected = tsched.get_last_lr()
        np.testing.assert_allclose(sched.get_last_lr(), expected, rtol=1e-12, atol=1e-15, err_msg=f"epoch {epoch}")
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected, rtol=1e-12, atol=1e-15)
        assert sched.last_epoch == tsched.last_epoch == epoch
        p.grad = np.ones(2)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(5):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    assert "optimizer" not in saved and saved["last_epoch"] == 5 and saved["base_lrs"] == [0.1]
    other_opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    other_opt.load_state_dict(opt.state_dict())
    other = optim.StepLR(other_opt, step_size=7)
    other.load_state_dict(saved)
    sched.step()
    other.step()
    assert other.get_last_lr() == sched.get_last_lr() == [0.1 * 0.5**3]


def test_scheduler_resume_needs_initial_lr():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        optim.CosineAnnealingLR(opt, T_max=10, last_epoch=3)


def test_exports_match_torch_layout():
    assert optim.lr_scheduler.StepLR is optim.StepLR
    assert optim.lr_scheduler.CosineAnnealingLR is optim.CosineAnnealingLR
    assert issubclass(optim.AdamW, optim.Adam) and issubclass(optim.Adam, optim.Optimizer)
    assert issubclass(optim.StepLR, optim.lr_scheduler.LRScheduler)
