"""The compiled max and average pools (handgrad.kernels.pool) against their references.

Max pool: outputs and argmax exactly, including ties (the first maximum wins, as PyTorch) and NaN
(NaN wins, the last NaN of a window takes the gradient, as PyTorch); the backward exactly where
windows do not overlap and to rounding where they do (the kernel adds window by window, the
reference offset by offset). Average pool: float64 to round-off, float32 within 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from handgrad import functional as F
from handgrad.kernels import pool as K

POOL_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0)),
    (2, 3, 7, 7, (2, 2), (2, 2), (0, 0)),  # odd: the last row and column are in no window
    (2, 2, 9, 6, (3, 3), (3, 3), (0, 0)),
    (2, 2, 9, 7, (3, 2), (2, 1), (1, 0)),  # overlapping windows, padding
    (1, 2, 6, 6, (3, 3), (3, 3), (1, 1)),  # batch 1, disjoint but padded
    (2, 1, 8, 8, (3, 3), (1, 1), (1, 1)),
]


def _overlap(case):
    kernel, stride = case[4], case[5]
    return any(k > s for k, s in zip(kernel, stride))


def _inputs(rng, shape, kind, dtype):
    if kind == "ties":  # ReLU-like {0, 1, 2}: most windows hold several maxima
        return np.maximum(rng.integers(-2, 3, shape), 0).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "nan":  # a few NaNs, two of them in one window
        x[0, 0, 0, :2] = np.nan
        x[-1, -1, -1, -1] = np.nan
    return x


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool2d_kernel_matches_reference(case, dtype, kind):
    n, c, h, w, kernel, stride, padding = case
    rng = np.random.default_rng(3)
    x = _inputs(rng, (n, c, h, w), kind, dtype)
    out, cache = K.max_pool2d_forward(x, kernel, stride, padding)
    ref, ref_cache = F.max_pool2d_forward(x, kernel, stride, padding)
    assert out.dtype == dtype and np.array_equal(out, ref, equal_nan=True), f"max_pool2d forward {case} {kind}"
    assert np.array_equal(cache[0], ref_cache[0]), f"max_pool2d argmax {case} {kind}"
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    got, expected = K.max_pool2d_backward(grad_output, cache), F.max_pool2d_backward(grad_output, ref_cache)
    assert got.dtype == dtype and got.shape == x.shape
    if _overlap(case):
        assert rel_err(got, expected) < (1e-6 if dtype == np.float32 else 1e-15), f"max_pool2d backward {case} {kind}"
    else:
        assert np.array_equal(got, expected), f"max_pool2d backward {case} {kind}"


def test_max_pool2d_nan_follows_pytorch():
    """NaN wins its window, and the gradient goes to the window's last NaN (PyTorch's indices)."""
    x = np.array([[[[1.0, np.nan, np.nan, 0.5, 3.0, 2.0]]]])
    for forward, backward in (
        (K.max_pool2d_forward, K.max_pool2d_backward),
        (F.max_pool2d_forward, F.max_pool2d_backward),
    ):
        out, cache = forward(x, (1, 3), (1, 3))
        assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 3.0
        np.testing.assert_array_equal(backward(np.ones_like(out), cache), [[[[0, 0, 1, 0, 1, 0]]]])


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool2d_kernel_without_cache_gives_the_same_output(case):
    n, c, h, w, kernel, stride, padding = case
    x = np.round(np.random.default_rng(4).standard_normal((n, c, h, w)), 1).astype(np.float32)
    out, cache = K.max_pool2d_forward(x, kernel, stride, padding, keep_cache=False)
    np.testing.assert_array_equal(out, K.max_pool2d_forward(x, kernel, stride, padding)[0])
    assert cache is None and F.max_pool2d_forward(x, kernel, stride, padding, keep_cache=False)[1] is None


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avg_pool2d_kernel_matches_reference(case, dtype, tol):
    n, c, h, w, kernel, stride, padding = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    out, cache = K.avg_pool2d_forward(x, kernel, stride, padding)
    ref, ref_cache = F.avg_pool2d_forward(x, kernel, stride, padding)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    g = rng.standard_normal(out.shape).astype(dtype)
    got = K.avg_pool2d_backward(g, cache)
    assert got.dtype == dtype and rel_err(got, F.avg_pool2d_backward(g, ref_cache)) < tol


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avg_pool2d_reference_is_the_window_mean_and_its_backward_the_adjoint(case):
    n, c, h, w, kernel, stride, padding = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w))
    out, cache = F.avg_pool2d_forward(x, kernel, stride, padding)
    expected = F.conv.windows(F.conv.pad2d(x, padding), kernel, stride).mean(axis=(-2, -1))
    assert rel_err(out, expected) < 1e-12
    g = rng.standard_normal(out.shape)  # <avg(x), g> == <x, avg_backward(g)>
    assert abs(np.vdot(out, g) - np.vdot(x, F.avg_pool2d_backward(g, cache))) < 1e-9 * max(1.0, abs(np.vdot(out, g)))


OPTION_CASES = [  # (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 3, 7, 7), (3, 3), (2, 2), (1, 1), True, True, None),
    ((2, 2, 9, 6), (2, 3), (2, 2), (1, 0), True, False, None),
    ((3, 8, 7), (2, 2), (3, 2), (1, 1), True, False, 3),  # unbatched
    ((1, 2, 6, 6), (3, 2), (1, 2), (0, 1), False, False, None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", OPTION_CASES, ids=str)
def test_pool_kernels_match_references_with_ceil_mode_and_divisors(case, dtype):
    """ceil_mode, count_include_pad=False, divisor_override and (C, H, W) input stay compiled."""
    shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    (out, indices), cache = K.max_pool2d_forward(x, kernel, stride, padding, (1, 1), ceil_mode, True)
    (ref, ref_indices), ref_cache = F.max_pool2d_forward(x, kernel, stride, padding, (1, 1), ceil_mode, True)
    assert np.array_equal(out, ref) and np.array_equal(indices, ref_indices), f"max_pool2d {case}"
    g = rng.standard_normal(out.shape).astype(dtype)
    assert rel_err(K.max_pool2d_backward(g, cache), F.max_pool2d_backward(g, ref_cache)) < 1e-6
    options = (ceil_mode, count_include_pad, divisor)
    out, cache = K.avg_pool2d_forward(x, kernel, stride, padding, *options)
    ref, ref_cache = F.avg_pool2d_forward(x, kernel, stride, padding, *options)
    assert out.dtype == dtype and out.shape == ref.shape and rel_err(out, ref) < 1e-6, f"avg_pool2d {case}"
    g = rng.standard_normal(out.shape).astype(dtype)
    assert rel_err(K.avg_pool2d_backward(g, cache), F.avg_pool2d_backward(g, ref_cache)) < 1e-6


def test_dilated_max_pool_runs_the_reference():
    x = np.random.default_rng(6).standard_normal((1, 2, 7, 7))
    out, cache = K.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1), (2, 2))
    ref, ref_cache = F.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1), (2, 2))
    assert np.array_equal(out, ref) and np.array_equal(cache[0], ref_cache[0])
