"""The compiled optimizer updates (kernels/optim.py) against their references (optim/functional.py):
every SGD/Adam/AdamW/RMSprop/Adagrad configuration step for step (float64 to round-off, float32 within 1e-6), the
subnormal flush, the first momentum step, non-contiguous parameters, and the optimizers themselves
with and without kernels."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import kernels, optim
from handgrad.nn.parameter import Parameter
from handgrad.optim import functional as R

K = pytest.importorskip("handgrad.kernels.optim")

STEPS = 12
SHAPES = [(7, 5), (3,), (2, 3, 4), (1,)]
SGD_CONFIGS = [
    dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.0, nesterov=False, maximize=False),
    dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=False),
    dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.01, nesterov=False, maximize=False),
    dict(lr=0.05, momentum=0.8, dampening=0.0, weight_decay=0.1, nesterov=True, maximize=False),
    dict(lr=0.1, momentum=0.5, dampening=0.0, weight_decay=0.01, nesterov=False, maximize=True),
    dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=True),
]
ADAM_CONFIGS = [
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, amsgrad=False, maximize=False, decoupled=False),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True, maximize=False, decoupled=False),
    dict(lr=0.02, betas=(0.5, 0.6), eps=1e-8, weight_decay=0.1, amsgrad=True, maximize=True, decoupled=False),
    dict(lr=0.01, betas=(0.9, 0.999), eps=0.1, weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False, decoupled=True),
    dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, amsgrad=True, maximize=True, decoupled=True),
]
RMSPROP_CONFIGS = [
    dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1, momentum=0.0, centered=False, maximize=True),
    dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1, momentum=0.0, centered=True, maximize=False),
    dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1, momentum=0.1, centered=True, maximize=True),
    dict(lr=0.001, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=False, maximize=False),
    dict(
        lr=0.01, alpha=0.3, eps=1e-3, weight_decay=0.0, momentum=0.5, centered=True, maximize=False
    ),  # lerp's other form
]
ADAGRAD_CONFIGS = [
    dict(lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False, initial_accumulator_value=0.0),
    dict(lr=0.01, lr_decay=0.0, weight_decay=0.1, eps=1e-10, maximize=True, initial_accumulator_value=0.0),
    dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, eps=1e-10, maximize=False, initial_accumulator_value=0.1),
    dict(lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-3, maximize=False, initial_accumulator_value=0.0),
]
TOLERANCES = [(np.float64, 1e-12), (np.float32, 1e-6)]


def _grads(seed, dtype):
    """Random gradients whose scale changes from step to step (so AMSGrad's max matters)."""
    rng = np.random.default_rng(seed)
    return [[(rng.normal(size=s) * rng.uniform(0.1, 3.0)).astype(dtype) for s in SHAPES] for _ in range(STEPS)]


def _params(seed, dtype):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(dtype) for s in SHAPES]


def _sgd_run(update, dtype, config, flush_every=3):
    params, buffers = _params(0, dtype), [None] * len(SHAPES)
    for step, grads in enumerate(_grads(1, dtype)):
        for i, (p, g) in enumerate(zip(params, grads)):
            g_before = g.copy()
            buffers[i] = update(
                p,
                g,
                buffers[i],
                config["lr"],
                config["momentum"],
                config["dampening"],
                config["weight_decay"],
                config["nesterov"],
                config["maximize"],
                step % flush_every == 0,
            )
            np.testing.assert_array_equal(g, g_before)  # the gradient is never modified
    return params, buffers


def _adam_run(update, dtype, config, flush_every=3):
    params = _params(0, dtype)
    state = [[np.zeros_like(p) for _ in range(3)] for p in params]
    for step, grads in enumerate(_grads(1, dtype)):
        for p, g, (m, v, v_max) in zip(params, grads, state):
            update(
                p,
                g,
                m,
                v,
                v_max if config["amsgrad"] else None,
                step + 1,
                config["lr"],
                *config["betas"],
                config["eps"],
                config["weight_decay"],
                config["amsgrad"],
                config["maximize"],
                config["decoupled"],
                step % flush_every == 0,
            )
    return params, [a for s in state for a in s]


