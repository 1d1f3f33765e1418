"""Losses against PyTorch (value and dL/dinput, every reduction) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import nn

torch = pytest.importorskip("torch")

from conftest import assert_close, to_numpy  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def _check_loss(loss, torch_loss, input, target, rng, gradcheck=True):
    """Value, dL/dinput for a random dL/dloss, and finite differences, all in float64."""
    out = loss(input, target)
    input_t = torch.from_numpy(input.copy()).requires_grad_(True)
    target_t = torch.from_numpy(target)
    out_t = torch_loss(input_t, target_t)
    assert_close(out, to_numpy(out_t), "loss")
    if loss.reduction == "none":
        assert isinstance(out, np.ndarray) and out.dtype == input.dtype
    else:
        assert isinstance(out, float)
    grad_output = rng.standard_normal(np.shape(out))
    grad = loss.backward(grad_output if grad_output.ndim else float(grad_output))
    out_t.backward(torch.from_numpy(grad_output))
    assert_close(grad, to_numpy(input_t.grad), "grad_input")
    if gradcheck:
        report = handgrad.gradcheck(loss, (input, target))
        assert report.passed, str(report)


CLASS_SHAPES = [pytest.param(5, 4, id="N5-C4"), pytest.param(1, 3, id="N1-C3"), pytest.param(7, 2, id="N7-C2")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n, c", CLASS_SHAPES)
def test_cross_entropy(n, c, reduction, rng):
    _check_loss(
        nn.CrossEntropyLoss(reduction=reduction),
        torch.nn.CrossEntropyLoss(reduction=reduction),
        rng.standard_normal((n, c)) * 3,
        rng.integers(0, c, n),
        rng,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(reduction, dtype, rng):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4 - 2], [-1e4, -1e4, -1e4 + 3], [5e3, -5e3, 0.0]], dtype)
    target = np.array([1, 2, 0, 0])
    loss = nn.CrossEntropyLoss(reduction=reduction)
    out = loss(logits, target)
    out_t = torch.nn.CrossEntropyLoss(reduction=reduction)(
        torch.from_numpy(logits).requires_grad_(True), torch.from_numpy(target)
    )
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, to_numpy(out_t), rtol=1e-6)
    grad = loss.backward(np.ones(4, dtype) if reduction == "none" else 1.0)
    assert grad.dtype == dtype and np.isfinite(grad).all()
    logits_t = torch.from_numpy(logits).requires_grad_(True)
    torch.nn.CrossEntropyLoss(reduction=reduction)(logits_t, torch.from_numpy(target)).sum().backward()
    np.testing.assert_allclose(grad, to_numpy(logits_t.grad), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n, c", CLASS_SHAPES)
def test_nll_loss(n, c, reduction, rng):
    log_probs = rng.standard_normal((n, c))
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    _check_loss(
        nn.NLLLoss(reduction=reduction), torch.nn.NLLLoss(reduction=reduction), log_probs, rng.integers(0, c, n), rng
    )


def test_log_softmax_then_nll_equals_cross_entropy(rng):
    logits, target = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    log_softmax, nll, ce = nn.LogSoftmax(dim=1), nn.NLLLoss(), nn.CrossEntropyLoss()
    assert_close(nll(log_softmax(logits), target), ce(logits, target), "loss")
    assert_close(log_softmax.backward(nll.backward()), ce.backward(), "grad")


MSE_SHAPES = [pytest.param((4, 3), id="2d"), pytest.param((1, 2, 3, 3), id="4d-batch1"), pytest.param((5,), id="1d")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_SHAPES)
def test_mse_loss(shape, reduction, rng):
    _check_loss(
        nn.MSELoss(reduction=reduction),
        torch.nn.MSELoss(reduction=reduction),
        rng.standard_normal(shape),
        rng.standard_normal(shape),
        rng,
    )


@pytest.mark.parametrize(
    "loss, target",
    [
        pytest.param(nn.CrossEntropyLoss(), np.array([0, 2, 1]), id="CrossEntropyLoss"),
        pytest.param(nn.NLLLoss(), np.array([0, 2, 1]), id="NLLLoss"),
        pytest.param(nn.MSELoss(), np.zeros((3, 3), np.float32), id="MSELoss"),
    ],
)
def test_loss_keeps_float32(loss, target, rng):
    x = rng.standard_normal((3, 3)).astype(np.float32)
    loss(x, target)
    assert loss.backward().dtype == np.float32


def test_loss_backward_defaults_to_one(rng):
    x, target = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    loss = nn.CrossEntropyLoss()
    loss(x, target)
    np.testing.assert_array_equal(loss.backward(), loss.backward(1.0))
    np.testing.assert_allclose(loss.backward(2.5), 2.5 * loss.backward(), rtol=1e-15)


def test_mse_target_is_cast_to_input_dtype_not_the_other_way(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    loss = nn.MSELoss(reduction="none")
    assert loss(x, rng.standard_normal((2, 3))).dtype == np.float32
