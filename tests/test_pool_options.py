"""Pooling with torch's options, against torch autograd in float64: MaxPool2d's dilation, ceil_mode
and return_indices, AvgPool2d's ceil_mode, count_include_pad and divisor_override, unbatched
(C, H, W) input, AdaptiveAvgPool2d and MaxUnpool2d; through the layers, the pairs (reference and
kernel) and the bridge; checkpoints; refusals."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import kernels, models, nn
from handgrad.errors import HandgradError, ShapeError
from handgrad.functional import pool_output_size

torch = pytest.importorskip("torch")

import handgrad.torch as ht  # noqa: E402

MAX_CASES = [  # (input shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 7, 7), 3, 2, 1, 1, True),
    ((1, 2, 6, 7), (3, 2), (2, 1), (1, 1), (1, 2), True),
    ((1, 2, 6, 7), (3, 2), None, 0, (2, 1), False),
    ((3, 7, 6), 3, 2, 1, 1, False),  # unbatched
    ((2, 5, 9), (2, 3), (2, 2), (1, 1), 2, True),  # unbatched, dilated, ceil
    ((1, 1, 5, 5), 2, 3, 1, 1, True),  # ceil_mode's last window would start in the right padding: dropped
]
AVG_CASES = [  # (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 3, 7, 7), 3, 2, 1, True, True, None),
    ((2, 3, 7, 7), 3, 2, 1, True, False, None),
    ((1, 2, 6, 5), (3, 2), (2, 3), (1, 1), False, False, 3),
    ((3, 6, 6), 2, None, 0, False, True, None),  # unbatched
    ((3, 9, 8), (4, 4), (2, 3), (2, 1), True, True, -2),
    ((1, 1, 5, 5), 2, 3, 1, True, False, None),
]


def _double(rng, shape):
    return rng.standard_normal(shape)


def _torch_pair(x):
    ours = torch.from_numpy(x.copy()).requires_grad_(True)
    return ours, torch.from_numpy(x.copy()).requires_grad_(True)


def _close(a, b, what):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_layer_matches_torch(case, reference):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    rng = np.random.default_rng(0)
    x = _double(rng, shape)
    layer = nn.MaxPool2d(kernel, stride, padding, dilation, return_indices=True, ceil_mode=ceil_mode).double()
    theirs = torch.nn.MaxPool2d(kernel, stride, padding, dilation, return_indices=True, ceil_mode=ceil_mode)
    with kernels.reference() if reference else kernels.use_kernels():
        out, indices = layer(x)
        t = torch.from_numpy(x.copy()).requires_grad_(True)
        expected, expected_indices = theirs(t)
        upstream = rng.standard_normal(out.shape)
        expected.backward(torch.from_numpy(upstream))
        _close(out, expected.detach(), f"max_pool2d {case} output")
        assert indices.dtype == np.int64 and np.array_equal(indices, expected_indices.numpy()), f"indices {case}"
        _close(layer.backward(upstream), t.grad, f"max_pool2d {case} grad_input")


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_layer_matches_torch(case, reference):
    shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor = case
    rng = np.random.default_rng(1)
    x = _double(rng, shape)
    options = dict(ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor)
    layer = nn.AvgPool2d(kernel, stride, padding, **options).double()
    theirs = torch.nn.AvgPool2d(kernel, stride, padding, **options)
    with kernels.reference() if reference else kernels.use_kernels():
        out = layer(x)
        t = torch.from_numpy(x.copy()).requires_grad_(True)
        expected = theirs(t)
        upstream = rng.standard_normal(out.shape)
        expected.backward(torch.from_numpy(upstream))
        _close(out, expected.detach(), f"avg_pool2d {case} output")
        _close(layer.backward(upstream), t.grad, f"avg_pool2d {case} grad_input")


@pytest.mark.parametrize(
    "shape, output_size",
    [((2, 3, 5, 6), 3), ((3, 5, 6), (3, 4)), ((1, 2, 7, 5), (None, 2)), ((1, 2, 4, 3), (5, 7)), ((2, 8, 8), 1)],
)
def test_adaptive_avg_pool_layer_matches_torch(shape, output_size):
    rng = np.random.default_rng(2)
    x = _double(rng, shape)
    layer = nn.AdaptiveAvgPool2d(output_size).double()
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    expected = torch.nn.AdaptiveAvgPool2d(output_size)(t)
    out = layer(x)
    upstream = rng.standard_normal(out.shape)
    expected.backward(torch.from_numpy(upstream))
    _close(out, expected.detach(), f"adaptive_avg_pool2d {shape} -> {output_size}")
    _close(layer.backward(upstream), t.grad, f"adaptive_avg_pool2d {shape} -> {output_size} grad_input")


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, output_size",
    [
        ((2, 2, 6, 6), 2, None, 0, None),
        ((1, 2, 7, 7), 3, 2, 1, (7, 7)),  # overlapping windows: an index met twice
        ((3, 5, 8), (2, 3), (2, 2), (1, 1), (5, 8)),  # unbatched
        ((1, 1, 5, 5), 2, 2, 0, (1, 1, 5, 5)),  # output_size as the whole shape
    ],
)
def test_max_unpool_inverts_max_pool_as_torch(shape, kernel, stride, padding, output_size):
    rng = np.random.default_rng(3)
    x = _double(rng, shape)
    pooled, indices = nn.MaxPool2d(kernel, stride, padding, return_indices=True)(x)
    unpool = nn.MaxUnpool2d(kernel, stride, padding)
    t = torch.from_numpy(pooled.copy()).requires_grad_(True)
    expected = torch.nn.MaxUnpool2d(kernel, stride, padding)(t, torch.from_numpy(indices), output_size)
    out = unpool(pooled, indices, output_size)
    upstream = rng.standard_normal(out.shape)
    expected.backward(torch.from_numpy(upstream))
    _close(out, expected.detach(), "max_unpool2d output")
    _close(unpool.backward(upstream), t.grad, "max_unpool2d grad_input")
    twin = ht.MaxUnpool2d(kernel, stride, padding)
    mine = torch.from_numpy(pooled.copy()).requires_grad_(True)
    got = twin(mine, indices=torch.from_numpy(indices), output_size=output_size)
    got.backward(torch.from_numpy(upstream))
    _close(got.detach(), expected.detach(), "MaxUnpool2d twin output")
    _close(mine.grad, t.grad, "MaxUnpool2d twin grad_input")


@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_bridge_max_pool2d_takes_torchs_signature_and_returns_its_indices(case):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    x = _double(np.random.default_rng(4), shape)
    ours, theirs = _torch_pair(x)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, return_indices=True)
    out, indices = ht.max_pool2d(input=ours, kernel_size=kernel, **kwargs)
    expected, expected_indices = torch.nn.functional.max_pool2d(theirs, kernel, **kwargs)
    assert indices.dtype == torch.int64 and torch.equal(indices, expected_indices)
    assert not indices.requires_grad
    (out * out).sum().backward()
    (expected * expected).sum().backward()
    _close(out.detach(), expected.detach(), "ht.max_pool2d output")
    _close(ours.grad, theirs.grad, "ht.max_pool2d grad_input")
    converted = ht.convert(torch.nn.Sequential(torch.nn.MaxPool2d(kernel, **kwargs)))
    assert type(converted[0]) is ht.MaxPool2d


@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_bridge_avg_pool2d_and_twin_take_torchs_options(case):
    shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor = case
    x = _double(np.random.default_rng(5), shape)
    ours, theirs = _torch_pair(x)
    options = dict(ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor)
    twin = ht.convert(torch.nn.Sequential(torch.nn.AvgPool2d(kernel, stride, padding, **options)))
    assert type(twin[0]) is ht.AvgPool2d
    out, expected = twin(ours), torch.nn.functional.avg_pool2d(theirs, kernel, stride, padding, **options)
    out.backward(torch.ones_like(out))
    expected.backward(torch.ones_like(expected))
    _close(out.detach(), expected.detach(), "AvgPool2d twin output")
    _close(ours.grad, theirs.grad, "AvgPool2d twin grad_input")


def test_bridge_adaptive_avg_pool2d_twin_and_function():
    x = _double(np.random.default_rng(6), (2, 3, 7, 5))
    ours, theirs = _torch_pair(x)
    twin = ht.convert(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((3, None))))
    assert type(twin[0]) is ht.AdaptiveAvgPool2d
    out, expected = twin(ours), torch.nn.functional.adaptive_avg_pool2d(theirs, (3, None))
    out.sum().backward()
    expected.sum().backward()
    _close(out.detach(), expected.detach(), "AdaptiveAvgPool2d twin output")
    _close(ours.grad, theirs.grad, "AdaptiveAvgPool2d twin grad_input")
    assert torch.autograd.gradcheck(ht.adaptive_avg_pool2d, (ours.detach().requires_grad_(True), 2))


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
def test_max_pool_propagates_nan_as_torch(reference):
    """A window holding NaN gives NaN; its index (and its gradient) is the window's last NaN."""
    x = np.array([[[[1.0, np.nan, 2.0, np.nan, 3.0], [0.5, 4.0, np.nan, -1.0, 2.0], [0, 1, 2, 3, 4]]]])
    layer = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True).double()
    with kernels.reference() if reference else kernels.use_kernels():
        out, indices = layer(x)
        expected, expected_indices = torch.nn.functional.max_pool2d(
            torch.from_numpy(x), 2, 2, ceil_mode=True, return_indices=True
        )
        np.testing.assert_array_equal(out, expected.numpy())
        np.testing.assert_array_equal(indices, expected_indices.numpy())
        grad = layer.backward(np.ones_like(out))
    assert grad.reshape(-1)[indices.reshape(-1)].tolist() == [1.0] * indices.size