def _rmsprop_run(update, dtype, config, flush_every=3):
    params = _params(0, dtype)
    state = [[np.zeros_like(p) for _ in range(3)] for p in params]
    for step, grads in enumerate(_grads(1, dtype)):
        for p, g, (v, m, buf) in zip(params, grads, state):
            g_before = g.copy()
            update(
                p,
                g,
                v,
                m if config["centered"] else None,
                buf if config["momentum"] > 0 else None,
                config["lr"],
                config["alpha"],
                config["eps"],
                config["weight_decay"],
                config["momentum"],
                config["centered"],
                config["maximize"],
                step % flush_every == 0,
            )
            np.testing.assert_array_equal(g, g_before)  # the gradient is never modified
    return params, [a for s in state for a in s]


def _adagrad_run(update, dtype, config):
    params = _params(0, dtype)
    sums = [np.full_like(p, config["initial_accumulator_value"]) for p in params]
    for step, grads in enumerate(_grads(1, dtype)):
        for p, g, s in zip(params, grads, sums):
            update(
                p,
                g,
                s,
                step + 1,
                config["lr"],
                config["lr_decay"],
                config["weight_decay"],
                config["eps"],
                config["maximize"],
            )
    return params, sums


def _assert_close(got, expected, tol, what):
    for i, (a, b) in enumerate(zip(got, expected)):
        if b is None:
            assert a is None, f"{what}[{i}]: expected None"
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{what}[{i}]")


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_sgd_update_matches_reference(config, dtype, tol):
    params, buffers = _sgd_run(K.sgd_update, dtype, config)
    ref_params, ref_buffers = _sgd_run(R.sgd_update, dtype, config)
    _assert_close(params, ref_params, tol, "param")
    _assert_close(buffers, ref_buffers, tol, "momentum_buffer")


