"""The fast paths of handgrad.functional against the plain reference versions kept beside them.

conv: per-sample columns (unfold/fold) vs im2col rows; max pool: per-offset planes vs argmax over
flattened windows; ReLU backward: product with the mask vs np.where. Equal within float rounding
(max pool and ReLU exactly), including ties, odd sizes, strides, padding and overlapping windows.
"""
from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import functional as F
from handgrad import nn, optim
from handgrad.functional import activation as A
from handgrad.functional import conv as C
from handgrad.functional import pool as P
from handgrad.models import build_model

from conftest import rel_err

CONV_CASES = [  # (N, C, H, W, O, kernel, stride, padding)
    (2, 1, 28, 28, 8, (3, 3), (1, 1), (1, 1)),
    (3, 4, 7, 7, 5, (3, 3), (1, 1), (1, 1)),
    (2, 3, 9, 8, 4, (3, 2), (2, 1), (1, 0)),
    (2, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),
    (1, 2, 6, 6, 3, (2, 2), (2, 2), (0, 0)),
    (2, 2, 5, 7, 3, (5, 3), (3, 2), (2, 1)),
    (2, 3, 6, 9, 4, (2, 3), (1, 1), (0, 1)),  # stride 1, rectangular: the fold on the padded width
    (2, 2, 5, 5, 3, (1, 1), (1, 1), (0, 0)),
]

POOL_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0)),
    (2, 3, 7, 7, (2, 2), (2, 2), (0, 0)),      # odd: the last row and column are in no window
    (2, 2, 9, 6, (3, 3), (3, 3), (0, 0)),
    (2, 2, 9, 7, (3, 2), (2, 1), (1, 0)),      # overlapping windows, padding
    (1, 2, 6, 6, (3, 3), (3, 3), (1, 1)),      # disjoint but padded
    (2, 1, 8, 8, (3, 3), (1, 1), (1, 1)),
]


def _inputs(rng, shape, kind, dtype):
    if kind == "ties":  # ReLU-like {0, 1, 2}: most windows hold several maxima
        return np.maximum(rng.integers(-2, 3, shape), 0).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_reference(case, dtype, tol):
    n, c, h, w, o, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c) + kernel).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    out, cache = C.conv2d_forward(x, weight, bias, stride, padding)
    ref, ref_cache = C.conv2d_forward_reference(x, weight, bias, stride, padding)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < tol, f"conv2d forward {case}: relative error {rel_err(out, ref):.3g}"
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    for name, got, expected in zip(("grad_input", "grad_weight", "grad_bias"),
                                   C.conv2d_backward(grad_output, cache),
                                   C.conv2d_backward_reference(grad_output, ref_cache)):
        assert got.dtype == dtype and got.shape == expected.shape, f"conv2d {name} {case}"
        assert rel_err(got, expected) < tol, f"conv2d {name} {case}: relative error {rel_err(got, expected):.3g}"


@pytest.mark.parametrize("block_bytes", [1, 4000, 1 << 19])  # one sample per block, a few, all
@pytest.mark.parametrize("case", CONV_CASES + [(7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1))])
def test_conv2d_without_cache_gives_the_same_output(monkeypatch, case, block_bytes):
    """keep_cache=False (inference) unfolds blocks of samples into one reused buffer: same y, no cache."""
    monkeypatch.setattr(C, "COLS_BLOCK_BYTES", block_bytes)
    n, c, h, w, o, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight, bias = rng.standard_normal((o, c) + kernel).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    out, cache = C.conv2d_forward(x, weight, bias, stride, padding, keep_cache=False)
    np.testing.assert_array_equal(out, C.conv2d_forward(x, weight, bias, stride, padding)[0])
    assert cache is None and C.conv2d_forward_reference(x, weight, bias, stride, padding, keep_cache=False)[1] is None


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_without_cache_gives_the_same_output(case):
    n, c, h, w, kernel, stride, padding = case
    x = np.round(np.random.default_rng(4).standard_normal((n, c, h, w)), 1).astype(np.float32)
    out, cache = P.max_pool2d_forward(x, kernel, stride, padding, keep_cache=False)
    np.testing.assert_array_equal(out, P.max_pool2d_forward(x, kernel, stride, padding)[0])
    assert cache is None and P.max_pool2d_forward_reference(x, kernel, stride, padding, keep_cache=False)[1] is None