def test_ceil_mode_output_size_follows_torchs_rule():
    """ceil((5 + 2 - 2) / 3) + 1 = 3 windows, but the third would start at 6 - 1 = 5, past the
    input and its left padding: torch keeps two."""
    assert pool_output_size(5, 2, 3, 1, 1, ceil_mode=True) == 2
    assert pool_output_size(6, 3, 2, 0, 1, ceil_mode=True) == 3 and pool_output_size(6, 3, 2, 0) == 2
    assert torch.nn.functional.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 3, 1, ceil_mode=True).shape[-1] == 2


@pytest.mark.parametrize(
    "layer",
    [
        nn.Sequential(nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True), nn.Flatten()),
        nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=5), nn.Flatten()),
        nn.Sequential(nn.AdaptiveAvgPool2d((2, None)), nn.Flatten()),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)),
    ],
    ids=["maxpool", "avgpool", "adaptive", "adaptive-head"],
)
def test_pool_options_round_trip_through_a_checkpoint(layer, tmp_path):
    x = np.random.default_rng(7).standard_normal((2, 1, 9, 8)).astype(np.float32)
    handgrad.save(layer, tmp_path / "m.safetensors")
    loaded = handgrad.load(tmp_path / "m.safetensors")
    assert repr(loaded) == repr(layer)
    np.testing.assert_array_equal(loaded(x), layer(x))
    _, shape = models.check_architecture(models.architecture(layer), (1, 9, 8))
    assert shape == layer(x).shape[1:]
    module = ht.load(tmp_path / "m.safetensors")
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), layer(x), rtol=1e-6, atol=1e-7)