def _sgd_group_run(update, dtype, config, late=(), flush_every=3):
    """SGD over a group as one call per step; the parameters in ``late`` get their first gradient
    (so their first momentum step) only from the third step on, as a layer unfrozen mid-run."""
    params, buffers = _params(0, dtype), [None] * len(SHAPES)
    hyper = [config[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")]
    for step, grads in enumerate(_grads(1, dtype)):
        chosen = [i for i in range(len(SHAPES)) if i not in late or step >= 2]
        before = [grads[i].copy() for i in chosen]
        new = update(
            [params[i] for i in chosen],
            [grads[i] for i in chosen],
            [buffers[i] for i in chosen],
            *hyper,
            step % flush_every == 0,
        )
        for i, buf in zip(chosen, new):
            buffers[i] = buf
        for i, g in zip(chosen, before):
            np.testing.assert_array_equal(grads[i], g)  # the gradients are never modified
    return params, buffers


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_sgd_update_group_matches_reference(config, dtype, tol):
    params, buffers = _sgd_group_run(K.sgd_update_group, dtype, config, late=(1,))
    ref_params, ref_buffers = _sgd_run(R.sgd_update, dtype, config)  # one parameter at a time
    late_params, late_buffers = _sgd_group_run(R.sgd_update_group, dtype, config, late=(1,))
    _assert_close(params[:1] + params[2:], ref_params[:1] + ref_params[2:], tol, "param")
    _assert_close(buffers[:1] + buffers[2:], ref_buffers[:1] + ref_buffers[2:], tol, "momentum_buffer")
    _assert_close(params[1:2], late_params[1:2], tol, "param (first step late)")
    _assert_close(buffers[1:2], late_buffers[1:2], tol, "momentum_buffer (first step late)")


@pytest.mark.parametrize("parts", [2, 3, 7])
@pytest.mark.parametrize("config", [SGD_CONFIGS[1], SGD_CONFIGS[5]], ids=["momentum", "nesterov-decay"])
def test_sgd_update_group_split_across_threads_matches_reference(config, parts, monkeypatch):
    # cut into runs that end inside a parameter, at its edge, and inside the smallest one
    monkeypatch.setattr(K, "SPLIT_MIN_SIZE", 0)
    monkeypatch.setattr(K._threads, "numba_threads", lambda: parts)
    params, buffers = _sgd_group_run(K.sgd_update_group, np.float64, config, late=(3,))
    ref_params, ref_buffers = _sgd_group_run(R.sgd_update_group, np.float64, config, late=(3,))
    _assert_close(params, ref_params, 1e-12, "param")
    _assert_close(buffers, ref_buffers, 1e-12, "momentum_buffer")


@pytest.mark.parametrize(
    "odd",
    ["mixed dtypes", "non-contiguous parameter", "non-contiguous buffer", "float16"],
)
def test_sgd_update_group_falls_back_per_parameter(odd):
    # a group the one-call loop cannot take: each parameter alone (its kernel or its reference)
    dtypes = [np.float16] * 2 if odd == "float16" else [np.float32, np.float64 if odd == "mixed dtypes" else np.float32]
    results = []
    for update in (K, R):
        rng = np.random.default_rng(5)
        params = [rng.normal(size=(4, 6)).astype(d) for d in dtypes]
        params = [params[0].T if odd == "non-contiguous parameter" else params[0], params[1]]
        grads = [np.ones_like(p) for p in params]
        buffers = [np.full_like(p, 0.5) for p in params]
        buffers[1] = buffers[1].T.copy().T if odd == "non-contiguous buffer" else buffers[1]
        new = update.sgd_update_group(params, grads, buffers, 0.1, 0.9, 0.0, 0.01, False, False)
        assert all(a is b for a, b in zip(new, buffers))  # updated in place
        results.append(params + buffers)
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_adam_update_matches_reference(config, dtype, tol):
    params, state = _adam_run(K.adam_update, dtype, config)
    ref_params, ref_state = _adam_run(R.adam_update, dtype, config)
    _assert_close(params, ref_params, tol, "param")
    _assert_close(state, ref_state, tol, "exp_avg / exp_avg_sq / max_exp_avg_sq")


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("config", RMSPROP_CONFIGS)
def test_rmsprop_update_matches_reference(config, dtype, tol):
    params, state = _rmsprop_run(K.rmsprop_update, dtype, config)
    ref_params, ref_state = _rmsprop_run(R.rmsprop_update, dtype, config)
    _assert_close(params, ref_params, tol, "param")
    _assert_close(state, ref_state, tol, "square_avg / grad_avg / momentum_buffer")


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("config", ADAGRAD_CONFIGS)
def test_adagrad_update_matches_reference(config, dtype, tol):
    params, sums = _adagrad_run(K.adagrad_update, dtype, config)
    ref_params, ref_sums = _adagrad_run(R.adagrad_update, dtype, config)
    _assert_close(params, ref_params, tol, "param")
    _assert_close(sums, ref_sums, tol, "sum")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flush", [True, False])
def test_rmsprop_subnormal_state_flushed_exactly_as_the_reference(dtype, flush):
    tiny = np.finfo(dtype).tiny
    subnormal = dtype(tiny / 8)
    results = []
    for update in (K, R):
        p, g = np.ones(4, dtype), np.zeros(4, dtype)
        v = np.array([subnormal, 1.0, tiny * 4, subnormal], dtype)
        m = np.array([subnormal, -subnormal, tiny, 0.0], dtype)
        buf = np.array([subnormal, -subnormal, 1.0, 0.0], dtype)
        update.rmsprop_update(p, g, v, m, buf, 0.01, 0.5, 1e-8, 0.0, 0.5, True, False, flush)
        results.append((p, v, m, buf))
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)
    p, v, m, buf = results[0]
    assert (v[[0, 3]] == 0).all() == flush and (m[:2] == 0).all() == flush and (buf[:2] == 0).all() == flush


def test_sgd_first_momentum_step_creates_the_buffer():
    p, g = np.array([1.0, 2.0]), np.array([0.5, -0.25])
    buf = K.sgd_update(p, g, None, 0.1, 0.9, 0.0, 0.0, False, False)
    np.testing.assert_array_equal(buf, g)  # buf = d_p on the first step
    np.testing.assert_array_equal(p, [0.95, 2.025])
    assert buf is not g
    assert K.sgd_update(p, g, None, 0.1, 0.0, 0.0, 0.0, False, False) is None  # no momentum, no buffer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flush", [True, False])
def test_subnormal_state_flushed_exactly_as_the_reference(dtype, flush):
    tiny = np.finfo(dtype).tiny
    subnormal = dtype(tiny / 8)
    results = []
    for update in (K, R):
        p, g = np.ones(4, dtype), np.zeros(4, dtype)
        buf = np.array([subnormal, -subnormal, tiny * 4, 1.0], dtype)
        update.sgd_update(p, g, buf, 0.1, 0.9, 0.0, 0.0, False, False, flush)
        m, v = np.full(4, subnormal, dtype), np.array([subnormal, 1.0, tiny * 2, 0.0], dtype)
        update.adam_update(p, g, m, v, None, 3, 0.01, 0.9, 0.999, 1e-8, 0.0, False, False, False, flush)
        results.append((p, buf, m, v))
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)
    p, buf, m, v = results[0]
    assert (buf[:2] == 0).all() == flush and (m == 0).all() == flush


