"""One thread budget (handgrad.set_num_threads) for Numba's kernels and for BLAS, and the kernels'
results under it: the same with one thread as with several, bit for bit where each output element
is computed by one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_kernels_conv import CONV_CASES
from test_kernels_pool import POOL_CASES

import handgrad
from handgrad import _threads, kernels, nn, optim
from handgrad import functional as F
from handgrad.models import build_model

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")


@pytest.fixture
def threads():
    """Run a function under a thread budget of n (the budget is restored afterwards)."""
    saved = handgrad.get_num_threads()

    def run(n, fn, *args):
        handgrad.set_num_threads(n)
        return fn(*args)

    yield run
    handgrad.set_num_threads(saved)


def _child(code: str, **env) -> dict:
    """Run ``code`` in a fresh interpreter with handgrad on the path; it prints one JSON line."""
    full_env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC), **env}
    for name in [k for k, v in env.items() if v is None]:
        full_env.pop(name)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


BUDGET = """
import json, handgrad
from handgrad import kernels, _threads
from threadpoolctl import threadpool_info
before = "numba" in __import__("sys").modules
kernels.available()
import numba
in_threads = _threads.in_thread_blas()
def blas():  # [threads] of the budget's libraries, [threads] of those the kernels call in their threads
    libs = [i for i in threadpool_info() if i["user_api"] == "blas"]
    return [[i["num_threads"] for i in libs if i["filepath"] not in in_threads],
            [i["num_threads"] for i in libs if i["filepath"] in in_threads]]
seen = [[numba.get_num_threads(), *blas()]]
handgrad.set_num_threads(1)
seen.append([numba.get_num_threads(), *blas()])
print(json.dumps({"before": before, "seen": seen, "in_threads": sorted(in_threads)}))
"""


def test_one_budget_reaches_numba_and_blas():
    got = _child(BUDGET, HANDGRAD_NUM_THREADS="2", NUMBA_NUM_THREADS="2")
    assert got["before"] is False  # import handgrad alone does not load Numba
    numba_threads, blas, in_threads = got["seen"][0]
    assert numba_threads == 2 and blas and all(n == 2 for n in blas)
    # SciPy's BLAS, which Numba's np.dot calls inside the kernels' threads: one thread each
    assert got["in_threads"] and in_threads and all(n == 1 for n in in_threads)
    numba_threads, blas, in_threads = got["seen"][1]  # after set_num_threads(1)
    assert numba_threads == 1 and all(n == 1 for n in blas + in_threads)


def test_budget_above_numbas_pool_is_capped_for_numba():
    got = _child(BUDGET, HANDGRAD_NUM_THREADS="3", NUMBA_NUM_THREADS="2")
    assert got["seen"][0][0] == 2 and all(n == 3 for n in got["seen"][0][1])


@pytest.mark.parametrize("case", CONV_CASES[:4] + [(7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1))], ids=str)
def test_conv_kernel_with_threads_matches_one_thread(threads, case):
    n, c, h, w, o, k, s, p = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c) + k).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)

    def step():
        with kernels.use_kernels():
            out, cache = kernels.op("conv2d_forward")(x, weight, bias, s, p)
            return (out,) + kernels.op("conv2d_backward")(np.cos(out), cache)

    one, two = threads(1, step), threads(2, step)
    for got, expected in zip(two, one):  # BLAS may split a product's sums differently
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_and_relu_kernels_with_threads_match_one_thread_exactly(threads, case):
    n, c, h, w, k, s, p = case
    x = np.round(np.random.default_rng(7).standard_normal((n + 3, c, h, w)), 1).astype(np.float32)

    def step():
        with kernels.use_kernels():
            out, cache = kernels.op("max_pool2d_forward")(x, k, s, p)
            avg, avg_cache = kernels.op("avg_pool2d_forward")(x, k, s, p)
            relu, relu_cache = kernels.op("relu_forward")(x - 0.5)
            return (
                out,
                cache[0],
                kernels.op("max_pool2d_backward")(np.sin(out), cache),
                kernels.op("avg_pool2d_backward")(np.sin(avg), avg_cache),
                relu,
                kernels.op("relu_backward")(np.cos(x), relu_cache),
            )

    for got, expected in zip(threads(2, step), threads(1, step)):
        np.testing.assert_array_equal(got, expected)


def test_training_with_threads_is_reproducible_and_matches_one_thread(threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 16)

    def train():
        handgrad.manual_seed(0)
        model = build_model("tiny-cnn", (1, 12, 12), 10)
        opt, loss_fn = optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss()
        for _ in range(5):
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    first, second, one = threads(2, train), threads(2, train), threads(1, train)
    for a, b, c in zip(first, second, one):
        np.testing.assert_array_equal(a, b)  # same threads: bit for bit
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)  # other splits: float rounding


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="positive int"):
        handgrad.set_num_threads(bad)


def test_default_thread_count_reads_the_environment(monkeypatch):
    monkeypatch.setenv("HANDGRAD_NUM_THREADS", "3")
    assert _threads._default_num_threads() == 3
    monkeypatch.delenv("HANDGRAD_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _threads._default_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert _threads._default_num_threads() >= 1


def test_reference_switch_runs_the_functional_ops():
    with kernels.reference():
        assert kernels.op("conv2d_forward") is F.conv2d_forward and not kernels.enabled()
    with kernels.use_kernels():
        assert kernels.op("conv2d_forward") is not F.conv2d_forward and kernels.enabled()


LAYER_PROBE = """
import os, sys, numpy as np
from handgrad import kernels
from handgrad.models import build_model
if sys.argv[1] == "no-tbb":
    kernels._load_tbb = lambda: False  # as where the tbb wheel is missing
build_model("lenet5", (1, 28, 28), 10)(np.zeros((4, 1, 28, 28), np.float32))  # a parallel kernel runs
import numba
print(numba.threading_layer())
"""


@pytest.mark.parametrize(
    "setting, environment, expected",
    [
        pytest.param("default", {}, "tbb", id="tbb-where-the-wheel-is"),
        pytest.param("no-tbb", {}, "workqueue", id="workqueue-without-it"),
        pytest.param("default", {"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue", id="the-users-choice-wins"),
    ],
)
def test_numbas_threading_layer_is_the_measured_choice(setting, environment, expected):
    """'tbb' (benchmarks/THREADS.md: the CNNs train 1.5-1.8x faster on it) where the tbb wheel is
    installed, as the package's dependencies ask; 'workqueue' without it; the user's setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"} | environment
    if expected == "tbb" and not list(__import__("pathlib").Path(sys.prefix, "lib").glob("libtbb.so.12*")):
        pytest.skip("the tbb wheel is not installed here")
    out = subprocess.run([sys.executable, "-c", LAYER_PROBE, setting], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected
