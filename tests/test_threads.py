"""Splitting the batch across threads (handgrad._threads) changes no result.

Every split op is run on one thread and on several (with the size threshold lowered, so even small
batches split) and compared: forward outputs, input gradients and pooling indices exactly; weight and
bias gradients, which are summed per slice and then added, to float rounding.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import handgrad
from handgrad import _threads
from handgrad import functional as F
from handgrad import nn, optim
from handgrad.models import build_model

from test_fast_paths import CONV_CASES, POOL_CASES


@pytest.fixture
def threads():
    """Run a function with n threads, splitting any batch of 2 or more samples."""
    saved = handgrad.get_num_threads()
    old_min = _threads.MIN_ELEMENTS_PER_THREAD
    _threads.MIN_ELEMENTS_PER_THREAD = 1

    def run(n, fn, *args):
        handgrad.set_num_threads(n)
        return fn(*args)

    yield run
    _threads.MIN_ELEMENTS_PER_THREAD = old_min
    handgrad.set_num_threads(saved)


def _rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("case", CONV_CASES + [(7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1))], ids=str)
def test_conv_split_matches_one_thread(threads, case, n_threads):
    n, c, h, w, o, k, s, p = case
    rng = _rng()
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c) + k).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)

    def step():
        out, cache = F.conv2d_forward(x, weight, bias, s, p)
        return (out,) + F.conv2d_backward(np.cos(out), cache)

    one, split = threads(1, step), threads(n_threads, step)
    np.testing.assert_array_equal(split[0], one[0])                   # forward
    np.testing.assert_array_equal(split[1], one[1])                   # grad_input
    np.testing.assert_allclose(split[2], one[2], rtol=1e-5, atol=1e-5)  # grad_weight, summed per slice
    np.testing.assert_allclose(split[3], one[3], rtol=1e-5, atol=1e-5)  # grad_bias


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pools_split_match_one_thread(threads, case, n_threads):
    n, c, h, w, k, s, p = case
    x = np.round(_rng().standard_normal((n + 3, c, h, w)), 1).astype(np.float32)  # rounding makes ties

    def step():
        out, cache = F.max_pool2d_forward(x, k, s, p)
        avg, avg_cache = F.avg_pool2d_forward(x, k, s, p)
        return out, cache[0], F.max_pool2d_backward(np.sin(out), cache), F.avg_pool2d_backward(np.sin(avg), avg_cache)

    for got, expected in zip(threads(n_threads, step), threads(1, step)):
        np.testing.assert_array_equal(got, expected)


def test_relu_split_matches_one_thread(threads):
    x = _rng().standard_normal((9, 4, 5)).astype(np.float32)
    g = _rng().standard_normal(x.shape).astype(np.float32)

    def step():
        out, cache = F.relu_forward(x)
        return out, F.relu_backward(g, cache)

    for got, expected in zip(threads(4, step), threads(1, step)):
        np.testing.assert_array_equal(got, expected)
    scalar, cache = F.relu_forward(np.float32(-2.0) * np.ones((), np.float32))  # 0-d: nothing to split
    assert scalar.shape == () and scalar == 0 and F.relu_backward(np.ones((), np.float32), cache) == 0


def test_training_with_threads_is_reproducible_and_matches_one_thread(threads):
    rng = _rng()
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
        np.testing.assert_array_equal(a, b)                         # same threads: bit for bit
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)      # other slices: float rounding


def test_split_batch_slices_in_order_and_serial_when_small(threads):
    seen = []

    def record(a, b):
        seen.append((a, b, threading.current_thread().name))
        return a, b

    assert threads(3, _threads.split_batch, record, 10, 10 ** 6) == [(0, 3), (3, 6), (6, 10)]
    assert sum(1 for *_, name in seen if name.startswith("handgrad")) == 2  # two slices on pool threads
    _threads.MIN_ELEMENTS_PER_THREAD = 100
    assert _threads.split_batch(record, 10, 150) == [(0, 10)]   # too little work to hand off
    assert _threads.split_batch(record, 1, 10 ** 6) == [(0, 1)]  # one sample


@pytest.mark.parametrize("failing_slice", [0, 2])
def test_split_batch_reraises_a_slice_error(threads, failing_slice):
    done = []

    def work(a, b):
        if a == failing_slice * 4:
            raise FloatingPointError(f"slice {a}:{b} failed")
        done.append(a)

    handgrad.set_num_threads(3)
    with pytest.raises(FloatingPointError, match=f"slice {failing_slice * 4}:"):
        _threads.split_batch(work, 12, 10 ** 6)
    assert len(done) == 2  # the other slices ran to the end before the error came back


def test_nested_split_runs_serially_inside_a_pool_thread(threads):
    def inner(a, b):
        return _threads.split_batch(lambda c, d: threading.current_thread().name, 8, 10 ** 6)

    results = threads(2, _threads.split_batch, inner, 4, 10 ** 6)
    assert len(results[0]) == 2 and results[1] == [results[1][0]] and results[1][0].startswith("handgrad")


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


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_pool(threads):
    import os
    threads(2, _threads.split_batch, lambda a, b: None, 4, 10 ** 6)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # child: the parent's pool threads are gone; a split must still finish
        import signal
        signal.alarm(20)  # a hang (work queued to threads that do not exist) ends the child
        try:
            ok = _threads.split_batch(lambda a, b: (a, b), 4, 10 ** 6) == [(0, 2), (2, 4)]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
