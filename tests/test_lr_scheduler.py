"""Learning-rate schedulers against torch.optim.lr_scheduler: every scheduler composed with an
optimizer, epoch for epoch in float64 (lrs, momenta, parameters), state_dicts equal to torch's and
round-tripped mid-run (through JSON too, as checkpoints store them), torch's state_dicts loaded, the
deprecated step(epoch), and the errors and warnings."""

import json
import math
import warnings

import numpy as np
import pytest

from handgrad import optim
from handgrad.errors import HandgradError
from handgrad.nn.parameter import Parameter
from handgrad.optim import lr_scheduler

EPOCHS = 40
LRS = (0.1, 0.03)  # two param groups with different lrs
TOL = dict(rtol=1e-12, atol=1e-15)
PARAM_TOL = dict(rtol=1e-10, atol=1e-12)


def _halve(epoch):
    return 0.5 ** (epoch // 4)


class _Warmup:
    """A callable object: LambdaLR saves its __dict__ in state_dict() (a plain function it cannot)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.epochs)


class _HalvingEvery:
    """A callable scale_fn: CyclicLR saves its __dict__ in state_dict() (a plain function it cannot)."""

    def __init__(self, period):
        self.period = period

    def __call__(self, x):
        return 0.5 ** (x // self.period)


# (id, optimizer name, optimizer keywords, how to build the scheduler from a lr_scheduler module S and
# an optimizer: the same code makes handgrad's and torch's)
CASES = [
    ("step", "SGD", dict(momentum=0.9), lambda S, o: S.StepLR(o, step_size=3, gamma=0.5)),
    ("multistep", "SGD", dict(momentum=0.9), lambda S, o: S.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.1)),
    ("multistep-repeated", "SGD", dict(), lambda S, o: S.MultiStepLR(o, milestones=[9, 2, 5, 5], gamma=0.5)),
    ("exponential", "SGD", dict(momentum=0.9), lambda S, o: S.ExponentialLR(o, gamma=0.9)),
    ("linear", "SGD", dict(), lambda S, o: S.LinearLR(o)),
    ("linear-down", "Adam", dict(), lambda S, o: S.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=12)),
    ("constant", "SGD", dict(), lambda S, o: S.ConstantLR(o)),
    ("constant-factor", "Adam", dict(), lambda S, o: S.ConstantLR(o, factor=0.25, total_iters=7)),
    ("polynomial", "SGD", dict(), lambda S, o: S.PolynomialLR(o)),
    ("polynomial-power", "SGD", dict(momentum=0.5), lambda S, o: S.PolynomialLR(o, total_iters=20, power=2.0)),
    ("lambda", "SGD", dict(), lambda S, o: S.LambdaLR(o, lr_lambda=lambda epoch: 0.95**epoch)),
    ("lambda-per-group", "Adam", dict(), lambda S, o: S.LambdaLR(o, lr_lambda=[_halve, _Warmup(5)])),
    ("multiplicative", "SGD", dict(), lambda S, o: S.MultiplicativeLR(o, lr_lambda=lambda epoch: 0.9)),
    ("cosine", "SGD", dict(momentum=0.9), lambda S, o: S.CosineAnnealingLR(o, T_max=10)),
    ("cosine-past-t-max", "SGD", dict(), lambda S, o: S.CosineAnnealingLR(o, T_max=7, eta_min=1e-3)),
    ("warm-restarts", "SGD", dict(momentum=0.9), lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=5)),
    (
        "warm-restarts-mult",
        "Adam",
        dict(),
        lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-4),
    ),
    ("one-cycle", "SGD", dict(momentum=0.9), lambda S, o: S.OneCycleLR(o, max_lr=1.0, total_steps=EPOCHS)),
    (
        "one-cycle-adam-linear",
        "Adam",
        dict(),
        lambda S, o: S.OneCycleLR(o, max_lr=[0.01, 0.005], epochs=4, steps_per_epoch=10, anneal_strategy="linear"),
    ),
    (
        "one-cycle-three-phase",
        "SGD",
        dict(momentum=0.9),
        lambda S, o: S.OneCycleLR(
            o,
            max_lr=0.5,
            total_steps=EPOCHS,
            pct_start=0.25,
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            base_momentum=[0.8, 0.7],
            max_momentum=0.9,
        ),
    ),
    ("one-cycle-rmsprop", "RMSprop", dict(), lambda S, o: S.OneCycleLR(o, max_lr=0.01, total_steps=EPOCHS)),
    (
        "one-cycle-no-momentum",
        "Adagrad",
        dict(),
        lambda S, o: S.OneCycleLR(o, max_lr=0.1, total_steps=EPOCHS, cycle_momentum=False),
    ),
    ("cyclic", "SGD", dict(momentum=0.9), lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4)),
    (
        "cyclic-triangular2-uneven",
        "SGD",
        dict(momentum=0.5, nesterov=True),
        lambda S, o: S.CyclicLR(
            o, base_lr=[0.01, 0.02], max_lr=[0.1, 0.05], step_size_up=3, step_size_down=7, mode="triangular2"
        ),
    ),
    (
        "cyclic-exp-range-adam",
        "Adam",
        dict(),
        lambda S, o: S.CyclicLR(
            o, base_lr=1e-3, max_lr=1e-2, step_size_up=5, mode="exp_range", gamma=0.97, base_momentum=[0.8, 0.85]
        ),
    ),
    (
        "cyclic-scale-fn-cycle",
        "RMSprop",
        dict(momentum=0.9),
        lambda S, o: S.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=2, scale_fn=lambda c: 1 / c),
    ),
    (
        "cyclic-scale-fn-iterations",
        "AdamW",
        dict(),
        lambda S, o: S.CyclicLR(
            o,
            base_lr=1e-3,
            max_lr=5e-3,
            step_size_up=3,
            step_size_down=1,
            scale_fn=_HalvingEvery(10),
            scale_mode="iterations",
            max_momentum=0.95,
        ),
    ),
    (
        "cyclic-no-momentum",
        "Adagrad",
        dict(),
        lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=6, cycle_momentum=False),
    ),
    (
        "sequential-warmup-cosine",
        "SGD",
        dict(momentum=0.9),
        lambda S, o: S.SequentialLR(
            o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(o, T_max=35)], milestones=[5]
        ),
    ),
    (
        "sequential-three",
        "Adam",
        dict(),
        lambda S, o: S.SequentialLR(
            o,
            [
                S.ConstantLR(o, factor=0.1, total_iters=4),
                S.ExponentialLR(o, gamma=0.9),
                S.CosineAnnealingWarmRestarts(o, T_0=6),
            ],
            milestones=[6, 20],
        ),
    ),
    (
        "chained",
        "SGD",
        dict(momentum=0.9),
        lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.1, total_iters=2), S.ExponentialLR(o, gamma=0.9)]),
    ),
    (
        "chained-three",
        "RMSprop",
        dict(),
        lambda S, o: S.ChainedScheduler(
            [
                S.LinearLR(o, start_factor=0.5, total_iters=6),
                S.MultiStepLR(o, milestones=[10, 25]),
                S.CosineAnnealingLR(o, T_max=15),
            ],
            optimizer=o,
        ),
    ),
]
IDS = [c[0] for c in CASES]
CASES = [c[1:] for c in CASES]


def _optimizers(torch, name, kwargs, seed=0):
    """handgrad's and torch's optimizer over the same two param groups, plus their parameters."""
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    params = [Parameter(a.copy()) for a in arrays]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, LRS)]
    tgroups = [{"params": [p], "lr": lr} for p, lr in zip(tparams, LRS)]
    return getattr(optim, name)(groups, **kwargs), getattr(torch.optim, name)(tgroups, **kwargs), params, tparams


def _step_both(torch, opt, topt, params, tparams, rng):
    for p, tp in zip(params, tparams):
        g = rng.normal(size=p.shape)
        p.grad, tp.grad = g, torch.tensor(g)
    opt.step()
    topt.step()


def _assert_groups_equal(opt, topt, what):
    for i, (group, tgroup) in enumerate(zip(opt.param_groups, topt.param_groups)):
        for key in ("lr", "momentum", "betas", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
            if key in tgroup:
                np.testing.assert_allclose(group[key], tgroup[key], **TOL, err_msg=f"{what}: group {i} {key}")


def _assert_state_equal(ours, theirs, what):
    """Scheduler state_dicts: the same keys, the same values (floats to TOL)."""
    assert sorted(ours) == sorted(theirs), what
    for key, value in theirs.items():
        if key == "_schedulers":
            for i, (a, b) in enumerate(zip(ours[key], value, strict=True)):
                _assert_state_equal(a, b, f"{what}: _schedulers[{i}]")
        elif isinstance(value, list) and value and isinstance(value[0], float):
            np.testing.assert_allclose(ours[key], value, **TOL, err_msg=f"{what}: {key}")
        else:
            assert ours[key] == value, f"{what}: {key}: {ours[key]!r} != {value!r}"


def _run(torch, opt, topt, sched, tsched, params, tparams, epochs, rng, what):
    for epoch in range(epochs):
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), **TOL, err_msg=f"{what}: epoch {epoch}")
        _assert_groups_equal(opt, topt, f"{what}: epoch {epoch}")
        _step_both(torch, opt, topt, params, tparams, rng)
        if getattr(tsched, "total_steps", math.inf) > getattr(tsched, "last_epoch", 0) + 1:  # OneCycleLR's end
            sched.step()
            tsched.step()


@pytest.mark.parametrize("opt_name, opt_kwargs, build", CASES, ids=IDS)
def test_scheduler_with_optimizer_matches_torch(opt_name, opt_kwargs, build):
    torch = pytest.importorskip("torch")
    opt, topt, params, tparams = _optimizers(torch, opt_name, opt_kwargs)
    sched, tsched = build(lr_scheduler, opt), build(torch.optim.lr_scheduler, topt)
    _run(torch, opt, topt, sched, tsched, params, tparams, EPOCHS, np.random.default_rng(1), "run")
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **PARAM_TOL)
    _assert_state_equal(sched.state_dict(), tsched.state_dict(), "state_dict")


@pytest.mark.parametrize("opt_name, opt_kwargs, build", CASES, ids=IDS)
@pytest.mark.parametrize("through_json", [False, True], ids=["dict", "json"])
def test_state_dict_round_trip_mid_run_continues_as_torch(opt_name, opt_kwargs, build, through_json):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    opt, topt, params, tparams = _optimizers(torch, opt_name, opt_kwargs)
    sched, tsched = build(lr_scheduler, opt), build(torch.optim.lr_scheduler, topt)
    _run(torch, opt, topt, sched, tsched, params, tparams, 13, rng, "before saving")
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    if through_json:  # as training checkpoints store the scheduler
        saved_sched = json.loads(json.dumps(saved_sched))

    resumed = [Parameter(p.data.copy()) for p in params]
    opt = getattr(optim, opt_name)([{"params": [p], "lr": 0.5} for p in resumed], **opt_kwargs)
    sched = build(lr_scheduler, opt)
    opt.load_state_dict(saved_opt)
    sched.load_state_dict(saved_sched)
    _run(torch, opt, topt, sched, tsched, resumed, tparams, EPOCHS - 13, rng, "after loading")
    for p, tp in zip(resumed, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **PARAM_TOL)


@pytest.mark.parametrize("opt_name, opt_kwargs, build", CASES, ids=IDS)
def test_loads_torch_scheduler_state_dict(opt_name, opt_kwargs, build):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    opt, topt, params, tparams = _optimizers(torch, opt_name, opt_kwargs)
    tsched = build(torch.optim.lr_scheduler, topt)
    for _ in range(17):
        _step_both(torch, opt, topt, params, tparams, rng)
        tsched.step()
    sched = build(lr_scheduler, opt)
    opt.load_state_dict(topt.state_dict())
    sched.load_state_dict(tsched.state_dict())
    _run(torch, opt, topt, sched, tsched, params, tparams, EPOCHS - 17, rng, "after loading torch's")


# -- ReduceLROnPlateau ------------------------------------------------------------------------------
PLATEAU = [
    ("default", dict()),
    ("patience-0", dict(patience=0)),
    ("min-abs", dict(threshold_mode="abs", threshold=0.05, patience=2, factor=0.5)),
    ("max-rel", dict(mode="max", patience=3, factor=0.5)),
    ("max-abs-cooldown", dict(mode="max", threshold_mode="abs", threshold=0.1, patience=1, cooldown=2, factor=0.3)),
    ("min-lr-per-group", dict(patience=1, factor=0.2, min_lr=[1e-3, 5e-3])),
    ("min-lr-eps", dict(patience=1, factor=0.5, min_lr=0.01, eps=1e-3)),
    ("large-threshold", dict(threshold=0.5, patience=2, cooldown=1)),
]


def _metrics(mode, epochs=60, seed=4):
    """Improving, then a long plateau, then improving and flat again: the lr must drop on the plateaus."""
    rng = np.random.default_rng(seed)
    trend = np.concatenate([np.linspace(2.0, 1.0, 10), np.full(20, 1.0), np.linspace(1.0, 0.5, 10), np.full(20, 0.5)])
    values = trend[:epochs] + rng.normal(scale=0.02, size=epochs)
    return list(-values if mode == "max" else values)


@pytest.mark.parametrize("kwargs", [c[1] for c in PLATEAU], ids=[c[0] for c in PLATEAU])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    opt, topt, params, tparams = _optimizers(torch, "SGD", dict(momentum=0.9))
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    metrics = _metrics(kwargs.get("mode", "min"))
    for epoch, metric in enumerate(metrics):
        _step_both(torch, opt, topt, params, tparams, rng)
        sched.step(np.float64(metric))
        tsched.step(metric)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), **TOL, err_msg=f"epoch {epoch}")
        if epoch == 30:  # mid-plateau: save, reload into a fresh scheduler, continue
            saved = json.loads(json.dumps(sched.state_dict()))
            _assert_state_equal(saved, tsched.state_dict(), "state_dict")
            sched = lr_scheduler.ReduceLROnPlateau(opt, mode="max" if kwargs.get("mode") == "min" else "min")
            sched.load_state_dict(saved)
    assert sched.get_last_lr() != list(LRS)  # the plateaus did reduce it
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **PARAM_TOL)


# -- the closed form: step(epoch) -------------------------------------------------------------------
CLOSED_FORM = [
    ("step", lambda S, o: S.StepLR(o, step_size=3, gamma=0.5)),
    ("multistep", lambda S, o: S.MultiStepLR(o, milestones=[2, 5, 5, 9])),
    ("exponential", lambda S, o: S.ExponentialLR(o, gamma=0.9)),
    ("linear", lambda S, o: S.LinearLR(o, start_factor=0.2, total_iters=6)),
    ("constant", lambda S, o: S.ConstantLR(o, factor=0.5, total_iters=4)),
    ("polynomial", lambda S, o: S.PolynomialLR(o, total_iters=8, power=2.0)),
    ("cosine", lambda S, o: S.CosineAnnealingLR(o, T_max=10, eta_min=1e-3)),
    ("lambda", lambda S, o: S.LambdaLR(o, lr_lambda=_halve)),
    ("cyclic", lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2")),
]


@pytest.mark.parametrize("build", [c[1] for c in CLOSED_FORM], ids=[c[0] for c in CLOSED_FORM])
def test_step_with_epoch_is_the_closed_form_and_warns_as_torch(build):
    torch = pytest.importorskip("torch")
    opt, topt, params, tparams = _optimizers(torch, "SGD", dict())
    sched, tsched = build(lr_scheduler, opt), build(torch.optim.lr_scheduler, topt)
    _step_both(torch, opt, topt, params, tparams, np.random.default_rng(6))
    for epoch in (5, 2, 11, 0, 30):
        with pytest.warns(UserWarning, match="epoch parameter in `scheduler.step\\(\\)`"):
            sched.step(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tsched.step(epoch)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), **TOL, err_msg=f"epoch {epoch}")
        assert sched.last_epoch == tsched.last_epoch == epoch


@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_warm_restarts_fractional_epochs_match_torch(T_mult):
    torch = pytest.importorskip("torch")
    opt, topt, params, tparams = _optimizers(torch, "SGD", dict())
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=T_mult, eta_min=1e-3)
    tsched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=2, T_mult=T_mult, eta_min=1e-3)
    for epoch in range(15):
        for batch in range(4):  # stepped per batch with a fractional epoch, as its docs show
            sched.step(epoch + batch / 4)
            tsched.step(epoch + batch / 4)
            np.testing.assert_allclose(
                sched.get_last_lr(), tsched.get_last_lr(), **TOL, err_msg=f"epoch {epoch} batch {batch}"
            )
            assert (sched.T_i, sched.T_cur) == (tsched.T_i, tsched.T_cur)


# -- construction: param groups, resuming -------------------------------------------------------------
def test_initial_lr_kept_and_shared_by_a_second_scheduler():
    opt = optim.SGD([{"params": [Parameter(np.ones(2))]}, {"params": [Parameter(np.ones(3))], "lr": 0.03}], lr=0.1)
    first = lr_scheduler.ExponentialLR(opt, gamma=0.5)
    opt.step()
    first.step()
    second = lr_scheduler.StepLR(opt, step_size=2)
    assert [g["initial_lr"] for g in opt.param_groups] == second.base_lrs == [0.1, 0.03]


def test_resume_with_last_epoch_needs_initial_lr():
    opt = optim.SGD([Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\]"):
        lr_scheduler.ExponentialLR(opt, gamma=0.9, last_epoch=3)


def test_exports():
    for name in lr_scheduler.__all__:
        assert getattr(optim, name) is getattr(lr_scheduler, name)
        assert issubclass(getattr(optim, name), optim.LRScheduler)


# -- errors and warnings ------------------------------------------------------------------------------
def _sgd(groups=1):
    return optim.SGD([{"params": [Parameter(np.ones(2))]} for _ in range(groups)], lr=0.1)


def _step_one_cycle(total_steps, steps):
    opt = _sgd()
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total_steps)
    for _ in range(steps):
        opt.step()
        sched.step()


ERRORS = [
    (
        lambda: lr_scheduler.StepLR(_sgd(), step_size=0),
        HandgradError,
        "StepLR: step_size must be a positive integer, got 0",
    ),
    (
        lambda: lr_scheduler.MultiStepLR(_sgd(), milestones=3),
        HandgradError,
        "milestones must be a list of epochs, got int",
    ),
    (
        lambda: lr_scheduler.MultiStepLR(_sgd(), milestones=[2.5]),
        HandgradError,
        "milestones must be integer epochs, got 2.5",
    ),
    (
        lambda: lr_scheduler.ConstantLR(_sgd(), factor=1.5),
        HandgradError,
        "ConstantLR: factor .* between 0 and 1, got 1.5",
    ),
    (
        lambda: lr_scheduler.ConstantLR(_sgd(), total_iters=-1),
        HandgradError,
        "total_iters must be a non-negative integer",
    ),
    (
        lambda: lr_scheduler.LinearLR(_sgd(), start_factor=0),
        HandgradError,
        "start_factor .* greater than 0 and at most 1, got 0",
    ),
    (lambda: lr_scheduler.LinearLR(_sgd(), end_factor=1.5), HandgradError, "end_factor .* between 0 and 1, got 1.5"),
    (
        lambda: lr_scheduler.LinearLR(_sgd(), total_iters=0),
        HandgradError,
        "LinearLR: total_iters must be a positive integer, got 0",
    ),
    (
        lambda: lr_scheduler.PolynomialLR(_sgd(), total_iters=0),
        HandgradError,
        "PolynomialLR: total_iters must be a positive",
    ),
    (
        lambda: lr_scheduler.CosineAnnealingLR(_sgd(), T_max=0),
        HandgradError,
        "CosineAnnealingLR: T_max must be positive, got 0",
    ),
    (lambda: lr_scheduler.LambdaLR(_sgd(2), lr_lambda=[_halve]), HandgradError, "expected 2 lr_lambdas .*, got 1"),
    (lambda: lr_scheduler.LambdaLR(_sgd(), lr_lambda=0.5), TypeError, "lr_lambda should be a function, but got float"),
    (lambda: lr_scheduler.MultiplicativeLR(_sgd(), lr_lambda=[None]), TypeError, "lr_lambda should be a function"),
    (
        lambda: lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=0),
        HandgradError,
        "T_0 must be a positive integer, got 0",
    ),
    (
        lambda: lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=2.5),
        HandgradError,
        "T_0 must be a positive integer",
    ),
    (
        lambda: lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=2, T_mult=0),
        HandgradError,
        "T_mult must be an integer >= 1",
    ),
    (
        lambda: lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=2, eta_min="0"),
        HandgradError,
        "eta_min must be a float or int",
    ),
    (
        lambda: lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=2).step(-1),
        HandgradError,
        "epoch must be non-negative",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0),
        HandgradError,
        "either total_steps, or both epochs and steps_per_epoch",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0, total_steps=0),
        HandgradError,
        "total_steps must be a positive integer",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0, epochs=0, steps_per_epoch=3),
        HandgradError,
        "epochs must be a positive",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0, total_steps=9, pct_start=1.5),
        HandgradError,
        "pct_start must be a float between 0 and 1",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0, total_steps=9, anneal_strategy="exp"),
        HandgradError,
        "anneal_strategy must be 'cos' or 'linear'",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(_sgd(2), max_lr=[1.0], total_steps=9),
        HandgradError,
        "max_lr must have one value per param group: got 1 values, the optimizer has 2",
    ),
    (
        lambda: lr_scheduler.OneCycleLR(optim.Adagrad([Parameter(np.ones(2))]), max_lr=1.0, total_steps=9),
        HandgradError,
        "Adagrad has neither; pass cycle_momentum=False",
    ),
    (lambda: _step_one_cycle(total_steps=2, steps=3), HandgradError, "OneCycleLR: stepped 3 times, past total_steps=2"),
    (
        lambda: lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, mode="cosine"),
        HandgradError,
        "CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range' \\(or give scale_fn\\), got 'cosine'",
    ),
    (
        lambda: lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, step_size_up=0),
        HandgradError,
        "step_size_up must be a positive number of batches, got 0",
    ),
    (
        lambda: lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, step_size_down=-2),
        HandgradError,
        "step_size_down must be a non-negative number",
    ),
    (
        lambda: lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, scale_fn=lambda x: 1.0, scale_mode="epochs"),
        HandgradError,
        "scale_mode must be 'cycle' or 'iterations', got 'epochs'",
    ),
    (lambda: lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, scale_fn=0.5), TypeError, "scale_fn should be a function"),
    (
        lambda: lr_scheduler.CyclicLR(_sgd(2), [0.01], 0.1),
        HandgradError,
        "base_lr must have one value per param group: got 1 values, the optimizer has 2",
    ),
    (
        lambda: lr_scheduler.CyclicLR(optim.Adagrad([Parameter(np.ones(2))]), 0.01, 0.1),
        HandgradError,
        "CyclicLR: cycle_momentum needs an optimizer with momentum or betas, Adagrad has neither",
    ),
    (lambda: lr_scheduler.ReduceLROnPlateau(_sgd(), factor=1.0), HandgradError, "factor must be < 1.0, got 1.0"),
    (
        lambda: lr_scheduler.ReduceLROnPlateau(_sgd(), mode="low"),
        HandgradError,
        "mode must be 'min' or 'max', got 'low'",
    ),
    (
        lambda: lr_scheduler.ReduceLROnPlateau(_sgd(), threshold_mode="pct"),
        HandgradError,
        "threshold_mode must be 'rel' or 'abs'",
    ),
    (lambda: lr_scheduler.ReduceLROnPlateau(_sgd(2), min_lr=[0.1]), HandgradError, "expected 2 min_lrs .*, got 1"),
    (
        lambda: lr_scheduler.ReduceLROnPlateau(_sgd()).step([0.5, 0.4]),
        HandgradError,
        "step\\(metrics\\) needs one number",
    ),
    (
        lambda: lr_scheduler.SequentialLR(_sgd(), [], milestones=[]),
        HandgradError,
        "SequentialLR: expects at least one scheduler",
    ),
    (
        lambda: lr_scheduler.SequentialLR(o := _sgd(), [lr_scheduler.ConstantLR(o)], milestones=[3]),
        HandgradError,
        "expects one more scheduler than milestones, got 1 schedulers and 1 milestones",
    ),
    (
        lambda: lr_scheduler.SequentialLR(o := _sgd(), [lr_scheduler.ReduceLROnPlateau(o)], milestones=[]),
        HandgradError,
        "does not support ReduceLROnPlateau",
    ),
    (
        lambda: lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(_sgd()), lr_scheduler.ConstantLR(_sgd())]),
        HandgradError,
        "ChainedScheduler: expects all schedulers to belong to the same optimizer, but the ConstantLR at index 1",
    ),
    (lambda: lr_scheduler.ChainedScheduler([]), HandgradError, "expects at least one scheduler to be chained"),
    (lambda: lr_scheduler.StepLR(object(), step_size=2), TypeError, "object is not an Optimizer"),
]


@pytest.mark.parametrize("make, error, pattern", ERRORS, ids=[f"{i}" for i in range(len(ERRORS))])
def test_invalid_arguments_raise_one_clear_error(make, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        make()
    assert "\n" not in str(caught.value)
    if error is HandgradError:
        assert isinstance(caught.value, ValueError)  # torch raises ValueError for these


def test_step_before_optimizer_step_warns_as_torch():
    torch = pytest.importorskip("torch")
    opt, topt, _, _ = _optimizers(torch, "SGD", dict())
    sched = lr_scheduler.StepLR(opt, step_size=2)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        tsched.step()
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_get_lr_outside_step_warns_as_torch():
    sched = lr_scheduler.ExponentialLR(_sgd(), gamma=0.5)
    with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
        sched.get_lr()


def test_steps_in_order_do_not_warn():
    opt = _sgd()
    sched = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt), lr_scheduler.ExponentialLR(opt, 0.9)], [5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(10):
            opt.step()
            sched.step()
