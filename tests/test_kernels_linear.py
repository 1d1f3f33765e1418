"""The compiled Linear (kernels/linear.py: BLAS products, the bias added and summed in plain loops)
against its reference (functional/linear.py): float64 to round-off, float32 within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from handgrad import functional as F
from handgrad import kernels, nn

K = pytest.importorskip("handgrad.kernels.linear")
KF = pytest.importorskip("handgrad.kernels.fused")

CASES = [  # (x shape, out_features, bias)
    ((64, 784), 250, True),
    ((1, 5), 3, True),
    ((7, 3, 6), 4, True),  # extra leading axes
    ((5,), 2, True),  # one sample, no batch axis
    ((9, 4), 1, False),
]
NEEDS = [(True, True, True), (False, True, True), (True, False, False), (False, False, True)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("shape, out_features, bias", CASES)
def test_linear_matches_reference(shape, out_features, bias, dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_features, shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype) if bias else None
    out, cache = K.linear_forward(x, weight, b)
    ref, ref_cache = F.linear_forward(x, weight, b)
    assert out.dtype == dtype and out.shape == ref.shape and rel_err(out, ref) < tol
    g = rng.standard_normal(ref.shape).astype(dtype)
    for got, expected, name in zip(
        K.linear_backward(g, cache), F.linear_backward(g, ref_cache), ("grad_input", "grad_weight", "grad_bias")
    ):
        assert (got is None) == (expected is None), name
        if got is not None:
            assert got.dtype == dtype and got.shape == expected.shape
            assert rel_err(got, expected) < tol, f"linear {name} {shape}: {rel_err(got, expected):.3g}"


@pytest.mark.parametrize("needs", NEEDS)
def test_linear_backward_computes_only_what_is_needed(needs):
    rng = np.random.default_rng(1)
    x, weight, b = rng.standard_normal((6, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    g = rng.standard_normal((6, 3))
    got = K.linear_backward(g, K.linear_forward(x, weight, b)[1], needs)
    expected = F.linear_backward(g, F.linear_forward(x, weight, b)[1], needs)
    for a, e in zip(got, expected):
        assert (a is None) == (e is None)
        if a is not None:
            assert rel_err(a, e) < 1e-12


def test_linear_non_contiguous_gradient():
    rng = np.random.default_rng(2)
    x, weight, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    g = rng.standard_normal((3, 5)).T  # (5, 3), not C-contiguous
    for a, e in zip(
        K.linear_backward(g, K.linear_forward(x, weight, b)[1]), F.linear_backward(g, F.linear_forward(x, weight, b)[1])
    ):
        assert rel_err(a, e) < 1e-12


def test_linear_layer_agrees_with_and_without_kernels():
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((8, 6)), rng.standard_normal((8, 5))
    results = []
    for switch in (kernels.use_kernels, kernels.reference):
        with switch():
            layer = nn.Linear(6, 5, dtype=np.float64)
            layer.weight.data[...] = np.arange(30).reshape(5, 6) / 30
            layer.bias.data[...] = np.arange(5) / 5
            out = layer(x)
            results.append((out, layer.backward(g), layer.weight.grad, layer.bias.grad))
    for got, expected in zip(*results):
        assert rel_err(got, expected) < 1e-12


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_dtypes_without_kernels_run_the_reference(dtype):
    rng = np.random.default_rng(4)
    x, weight, b = (rng.standard_normal(s).astype(dtype) for s in ((5, 4), (3, 4), (3,)))
    out, cache = K.linear_forward(x, weight, b)
    ref, ref_cache = F.linear_forward(x, weight, b)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref)
    g = rng.standard_normal((5, 3)).astype(dtype)
    for got, expected in zip(K.linear_backward(g, cache), F.linear_backward(g, ref_cache)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_input_of_rows_is_handed_on_transposed(dtype):
    # dL/dx of (N, in) rows comes F-ordered, so a Linear -> ReLU run below reads dL/dy.T without a
    # copy; the values are the reference's, and the fused backward takes it as it takes C order
    rng = np.random.default_rng(1)
    x, weight = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)
    _, cache = K.linear_forward(x, weight, None)
    g = rng.standard_normal((6, 3)).astype(dtype)
    grad_input = K.linear_backward(g, cache, (True, False, False))[0]
    assert grad_input.T.flags.c_contiguous
    np.testing.assert_allclose(grad_input, g @ weight, rtol=1e-5)
    _, relu_cache = KF.linear_relu_forward(rng.standard_normal((6, 4)).astype(dtype), x.T[:, :4].copy(), None)
    for a, b in zip(
        KF.linear_relu_backward(grad_input, relu_cache),
        KF.linear_relu_backward(np.ascontiguousarray(grad_input), relu_cache),
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("split", [True, False])
def test_linear_on_a_transposed_input_matches_reference(monkeypatch, dtype, tol, bias, split):
    # a Linear -> ReLU hands its y on F-ordered; the Linear after it then takes y.T = weight @ x.T
    # on its threads (forced here on a small case) and adds the bias to y.T
    from handgrad.kernels import products

    if split:
        monkeypatch.setattr(products, "SPLIT_MIN_MADDS", 0)
        monkeypatch.setattr(products._threads, "numba_threads", lambda: 2)
    rng = np.random.default_rng(3)
    x = np.asfortranarray(rng.standard_normal((9, 6)).astype(dtype))
    weight = rng.standard_normal((4, 6)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if bias else None
    out, cache = K.linear_forward(x, weight, b)
    ref, ref_cache = F.linear_forward(x, weight, b)
    assert out.dtype == dtype and out.shape == ref.shape and rel_err(out, ref) < tol
    g = rng.standard_normal(ref.shape).astype(dtype)
    for got, expected in zip(K.linear_backward(g, cache), F.linear_backward(g, ref_cache)):
        assert (got is None) == (expected is None)
        if got is not None:
            assert rel_err(got, expected) < tol
