"""The compiled element-wise activations (handgrad.kernels.activation) against their references:
ReLU and leaky ReLU exactly (including x = 0, where the gradient is 0 as in PyTorch, and NaN);
sigmoid, tanh, GELU, SiLU and Softplus (over their options) float64 to 1e-15, float32 within 1e-6
(exp, erfc and tanh may round differently)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from handgrad import functional as F
from handgrad.kernels import activation as K

EXACT = ["relu", "leaky_relu"]
SMOOTH = ["sigmoid", "tanh", "gelu", "silu", "softplus"]
# the smooth ones' options: (op, options), each beside its defaults above
OPTIONS = [
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 2.0, "threshold": 1.0}),
    ("softplus", {"beta": 0.5, "threshold": 30.0}),
    ("softplus", {"beta": -1.5, "threshold": 20.0}),
]
SHAPES = [(4, 3, 5, 5), (7,), (), (300, 257)]  # 4-D, odd 1-D, 0-d, large


def _inputs(shape, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.reshape(-1)[::5] = 0  # exact zeros: the kink
    return x, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", EXACT)
def test_piecewise_activation_kernel_matches_reference_exactly(name, dtype, shape):
    x, g = _inputs(shape, dtype)
    out, cache = getattr(K, f"{name}_forward")(x)
    ref, ref_cache = getattr(F, f"{name}_forward")(x)
    assert out.dtype == dtype and out.shape == np.shape(ref) and np.array_equal(out, ref)
    got, expected = getattr(K, f"{name}_backward")(g, cache), getattr(F, f"{name}_backward")(g, ref_cache)
    assert got.dtype == dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_activation_kernel_matches_reference(name, dtype, tol, shape):
    x, g = _inputs(shape, dtype)
    x.reshape(-1)[1::7] = 90 if x.size > 1 else x.reshape(-1)[1::7]  # saturated: exp(-|x|) underflows
    out, cache = getattr(K, f"{name}_forward")(x)
    ref, ref_cache = getattr(F, f"{name}_forward")(x)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    got = getattr(K, f"{name}_backward")(g, cache)
    assert got.dtype == dtype and rel_err(got, getattr(F, f"{name}_backward")(g, ref_cache)) < tol


@pytest.mark.parametrize("shape", SHAPES, ids=str)
# 3e-6 and 1e-14: where tanh(...) is near 1, the tanh form's 1 - t^2 magnifies a last-bit difference of t
@pytest.mark.parametrize("dtype, tol", [(np.float32, 3e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("name, options", OPTIONS, ids=[f"{n}-{o}" for n, o in OPTIONS])
def test_activation_kernel_with_options_matches_reference(name, options, dtype, tol, shape):
    x, g = _inputs(shape, dtype)
    out, cache = getattr(K, f"{name}_forward")(x, **options)
    ref, ref_cache = getattr(F, f"{name}_forward")(x, **options)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    got = getattr(K, f"{name}_backward")(g, cache)
    assert got.dtype == dtype and rel_err(got, getattr(F, f"{name}_backward")(g, ref_cache)) < tol


def test_leaky_relu_kernel_uses_the_slope():
    x = np.array([-2.0, 0.0, 3.0])
    out, cache = K.leaky_relu_forward(x, 0.25)
    np.testing.assert_array_equal(out, [-0.5, 0.0, 3.0])
    np.testing.assert_array_equal(K.leaky_relu_backward(np.ones(3), cache), [0.25, 0.25, 1.0])


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softplus"])
def test_activation_kernels_propagate_nan(name):
    x = np.array([np.nan, 1.0, -1.0], np.float32)
    assert np.isnan(getattr(K, f"{name}_forward")(x)[0][0]) and np.isnan(getattr(F, f"{name}_forward")(x)[0][0])


def test_activation_kernel_reads_a_strided_input():
    x, g = _inputs((6, 8), np.float64)
    out, cache = K.relu_forward(x.T)
    np.testing.assert_array_equal(out, np.maximum(x.T, 0))
    np.testing.assert_array_equal(K.relu_backward(g.T, cache), np.where(x.T > 0, g.T, 0))