def test_fused_conv_relu_pool_leaves_options_to_the_layers():
    """Conv2d -> ReLU -> MaxPool2d with ceil_mode or dilation runs the three layers (the fused kernel
    has neither) and gives the same as torch."""
    rng = np.random.default_rng(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True, dilation=(1, 2))).double()
    theirs = ht.from_handgrad(model)
    x = rng.standard_normal((2, 1, 8, 9))
    with kernels.use_kernels():
        _close(model(x), theirs(torch.from_numpy(x)).detach(), "conv-relu-maxpool with options")


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: nn.MaxPool2d(2)(np.zeros((2, 2), np.float32)), ShapeError, "(N, C, H, W) or (C, H, W)"),
        (lambda: nn.MaxPool2d(3, dilation=3)(np.zeros((1, 1, 5, 5))), ShapeError, "smaller than one window"),
        (lambda: nn.MaxPool2d(2, dilation=0), ValueError, "dilation >= 1"),
        (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override must be a nonzero int"),
        (lambda: nn.AdaptiveAvgPool2d((2, -1)), ValueError, "output_size an int >= 0"),
        (lambda: nn.MaxUnpool2d(2)(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16)), HandgradError, "index 16"),
        (lambda: nn.MaxUnpool2d(2)(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2))), ShapeError, "indices of integers"),
        (
            lambda: nn.MaxUnpool2d(2)(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.int64), (6, 6)),
            HandgradError,
            "between 2 and 6",
        ),
        (lambda: ht.max_pool2d(torch.zeros(1, 1, 4, 4), 2, padding=2), HandgradError, "at most half"),
        (lambda: ht.avg_pool2d(torch.zeros(1, 1, 4, 4), 2, divisor_override=0.5), HandgradError, "divisor_override"),
    ],
    ids=[
        "rank",
        "dilated-window",
        "dilation",
        "divisor",
        "adaptive-size",
        "unpool-index",
        "unpool-float",
        "unpool-size",
        "bridge-padding",
        "bridge-divisor",
    ],
)
def test_bad_pool_arguments_are_refused_naming_what_was_wrong(make, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        make()
