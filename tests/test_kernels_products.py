"""The compiled path's matrix products (kernels/products.py) against NumPy's ``a @ b``: every
operand layout, the split into one block of rows per thread and the pair of products on two
threads (forced on small cases by lowering the size threshold), and NumPy's product where the
dtypes are not ones the kernels are compiled for."""

from __future__ import annotations

import numpy as np
import pytest

P = pytest.importorskip("handgrad.kernels.products")


def operand(rng, shape, dtype, layout):
    """A (shape) array of ``layout``: 'C', 'F', or 'strided' (every other column of a wider array)."""
    if layout == "strided":
        return rng.standard_normal((shape[0], 2 * shape[1])).astype(dtype)[:, ::2]
    return np.asarray(rng.standard_normal(shape).astype(dtype), order=layout)


@pytest.fixture(params=["threshold", "split"])
def split(request, monkeypatch):
    """'split': every product counts as large, on 2 or 3 threads, so the threaded paths run."""
    if request.param == "split":
        monkeypatch.setattr(P, "SPLIT_MIN_MADDS", 0)
    return request.param


LAYOUTS = ["C", "F", "strided"]
SHAPES = [(7, 5, 3), (64, 250, 10), (1, 4, 6), (9, 0, 4), (5, 3, 1)]  # (m, k, n)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_rows_product_matches_numpy(monkeypatch, split, threads, dtype, tol, m, k, n, layout_a, layout_b):
    monkeypatch.setattr(P._threads, "numba_threads", lambda: threads)
    rng = np.random.default_rng(0)
    a, b = operand(rng, (m, k), dtype, layout_a), operand(rng, (k, n), dtype, layout_b)
    out = P.rows_product(a, b)
    expected = a @ b
    assert out.dtype == dtype and out.shape == (m, n) and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(1, k))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("wanted", [(True, True), (True, False), (False, True), (False, False)])
def test_product_pair_matches_numpy(monkeypatch, split, threads, dtype, wanted):
    monkeypatch.setattr(P._threads, "numba_threads", lambda: threads)
    rng = np.random.default_rng(1)
    # a layer's backward: grad_weight = G.T @ x and grad_input.T = W.T @ G.T, from F-ordered views
    g, x, w = (rng.standard_normal(s).astype(dtype) for s in [(6, 3), (6, 5), (3, 5)])
    pairs = [(g.T, x), (w.T, g.T)]
    got = P.product_pair(*(pairs[0] if wanted[0] else (None, x)), *(pairs[1] if wanted[1] else (None, g.T)))
    for result, (a, b), want in zip(got, pairs, wanted):
        if not want:
            assert result is None
            continue
        assert result.dtype == dtype and result.flags.c_contiguous
        np.testing.assert_allclose(result, a @ b, rtol=1e-5)


@pytest.mark.parametrize("dtypes", [(np.float16, np.float16), (np.float32, np.float64), (np.int64, np.int64)])
def test_other_dtypes_take_numpys_product(split, dtypes):
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((4, 3)) * 4).astype(dtypes[0])
    b = (rng.standard_normal((3, 2)) * 4).astype(dtypes[1])
    expected = a @ b
    out = P.rows_product(a, b)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
    first, second = P.product_pair(a, b, a, b)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_rows_product_rejects_mismatched_shapes():
    a, b = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError):
        P.rows_product(a, b)
