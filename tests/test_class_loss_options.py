"""CrossEntropyLoss and NLLLoss with torch's options (class weights, ignore_index, label smoothing,
the three reductions, (N, C, d1, ...) and unbatched input, probability targets) against torch
autograd in float64: the loss and the input's gradient, through the layer and the bridge."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import nn
from handgrad.errors import DTypeError, HandgradError, ShapeError

torch = pytest.importorskip("torch")

import handgrad.torch as ht  # noqa: E402

RTOL = 1e-10  # float64; the contract is 1e-6


def _targets(rng, shape, n_classes, ignore_index):
    """Class indices of ``shape`` with about a quarter of them ``ignore_index``."""
    target = rng.integers(0, n_classes, shape)
    if ignore_index is not None:
        target = np.where(rng.uniform(size=shape) < 0.25, ignore_index, target)
    return np.asarray(target)


GRID = [
    pytest.param(
        shape,
        weighted,
        ignore_index,
        smoothing,
        reduction,
        id=f"{shape}-w{weighted}-i{ignore_index}-s{smoothing}-{reduction}",
    )
    for shape in [(6, 4), (3, 4, 5), (2, 3, 2, 3), (4,)]
    for weighted in (False, True)
    for ignore_index in (None, 1)
    for smoothing in (0.0, 0.15)
    for reduction in ("mean", "sum", "none")
]


def _compare(ours_loss, ours_grad, theirs_loss, theirs_grad):
    np.testing.assert_allclose(np.asarray(ours_loss), theirs_loss, rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(ours_grad, theirs_grad, rtol=RTOL, atol=1e-13)


def _torch_run(name, x, target, upstream, **options):
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    if options.get("weight") is not None:
        options["weight"] = torch.from_numpy(options["weight"])
    target_t = torch.from_numpy(np.asarray(target).copy())
    loss = getattr(torch.nn.functional, name)(t, target_t, **options)
    loss.backward(torch.from_numpy(np.asarray(upstream, np.float64)).reshape(loss.shape))
    return loss.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("shape, weighted, ignore_index, smoothing, reduction", GRID)
def test_cross_entropy_options_match_torch(shape, weighted, ignore_index, smoothing, reduction):
    rng = np.random.default_rng(sum(shape) + 7 * weighted + int(100 * smoothing))
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    x = rng.standard_normal(shape) * 2
    target = _targets(rng, shape[:1] + shape[2:] if len(shape) > 1 else (), n_classes, ignore_index)
    weight = rng.uniform(0.3, 2.0, n_classes) if weighted else None
    options = dict(weight=weight, ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction)
    options["label_smoothing"] = smoothing
    upstream = rng.standard_normal(target.shape) if reduction == "none" else np.float64(1.7)
    theirs_loss, theirs_grad = _torch_run("cross_entropy", x, target, upstream, **dict(options))
    layer = nn.CrossEntropyLoss(**options)
    loss = layer(x, target)
    _compare(loss, layer.backward(upstream), theirs_loss, theirs_grad)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    bridged_options = dict(options, weight=None if weight is None else torch.from_numpy(weight))
    out = ht.cross_entropy(t, torch.from_numpy(target), **bridged_options)
    out.backward(torch.from_numpy(np.asarray(upstream)).reshape(out.shape))
    _compare(out.detach().numpy(), t.grad.numpy(), theirs_loss, theirs_grad)


@pytest.mark.parametrize(
    "shape, weighted, ignore_index, reduction",
    [(p.values[0], p.values[1], p.values[2], p.values[4]) for p in GRID if p.values[3] == 0.0],
)
def test_nll_loss_options_match_torch(shape, weighted, ignore_index, reduction):
    rng = np.random.default_rng(sum(shape) + 3 * weighted)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    x = rng.standard_normal(shape)
    target = _targets(rng, shape[:1] + shape[2:] if len(shape) > 1 else (), n_classes, ignore_index)
    weight = rng.uniform(0.3, 2.0, n_classes) if weighted else None
    options = dict(weight=weight, ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction)
    upstream = rng.standard_normal(target.shape) if reduction == "none" else np.float64(0.6)
    theirs_loss, theirs_grad = _torch_run("nll_loss", x, target, upstream, **dict(options))
    layer = nn.NLLLoss(**options)
    _compare(layer(x, target), layer.backward(upstream), theirs_loss, theirs_grad)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = ht.nll_loss(
        t, torch.from_numpy(target), **dict(options, weight=None if weight is None else torch.from_numpy(weight))
    )
    out.backward(torch.from_numpy(np.asarray(upstream)).reshape(out.shape))
    _compare(out.detach().numpy(), t.grad.numpy(), theirs_loss, theirs_grad)


@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3), (4,)])
@pytest.mark.parametrize("weighted, smoothing", [(True, 0.0), (False, 0.2), (True, 0.3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_combine_with_weight_and_smoothing_as_torch(shape, weighted, smoothing, reduction):
    rng = np.random.default_rng(len(shape) * 10 + int(10 * smoothing))
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    x = rng.standard_normal(shape)
    target = rng.uniform(size=shape)
    target /= target.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    weight = rng.uniform(0.3, 2.0, n_classes) if weighted else None
    options = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    out_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    upstream = rng.standard_normal(out_shape) if reduction == "none" else np.float64(1.0)
    theirs_loss, theirs_grad = _torch_run("cross_entropy", x, target, upstream, **dict(options))
    layer = nn.CrossEntropyLoss(**options)
    _compare(layer(x, target), layer.backward(upstream), theirs_loss, theirs_grad)


def test_mean_over_only_ignored_samples_is_nan_with_a_zero_gradient_as_torch():
    x, target = np.random.default_rng(0).standard_normal((3, 4)), np.array([2, 2, 2])
    theirs_loss, theirs_grad = _torch_run("cross_entropy", x, target, 1.0, ignore_index=2)
    layer = nn.CrossEntropyLoss(ignore_index=2)
    assert np.isnan(layer(x, target)) and np.isnan(theirs_loss)
    np.testing.assert_array_equal(layer.backward(), theirs_grad)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("keyword", ["size_average", "reduce"])
def test_deprecated_size_average_and_reduce_are_refused_unless_none(name, keyword):
    x, target = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1])
    getattr(ht, name)(x, target, **{keyword: None})
    with pytest.raises(
        HandgradError, match=f"{keyword}=False is deprecated in torch and not supported; use reduction="
    ):
        getattr(ht, name)(x, target, **{keyword: False})
    with pytest.raises(HandgradError, match=f"{keyword}=True is deprecated"):
        getattr(nn, "CrossEntropyLoss" if name == "cross_entropy" else "NLLLoss")(**{keyword: True})


def test_bridge_takes_torchs_exact_signature():
    import inspect

    assert str(inspect.signature(ht.cross_entropy)) == (
        "(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction='mean', "
        "label_smoothing=0.0)"
    )
    assert str(inspect.signature(ht.nll_loss)) == (
        "(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction='mean')"
    )


def test_twins_run_torchs_configurations_and_convert_picks_them():
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((4, 3)))
    target = torch.tensor([0, 2, 1, 2])
    for twin, original in [
        (
            ht.CrossEntropyLoss(weight, ignore_index=1, label_smoothing=0.1),
            torch.nn.CrossEntropyLoss(weight, ignore_index=1, label_smoothing=0.1),
        ),
        (ht.NLLLoss(weight, reduction="sum"), torch.nn.NLLLoss(weight, reduction="sum")),
    ]:
        np.testing.assert_allclose(twin(x, target).numpy(), original(x, target).numpy(), rtol=RTOL)
        assert type(ht.convert(torch.nn.Sequential(original))[0]) is type(twin)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: nn.CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3)), np.array([0, 1])),
            ShapeError,
            r"expected weight of shape \(3,\)",
        ),
        (
            lambda: ht.cross_entropy(
                torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1]), torch.ones(3, dtype=torch.float32)
            ),
            DTypeError,
            "weight of dtype float64",
        ),
        (
            lambda: nn.CrossEntropyLoss()(np.zeros((2, 3, 4)), np.array([0, 1])),
            ShapeError,
            r"expected target of shape \(2, 4\)",
        ),
        (lambda: nn.CrossEntropyLoss()(np.zeros(3), np.array([0])), ShapeError, r"expected target of shape \(\)"),
        (
            lambda: nn.NLLLoss()(np.zeros((2, 3)), np.array([0, -1])),
            HandgradError,
            r"in \[0, 2\] \(C=3\) or ignore_index \(-100\), got \[-1\]",
        ),
        (
            lambda: nn.CrossEntropyLoss(label_smoothing=1.5)(np.zeros((2, 3)), np.array([0, 1])),
            HandgradError,
            r"label_smoothing must be in \[0, 1\]",
        ),
        (
            lambda: nn.CrossEntropyLoss(ignore_index=0)(np.zeros((2, 3)), np.full((2, 3), 1 / 3)),
            HandgradError,
            "ignore_index",
        ),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_them(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)