@pytest.mark.parametrize("name", ["tiny-cnn", "lenet5"])
def test_no_grad_forward_matches_training_forward(name):
    """Under no_grad the layers keep no cache (no columns, no argmax) and give the same logits."""
    handgrad.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10)
    x = np.random.default_rng(5).standard_normal((9, 1, 28, 28)).astype(np.float32)
    with handgrad.no_grad():
        inferred = model(x)
    assert all(layer._cache is None for layer in model)
    np.testing.assert_array_equal(inferred, model(x))


def test_conv2d_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(1)
    x, weight = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    out, cache = C.conv2d_forward(x, weight, None, (1, 1), (1, 1))
    grads = C.conv2d_backward(np.ones_like(out), cache, (False, True, True))
    assert grads[0] is None and grads[1] is not None and grads[2] is None  # no bias, no grad_input


@pytest.mark.parametrize("case", CONV_CASES)
def test_fold_is_the_adjoint_of_unfold(case):
    """<unfold(x), c> == <x, fold(c)> for every x and c: fold adds back exactly what unfold read."""
    n, c, h, w, _, kernel, stride, padding = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w))
    cols = C.unfold(x, kernel, stride, padding)
    other = rng.standard_normal(cols.shape)
    lhs, rhs = np.vdot(cols, other), np.vdot(x, C.fold(other, x.shape, kernel, stride, padding))
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_reference_exactly(case, dtype, kind):
    n, c, h, w, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    x = _inputs(rng, (n, c, h, w), kind, dtype)
    out, cache = P.max_pool2d_forward(x, kernel, stride, padding)
    ref, ref_cache = P.max_pool2d_forward_reference(x, kernel, stride, padding)
    assert out.dtype == dtype and np.array_equal(out, ref), f"max_pool2d forward {case} {kind}"
    assert np.array_equal(cache[0], ref_cache[0]), f"max_pool2d argmax {case} {kind}: not the first maximum"
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    got = P.max_pool2d_backward(grad_output, cache)
    expected = P.max_pool2d_backward_reference(grad_output, ref_cache)
    assert got.dtype == dtype and got.shape == x.shape and np.array_equal(got, expected), \
        f"max_pool2d backward {case} {kind}: max |diff| {np.abs(got - expected).max()}"


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_matches_window_mean(case):
    n, c, h, w, kernel, stride, padding = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w))
    out, cache = P.avg_pool2d_forward(x, kernel, stride, padding)
    expected = C.windows(C.pad2d(x, padding), kernel, stride).mean(axis=(-2, -1))
    assert rel_err(out, expected) < 1e-12
    # backward: the adjoint of the forward, <avg(x), g> == <x, avg_backward(g)>
    g = rng.standard_normal(out.shape)
    assert abs(np.vdot(out, g) - np.vdot(x, P.avg_pool2d_backward(g, cache))) < 1e-9 * max(1.0, abs(np.vdot(out, g)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_matches_reference_exactly(dtype):
    rng = np.random.default_rng(5)
    x = _inputs(rng, (4, 3, 5, 5), "ties", dtype) - dtype(1)  # many exact zeros
    out, cache = A.relu_forward(x)
    g = rng.standard_normal(x.shape).astype(dtype)
    got, expected = A.relu_backward(g, cache), A.relu_backward_reference(g, cache)
    assert got.dtype == dtype and np.array_equal(got, expected)


def _train(name, steps, reference):
    """A few SGD steps of a named model on fixed random batches; the parameters afterwards."""
    swaps = {"conv2d_forward": C.conv2d_forward_reference, "conv2d_backward": C.conv2d_backward_reference,
             "max_pool2d_forward": P.max_pool2d_forward_reference,
             "max_pool2d_backward": P.max_pool2d_backward_reference} if reference else {}
    saved = {k: getattr(F, k) for k in swaps}
    try:
        for k, v in swaps.items():
            setattr(F, k, v)  # the layers look the op up in handgrad.functional at call time
        handgrad.manual_seed(0)
        model = build_model(name)
        loss_fn = nn.CrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        rng = np.random.default_rng(6)
        for _ in range(steps):
            x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, 16)
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        return model.state_dict()
    finally:
        for k, v in saved.items():
            setattr(F, k, v)


@pytest.mark.parametrize("name", ["tiny-cnn", "lenet5"])
def test_training_steps_match_reference(name):
    fast, ref = _train(name, 5, reference=False), _train(name, 5, reference=True)
    for key in ref:
        assert rel_err(fast[key], ref[key]) < 1e-4, f"{name} {key} after 5 steps: {rel_err(fast[key], ref[key]):.3g}"