def test_non_contiguous_parameter_is_updated_in_place():
    rng = np.random.default_rng(2)
    base, ref_base = [rng.normal(size=(6, 4))] * 2
    base, ref_base = base.copy(), ref_base.copy()
    grad = rng.normal(size=(4, 6))
    for update, array in ((K, base), (R, ref_base)):
        view = array.T  # (4, 6), a view that is not C-contiguous
        buf = update.sgd_update(view, grad, None, 0.1, 0.9, 0.0, 0.01, False, False)
        update.sgd_update(view, grad, buf, 0.1, 0.9, 0.0, 0.01, False, False)
        m, v = np.zeros_like(view), np.zeros_like(view)
        update.adam_update(view, grad, m, v, None, 1, 0.01, 0.9, 0.999, 1e-8, 0.0, False, False, False)
    np.testing.assert_allclose(base, ref_base, rtol=1e-12)


@pytest.mark.parametrize("by_keyword", [False, True])
def test_non_contiguous_state_runs_the_reference(by_keyword):
    # a state array loaded as a transposed view cannot be walked flat: the update falls back to the reference
    rng = np.random.default_rng(3)
    p0, g = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    m0, v0 = rng.normal(size=(6, 4)), rng.random((6, 4))
    results = []
    for update in (K, R):
        p, m, v = p0.copy(), m0.copy().T, v0.copy().T
        if by_keyword:
            update.adam_update(
                p,
                g,
                exp_avg=m,
                exp_avg_sq=v,
                max_exp_avg_sq=None,
                step=2,
                lr=0.01,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                weight_decay=0.1,
                amsgrad=False,
                maximize=False,
                decoupled_weight_decay=False,
            )
        else:
            update.adam_update(p, g, m, v, None, 2, 0.01, 0.9, 0.999, 1e-8, 0.1, False, False, False)
        results.append((p, m, v))
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
        ("AdamW", dict(lr=0.01)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
        ("RMSprop", dict(lr=0.01)),
        ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.1)),
    ],
)
@pytest.mark.parametrize("dtype, tol", TOLERANCES)
def test_optimizers_agree_with_and_without_kernels(name, kwargs, dtype, tol):
    grads = _grads(3, dtype)
    results = []
    for switch in (kernels.use_kernels, kernels.reference):
        with switch():
            params = [Parameter(a) for a in _params(4, dtype)]
            opt = getattr(optim, name)(params, **kwargs)
            for step_grads in grads:  # 12 steps: the flush on step 8 included
                for p, g in zip(params, step_grads):
                    p.grad = g.copy()
                opt.step()
            results.append([p.data for p in params])
    _assert_close(*results, tol, f"{name} parameters")


def test_op_picks_kernel_or_reference():
    with kernels.use_kernels():
        assert kernels.op("sgd_update") is K.sgd_update and kernels.op("adam_update") is K.adam_update
    with kernels.reference():
        assert kernels.op("sgd_update") is R.sgd_update and kernels.op("adam_update") is R.adam_update
    for name in ("rmsprop_update", "adagrad_update", "sgd_update_group"):
        with kernels.use_kernels():
            assert kernels.op(name) is getattr(K, name)
        with kernels.reference():
            assert kernels.op(name) is getattr(R, name)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_dtypes_without_kernels_run_the_reference(dtype):
    results = []
    for update in (K, R):
        p, g = np.linspace(-1, 1, 5).astype(dtype), np.linspace(0.5, -0.5, 5).astype(dtype)
        buf = update.sgd_update(p, g, None, 0.1, 0.9, 0.0, 0.01, True, False)
        update.sgd_update(p, g, buf, 0.1, 0.9, 0.0, 0.01, True, False)
        m, v = np.zeros_like(p), np.zeros_like(p)
        update.adam_update(p, g, m, v, None, 1, 0.01, 0.9, 0.999, 1e-3, 0.1, False, False, True)
        sq, avg, rbuf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        update.rmsprop_update(p, g, sq, avg, rbuf, 0.01, 0.9, 1e-3, 0.1, 0.5, True, False)
        total = np.full_like(p, 0.1)
        update.adagrad_update(p, g, total, 2, 0.01, 0.1, 0.1, 1e-3, True)
        results.append((p, buf, m, v, sq, avg, rbuf, total))
    for got, expected in zip(*results):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
