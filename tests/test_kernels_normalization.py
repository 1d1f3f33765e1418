"""The compiled BatchNorm (kernels/normalization.py) against its reference
(functional/normalization.py): training and eval, with and without affine parameters and running
statistics, (N, C), (N, C, L) and (N, C, H, W), odd sizes and batch 1; float64 to round-off,
float32 within 1e-4 (its sums run in a different order)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from handgrad import functional as F
from handgrad import kernels, nn

K = pytest.importorskip("handgrad.kernels.normalization")

SHAPES = [(8, 3), (64, 250), (5, 4, 7), (2, 3, 5, 5), (1, 6, 3, 7), (4, 16, 14, 14), (3, 1, 2, 2)]
TOLERANCES = [(np.float64, 1e-12), (np.float32, 1e-4)]
NEEDS = [(True, True, True), (True, False, False), (False, True, True), (False, False, True)]


def _case(shape, dtype, affine=True, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    weight = rng.standard_normal(c).astype(dtype) if affine else None
    bias = rng.standard_normal(c).astype(dtype) if affine else None
    running = (rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype))
    return rng, x, weight, bias, running


def _both(x, weight, bias, running, training, momentum=0.1, eps=1e-5):
    """Forward through the kernel and the reference, each on its own copy of the running statistics."""
    results = []
    for impl in (K, F):
        stats = tuple(r.copy() for r in running) if running is not None else (None, None)
        out, cache = impl.batch_norm_forward(x, weight, bias, *stats, training, momentum, eps)
        results.append((out, cache, stats))
    return results


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_matches_reference(shape, training, dtype, tol):
    rng, x, weight, bias, running = _case(shape, dtype)
    (out, cache, stats), (ref, ref_cache, ref_stats) = _both(x, weight, bias, running, training)
    assert out.dtype == dtype and out.shape == shape
    assert rel_err(out, ref) < tol, f"batch_norm forward {shape}: {rel_err(out, ref):.3g}"
    for got, expected, name in zip(stats, ref_stats, ("running_mean", "running_var")):
        assert rel_err(got, expected) < tol, f"{name} {shape}: {rel_err(got, expected):.3g}"
    g = rng.standard_normal(shape).astype(dtype)
    for got, expected, name in zip(
        K.batch_norm_backward(g, cache), F.batch_norm_backward(g, ref_cache), ("grad_input", "grad_weight", "grad_bias")
    ):
        assert got.dtype == dtype and got.shape == expected.shape
        assert rel_err(got, expected) < tol, f"batch_norm {name} {shape}: {rel_err(got, expected):.3g}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5, 4)])
def test_batch_norm_without_affine_or_running_stats(shape, training):
    rng, x, _, _, running = _case(shape, np.float64, affine=False)
    running = running if not training else None  # training without tracked statistics
    (out, cache, _), (ref, ref_cache, _) = _both(x, None, None, running, training)
    assert rel_err(out, ref) < 1e-12
    g = rng.standard_normal(shape)
    grad_input, grad_weight, grad_bias = K.batch_norm_backward(g, cache)
    assert grad_weight is None and grad_bias is None
    assert rel_err(grad_input, F.batch_norm_backward(g, ref_cache)[0]) < 1e-12


@pytest.mark.parametrize("needs", NEEDS)
def test_batch_norm_backward_computes_only_what_is_needed(needs):
    rng, x, weight, bias, running = _case((4, 3, 3, 3), np.float64)
    (_, cache, _), (_, ref_cache, _) = _both(x, weight, bias, running, True)
    g = rng.standard_normal(x.shape)
    for got, expected in zip(K.batch_norm_backward(g, cache, needs), F.batch_norm_backward(g, ref_cache, needs)):
        assert (got is None) == (expected is None)
        if got is not None:
            assert rel_err(got, expected) < 1e-12


def test_batch_norm_non_contiguous_input_and_gradient():
    rng, x, weight, bias, running = _case((5, 3, 6, 4), np.float64)
    view = x.transpose(0, 1, 3, 2)  # (5, 3, 4, 6), not C-contiguous
    (out, cache, _), (ref, ref_cache, _) = _both(view, weight, bias, running, True)
    assert rel_err(out, ref) < 1e-12
    g = rng.standard_normal((5, 3, 6, 4)).transpose(0, 1, 3, 2)
    for got, expected in zip(K.batch_norm_backward(g, cache), F.batch_norm_backward(g, ref_cache)):
        assert rel_err(got, expected) < 1e-12


@pytest.mark.parametrize("layer_class, shape", [(nn.BatchNorm1d, (16, 5)), (nn.BatchNorm2d, (4, 3, 6, 6))])
def test_batch_norm_layers_agree_with_and_without_kernels(layer_class, shape):
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal(shape) for _ in range(3)]
    g = rng.standard_normal(shape)
    results = []
    for switch in (kernels.use_kernels, kernels.reference):
        with switch():
            layer = layer_class(shape[1], dtype=np.float64)
            for x in batches:  # three training steps move the running statistics
                layer(x)
                grad = layer.backward(g)
            layer.eval()
            results.append((grad, layer.weight.grad, layer.running_mean, layer.running_var, layer(batches[0])))
    for got, expected in zip(*results):
        assert rel_err(got, expected) < 1e-12


def test_op_picks_kernel_or_reference():
    with kernels.use_kernels():
        assert kernels.op("batch_norm_forward") is K.batch_norm_forward
    with kernels.reference():
        assert kernels.op("batch_norm_backward") is F.batch_norm_backward


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dtypes_without_kernels_run_the_reference(dtype, training):
    rng, x, weight, bias, running = _case((4, 3, 2, 2), dtype)
    (out, cache, _), (ref, ref_cache, _) = _both(x, weight, bias, running, training)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref)
    g = rng.standard_normal(x.shape).astype(dtype)
    for got, expected in zip(K.batch_norm_backward(g, cache), F.batch_norm_backward(g, ref_cache)):
        np.testing.assert_array_equal(got, expected)
