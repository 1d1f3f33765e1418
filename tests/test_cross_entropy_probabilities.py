"""Cross-entropy with probability (one-hot or soft) targets: the reference pair and its compiled
kernel against torch, finite differences, the layer and the bridge's CrossEntropyFunction."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import functional as F
from handgrad import nn
from handgrad.errors import DTypeError, ShapeError
from handgrad.gradcheck import numeric_grad
from handgrad.kernels import loss as kernel

CASES = [
    pytest.param("one-hot", "mean", id="one-hot-mean"),
    pytest.param("one-hot", "sum", id="one-hot-sum"),
    pytest.param("soft", "mean", id="soft-mean"),
    pytest.param("soft", "none", id="soft-none"),
    pytest.param("unnormalised", "sum", id="unnormalised-sum"),  # rows that do not sum to 1, as torch allows
]


def make(kind, rng, n=6, c=5, dtype=np.float64):
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    if kind == "one-hot":
        target = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    elif kind == "soft":
        target = rng.dirichlet(np.ones(c), n).astype(dtype)
    else:
        target = rng.uniform(0, 1, (n, c)).astype(dtype)
    return logits, target


def upstream(reduction, n, rng):
    return rng.standard_normal(n) if reduction == "none" else np.asarray(rng.uniform(0.5, 2.0))


@pytest.mark.parametrize("kind, reduction", CASES)
@pytest.mark.parametrize("implementation", [F, kernel], ids=["reference", "kernel"])
def test_probability_targets_match_torch(kind, reduction, implementation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    logits, target = make(kind, rng)
    g = upstream(reduction, len(logits), rng)
    loss, cache = implementation.cross_entropy_forward(logits, target, reduction)
    grad = implementation.cross_entropy_backward(g, cache)

    x = torch.from_numpy(logits).requires_grad_()
    expected = torch.nn.functional.cross_entropy(x, torch.from_numpy(target), reduction=reduction)
    expected.backward(torch.from_numpy(np.asarray(g)))
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, reduction", CASES)
def test_probability_target_gradient_matches_finite_differences(kind, reduction):
    rng = np.random.default_rng(12)
    logits, target = make(kind, rng, n=3, c=4)
    g = upstream(reduction, len(logits), rng)
    _, cache = F.cross_entropy_forward(logits, target, reduction)
    grad = F.cross_entropy_backward(g, cache)
    numeric = numeric_grad(
        lambda: float(np.sum(F.cross_entropy_forward(logits, target, reduction)[0] * g)), logits, 1e-6
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_hot_targets_give_the_loss_and_gradient_of_class_indices(dtype):
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 10, 32)
    logits = rng.standard_normal((32, 10)).astype(dtype)
    by_index, by_one_hot = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    loss = by_index(logits, labels)
    np.testing.assert_allclose(by_one_hot(logits, np.eye(10, dtype=dtype)[labels]), loss, rtol=1e-6)
    np.testing.assert_allclose(by_one_hot.backward(), by_index.backward(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "target, error, message",
    [
        pytest.param(
            np.zeros((4, 3)),
            ShapeError,
            r"expected probability target of the input's shape \(4, 5\), "
            r"got \(4, 3\)",
            id="wrong-shape",
        ),
        pytest.param(
            np.zeros((4, 5), np.float32), DTypeError, "expected probability target of dtype float64", id="wrong-dtype"
        ),
    ],
)
def test_bad_probability_targets_are_refused_naming_the_layer(target, error, message):
    with pytest.raises(error, match=message):
        nn.CrossEntropyLoss()(np.zeros((4, 5)), target)


def test_nll_loss_still_takes_class_indices_only():
    with pytest.raises(DTypeError, match=r"expected target of an integer dtype \(class indices\), got float64"):
        nn.NLLLoss()(np.zeros((4, 5)), np.zeros((4, 5)))


@pytest.mark.parametrize("kind, reduction", CASES)
def test_cross_entropy_function_takes_probability_targets(kind, reduction):
    torch = pytest.importorskip("torch")
    from handgrad.torch import CrossEntropyFunction, cross_entropy

    rng = np.random.default_rng(14)
    logits, target = make(kind, rng)
    g = torch.from_numpy(np.asarray(upstream(reduction, len(logits), rng)))
    ours, theirs = (torch.from_numpy(logits).requires_grad_() for _ in range(2))
    # apply takes torch's arguments in order: weight, size_average, ignore_index, reduce, reduction
    CrossEntropyFunction.apply(ours, torch.from_numpy(target), None, None, -100, None, reduction).backward(g)
    torch.nn.functional.cross_entropy(theirs, torch.from_numpy(target), reduction=reduction).backward(g)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x: cross_entropy(x, torch.from_numpy(target), reduction=reduction),
        (torch.from_numpy(logits).requires_grad_(),),
    )
