"""The compiled softmax cross-entropy and NLL (kernels/loss.py) against their references
(functional/loss.py): float64 to round-off, float32 within 1e-5, every reduction, batch 1."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import rel_err

from handgrad import functional as F
from handgrad import kernels, nn

K = pytest.importorskip("handgrad.kernels.loss")

REDUCTIONS = ["mean", "sum", "none"]
TOLERANCES = [(np.float64, 1e-12), (np.float32, 1e-5)]
SHAPES = [(1, 10), (64, 10), (7, 3), (5, 1), (33, 17)]


def _case(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    target = rng.integers(0, shape[1], shape[0])
    return rng, logits, target


def _upstream(rng, reduction, n, dtype):
    return rng.standard_normal(n).astype(dtype) if reduction == "none" else np.asarray(1.7, dtype)


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_matches_reference(shape, reduction, dtype, tol):
    rng, logits, target = _case(shape, dtype)
    loss, cache = K.cross_entropy_forward(logits, target, reduction)
    ref, ref_cache = F.cross_entropy_forward(logits, target, reduction)
    assert np.shape(loss) == np.shape(ref) and np.asarray(loss).dtype == dtype
    assert rel_err(loss, ref) < tol, f"cross_entropy forward {shape} {reduction}: {rel_err(loss, ref):.3g}"
    g = _upstream(rng, reduction, shape[0], dtype)
    grad, ref_grad = K.cross_entropy_backward(g, cache), F.cross_entropy_backward(g, ref_cache)
    assert grad.dtype == dtype and grad.shape == shape
    assert rel_err(grad, ref_grad) < tol, f"cross_entropy backward {shape} {reduction}: {rel_err(grad, ref_grad):.3g}"


@pytest.mark.parametrize("scale", [1e3, -1e3], ids=["large", "large-negative"])
def test_cross_entropy_large_logits_stay_finite(scale):
    # logsumexp shifts by the row maximum: exp never overflows
    _, logits, target = _case((8, 5), np.float64, scale=abs(scale))
    logits += scale
    loss, cache = K.cross_entropy_forward(logits, target, "none")
    ref, ref_cache = F.cross_entropy_forward(logits, target, "none")
    assert np.all(np.isfinite(loss))
    assert rel_err(loss, ref) < 1e-12
    assert rel_err(K.cross_entropy_backward(np.ones(8), cache), F.cross_entropy_backward(np.ones(8), ref_cache)) < 1e-12


def test_cross_entropy_nan_propagates_to_its_row_only():
    _, logits, target = _case((4, 6), np.float64)
    logits[1, 3] = np.nan
    loss, cache = K.cross_entropy_forward(logits, target, "none")
    ref, _ = F.cross_entropy_forward(logits, target, "none")
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref))
    assert np.isnan(loss[1]) and not np.isnan(loss[[0, 2, 3]]).any()
    grad = K.cross_entropy_backward(np.ones(4), cache)
    assert np.isnan(grad[1]).all() and not np.isnan(grad[[0, 2, 3]]).any()


def test_cross_entropy_non_contiguous_logits():
    rng, logits, target = _case((10, 12), np.float64)
    view = logits[:, ::2]
    target = target % view.shape[1]
    loss, cache = K.cross_entropy_forward(view, target)
    ref, ref_cache = F.cross_entropy_forward(view, target)
    assert rel_err(loss, ref) < 1e-12
    assert rel_err(K.cross_entropy_backward(1.0, cache), F.cross_entropy_backward(1.0, ref_cache)) < 1e-12


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(1, 4), (64, 10), (9, 2)])
def test_nll_loss_matches_reference(shape, reduction, dtype, tol):
    rng, logits, target = _case(shape, dtype)
    log_probs, _ = F.log_softmax_forward(logits, dim=1)
    loss, cache = K.nll_loss_forward(log_probs, target, reduction)
    ref, ref_cache = F.nll_loss_forward(log_probs, target, reduction)
    assert rel_err(loss, ref) < tol and np.asarray(loss).dtype == dtype
    g = _upstream(rng, reduction, shape[0], dtype)
    grad, ref_grad = K.nll_loss_backward(g, cache), F.nll_loss_backward(g, ref_cache)
    assert grad.dtype == dtype and rel_err(grad, ref_grad) < tol


@pytest.mark.parametrize("loss_class", [nn.CrossEntropyLoss, nn.NLLLoss])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_layers_agree_with_and_without_kernels(loss_class, reduction):
    rng, logits, target = _case((16, 10), np.float64, seed=3)
    g = _upstream(rng, reduction, 16, np.float64)
    results = []
    for switch in (kernels.use_kernels, kernels.reference):
        with switch():
            layer = loss_class(reduction=reduction)
            loss = layer(logits, target)
            results.append((np.asarray(loss), layer.backward(g)))
    (loss, grad), (ref, ref_grad) = results
    assert rel_err(loss, ref) < 1e-12 and rel_err(grad, ref_grad) < 1e-12


def test_op_picks_kernel_or_reference():
    with kernels.use_kernels():
        assert kernels.op("cross_entropy_forward") is K.cross_entropy_forward
        assert kernels.op("nll_loss_backward") is K.nll_loss_backward
    with kernels.reference():
        assert kernels.op("cross_entropy_forward") is F.cross_entropy_forward
        assert kernels.op("nll_loss_backward") is F.nll_loss_backward


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_dtypes_without_kernels_run_the_reference(dtype):
    _, logits, target = _case((6, 4), dtype)
    for fwd, bwd, ref_fwd, ref_bwd in (
        (K.cross_entropy_forward, K.cross_entropy_backward, F.cross_entropy_forward, F.cross_entropy_backward),
        (K.nll_loss_forward, K.nll_loss_backward, F.nll_loss_forward, F.nll_loss_backward),
    ):
        loss, cache = fwd(logits, target)
        ref, ref_cache = ref_fwd(logits, target)
        assert np.asarray(loss).dtype == dtype and loss == ref
        np.testing.assert_array_equal(bwd(np.asarray(1.0, dtype), cache), ref_bwd(np.asarray(1.0, dtype), ref_cache))


OPTIONS = [
    pytest.param((8, 5), {"weight": True}, id="weight"),
    pytest.param((8, 5), {"ignore_index": 2}, id="ignore"),
    pytest.param((8, 5), {"label_smoothing": 0.2}, id="smoothing"),
    pytest.param((8, 5), {"weight": True, "ignore_index": 0, "label_smoothing": 0.1}, id="all"),
    pytest.param((3, 5, 4), {}, id="spatial"),
    pytest.param((3, 5, 2, 2), {"weight": True, "ignore_index": 1}, id="spatial-weight-ignore"),
    pytest.param((5,), {}, id="unbatched"),
]


def _options_case(shape, options, dtype, seed=5):
    rng = np.random.default_rng(seed)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target = np.asarray(rng.integers(0, n_classes, shape[:1] + shape[2:] if len(shape) > 1 else ()))
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = rng.uniform(0.5, 2.0, n_classes).astype(dtype)
    return rng, logits, target, kwargs


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, options", OPTIONS)
def test_cross_entropy_options_match_reference(shape, options, reduction, dtype, tol):
    rng, logits, target, kwargs = _options_case(shape, options, dtype)
    loss, cache = K.cross_entropy_forward(logits, target, reduction, **kwargs)
    ref, ref_cache = F.cross_entropy_forward(logits, target, reduction, **kwargs)
    assert np.shape(loss) == np.shape(ref) and rel_err(loss, ref) < tol
    g = rng.standard_normal(np.shape(ref)).astype(dtype) if reduction == "none" else np.asarray(1.3, dtype)
    grad, ref_grad = K.cross_entropy_backward(g, cache), F.cross_entropy_backward(g, ref_cache)
    assert grad.shape == logits.shape and grad.dtype == dtype and rel_err(grad, ref_grad) < tol


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, options", [p for p in OPTIONS if "label_smoothing" not in p.values[1]])
def test_nll_loss_options_match_reference(shape, options, reduction, dtype, tol):
    rng, logits, target, kwargs = _options_case(shape, options, dtype)
    log_probs = F.log_softmax_forward(logits, dim=1 if logits.ndim > 1 else 0)[0]
    loss, cache = K.nll_loss_forward(log_probs, target, reduction, **kwargs)
    ref, ref_cache = F.nll_loss_forward(log_probs, target, reduction, **kwargs)
    assert np.shape(loss) == np.shape(ref) and rel_err(loss, ref) < tol
    g = rng.standard_normal(np.shape(ref)).astype(dtype) if reduction == "none" else np.asarray(0.4, dtype)
    grad, ref_grad = K.nll_loss_backward(g, cache), F.nll_loss_backward(g, ref_cache)
    assert grad.shape == logits.shape and rel_err(grad, ref_grad) < tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_common_path_stays_compiled(dtype):
    """Class indices, no weight, no smoothing, no sample ignored: the compiled rows run, and their
    cache keeps the (N,) class indices rather than the reference's (N, C) q."""
    _, logits, target = _case((16, 10), dtype)
    _, cache = K.cross_entropy_forward(logits, target)
    assert cache[1] is not None and cache[1].shape == (16,)
    _, cache = K.nll_loss_forward(logits, target, ignore_index=int(target[0]))  # ignored samples too
    assert len(cache) == 6 and cache[0].shape == (16,)
    _, cache = K.cross_entropy_forward(logits, target, weight=np.ones(10, dtype))  # weights: the reference
    assert cache[1].shape == (16, 10)


def test_mean_over_only_ignored_samples_gives_a_zero_gradient_in_both():
    _, logits, _ = _case((4, 3), np.float64)
    target = np.full(4, 1)
    for fwd, bwd in (
        (K.cross_entropy_forward, K.cross_entropy_backward),
        (F.cross_entropy_forward, F.cross_entropy_backward),
    ):
        loss, cache = fwd(logits, target, ignore_index=1)
        assert np.isnan(loss)
        np.testing.assert_array_equal(bwd(np.asarray(1.0), cache), np.zeros((4, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reducing_only_ignored_samples_is_silent(reduction, dtype):
    # 'mean' over no sample is 0/0 = NaN, without a warning (as torch); 'sum' is 0; the loss keeps the dtype
    _, logits, _ = _case((4, 3), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, _ = K.cross_entropy_forward(logits, np.full(4, 1), reduction, ignore_index=1)
    assert np.asarray(loss).dtype == dtype
    assert np.isnan(loss) if reduction == "mean" else loss == 0
