"""Conv2d -> ReLU -> MaxPool2d fused (handgrad.kernels.fused) against the three references in a row
(handgrad.functional.fused), and nn.Sequential's fused path against the three layers one by one.

float64 to round-off, float32 within 1e-5 (relative to the largest entry): the kernel sums the
convolution's products in another order. Both ways to the convolution (direct for one input
channel, im2col and BLAS otherwise), padding, stride, overlapping and padded pools, odd sizes,
batch 1, no bias, ties (integer inputs: most windows hold several maxima, and z = 0 exactly where
the ReLU cuts), NaN, inference without a cache, and only the gradients asked for.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

import handgrad
from handgrad import kernels, nn
from handgrad.errors import BackwardBeforeForwardError
from handgrad.functional import fused as F
from handgrad.kernels import fused as K

FUSED_CASES = [  # (N, C, H, W, O, kernel, stride, padding, pool kernel, pool stride, pool padding)
    (3, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2), (2, 2), (2, 2), (0, 0)),  # LeNet-5's first layer: direct
    (2, 1, 12, 12, 4, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), (0, 0)),  # tiny-cnn's first layer: direct
    (3, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0), (2, 2), (2, 2), (0, 0)),  # LeNet-5's second: im2col and BLAS
    (1, 1, 9, 7, 3, (3, 2), (1, 1), (1, 0), (3, 2), (2, 1), (1, 0)),  # batch 1, overlapping padded pool
    (2, 1, 11, 9, 3, (3, 3), (2, 1), (1, 1), (2, 2), (2, 2), (0, 0)),  # one channel but stride 2: im2col
    (2, 3, 9, 9, 2, (2, 2), (1, 1), (0, 0), (3, 3), (3, 3), (1, 1)),  # odd sizes, rows in no window
    (2, 2, 7, 8, 3, (3, 3), (1, 1), (1, 1), (2, 2), (1, 1), (0, 0)),  # overlapping pool of stride 1
]
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def _case(case, dtype, kind="normal", seed=0):
    n, c, h, w, o, kernel, stride, padding, pool_kernel, pool_stride, pool_padding = case
    rng = np.random.default_rng(seed)
    if kind == "ties":  # small integers: exact sums, equal maxima, z = 0 where ReLU cuts
        x = rng.integers(-2, 3, (n, c, h, w)).astype(dtype)
        weight = rng.integers(-1, 2, (o, c) + kernel).astype(dtype)
        bias = rng.integers(-1, 2, o).astype(dtype)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        weight = rng.standard_normal((o, c) + kernel).astype(dtype)
        bias = rng.standard_normal(o).astype(dtype)
    return x, weight, bias, (stride, padding, pool_kernel, pool_stride, pool_padding), rng


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
def test_fused_kernel_matches_the_three_references(case, dtype, kind):
    x, weight, bias, args, rng = _case(case, dtype, kind)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    ref, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOLERANCE[dtype], f"forward {case}: {rel_err(out, ref):.3g}"
    grad_output = (rng.integers(-3, 4, out.shape) if kind == "ties" else rng.standard_normal(out.shape)).astype(dtype)
    got = K.conv2d_relu_max_pool2d_backward(grad_output, cache)
    expected = F.conv2d_relu_max_pool2d_backward(grad_output, ref_cache)
    for name, g, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
        assert g.dtype == dtype and g.shape == e.shape, f"{name} {case}"
        if kind == "ties":  # integer data: every sum is exact, so the gradients agree exactly
            assert np.array_equal(g, e), f"{name} {case} (ties)"
        else:
            assert rel_err(g, e) < TOLERANCE[dtype], f"{name} {case}: {rel_err(g, e):.3g}"


@pytest.mark.parametrize("case", FUSED_CASES[:3], ids=str)
def test_fused_kernel_propagates_nan_as_the_references(case):
    x, weight, bias, args, _ = _case(case, np.float64)
    x[0, 0, 3, 4] = np.nan
    out, _ = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    ref, _ = F.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.isnan(out).any()
    assert np.array_equal(out, ref, equal_nan=True) or rel_err(np.nan_to_num(out), np.nan_to_num(ref)) < 1e-12


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, True, False)])
@pytest.mark.parametrize("case", FUSED_CASES[:3], ids=str)
def test_fused_kernel_gives_only_what_is_asked(case, needs):
    x, weight, bias, args, rng = _case(case, np.float64)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    _, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    g = rng.standard_normal(out.shape)
    got = K.conv2d_relu_max_pool2d_backward(g, cache, needs)
    expected = F.conv2d_relu_max_pool2d_backward(g, ref_cache, needs)
    for want, a, b in zip(needs, got, expected):
        assert (a is None) == (not want)
        if want:
            assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("case", FUSED_CASES[:3], ids=str)
def test_fused_kernel_without_bias(case):
    x, weight, _, args, rng = _case(case, np.float64)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, None, *args)
    ref, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, None, *args)
    assert rel_err(out, ref) < 1e-12
    g = rng.standard_normal(out.shape)
    got = K.conv2d_relu_max_pool2d_backward(g, cache, (True, True, False))
    expected = F.conv2d_relu_max_pool2d_backward(g, ref_cache, (True, True, False))
    assert got[2] is None
    assert rel_err(got[0], expected[0]) < 1e-12 and rel_err(got[1], expected[1]) < 1e-12


@pytest.mark.parametrize(
    "case", FUSED_CASES + [(7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), (0, 0))], ids=str
)
def test_fused_kernel_without_cache_gives_the_same_output(monkeypatch, case):
    """keep_cache=False (inference) keeps nothing and, on the im2col side, runs blocks of samples."""
    from handgrad.kernels import conv

    monkeypatch.setattr(conv, "INFERENCE_BLOCK_BYTES", 4000)  # a few samples per block
    x, weight, bias, args, _ = _case(case, np.float32)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args, keep_cache=False)
    assert cache is None
    assert rel_err(out, K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)[0]) < 1e-6


def _sequential_and_layers(channels, seed=0):
    """A Sequential with two fusable runs (Conv2d, ReLU, MaxPool2d) before a Linear."""
    handgrad.manual_seed(seed)
    convs = [
        nn.Conv2d(channels, 4, 3, padding=1, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(5 * 2 * 2, 3, dtype=np.float64),
    ]
    return nn.Sequential(*convs)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("input_grad", [False, True])
def test_sequential_runs_the_fused_op_and_matches_the_layers_one_by_one(monkeypatch, channels, input_grad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, channels, 8, 8))
    model = _sequential_and_layers(channels)
    calls = []
    fused_forward = K.conv2d_relu_max_pool2d_forward
    monkeypatch.setattr(K, "conv2d_relu_max_pool2d_forward", lambda *a, **k: calls.append(1) or fused_forward(*a, **k))
    kernels._kernels = None  # look the kernels up again, the spy among them
    try:
        with kernels.use_kernels():
            out = model(x)
            grad = rng.standard_normal(out.shape)
            model.zero_grad()
            grad_input = model.backward(grad, input_grad=input_grad)
            fused_grads = [p.grad.copy() for p in model.parameters()]
    finally:
        kernels._kernels = None
    assert len(calls) == 2, "both Conv2d -> ReLU -> MaxPool2d runs go through the fused kernel"
    with kernels.reference():  # the layers one by one, each its own reference
        h = x
        for layer in model:
            h = layer(h)
        assert rel_err(out, h) < 1e-12
        model.zero_grad()
        g = grad
        for i, layer in reversed(list(enumerate(model))):
            g = layer.backward(g, input_grad=input_grad or i > 0)
    for got, p in zip(fused_grads, model.parameters()):
        assert rel_err(got, p.grad) < 1e-12
    if input_grad:
        assert rel_err(grad_input, g) < 1e-12
    else:
        assert grad_input is None


def test_each_layer_of_a_fused_run_still_works_alone():
    rng = np.random.default_rng(2)
    model = _sequential_and_layers(1)
    x = rng.standard_normal((2, 1, 8, 8))
    with kernels.use_kernels():
        model(x)  # a fused forward: the layers' own caches are cleared, not left stale
        with pytest.raises(BackwardBeforeForwardError):
            model[2].backward(np.ones((2, 4, 4, 4)))
        conv, relu, pool = model[0], model[1], model[2]
        z = conv(x)
        y = pool(relu(z))
        g = rng.standard_normal(y.shape)
        conv.zero_grad()
        conv.backward(relu.backward(pool.backward(g)))
    with kernels.reference():
        ref = F.conv2d_relu_max_pool2d_forward(
            x, conv.weight.data, conv.bias.data, conv.stride, conv.padding, pool.kernel_size, pool.stride, pool.padding
        )
        grads = F.conv2d_relu_max_pool2d_backward(g, ref[1])
    assert rel_err(y, ref[0]) < 1e-12
    assert rel_err(conv.weight.grad, grads[1]) < 1e-12 and rel_err(conv.bias.grad, grads[2]) < 1e-12


def test_backward_after_a_fused_forward_under_no_grad_names_the_layer():
    model = _sequential_and_layers(1)
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8))
    with kernels.use_kernels():
        with handgrad.no_grad():
            out = model(x)
        with pytest.raises(BackwardBeforeForwardError):
            model.backward(np.ones_like(out))


def test_sequential_fuses_only_the_exact_classes():
    """A subclass of ReLU may compute something else: that run is not fused."""

    class Shifted(nn.ReLU):
        def forward(self, x):
            return super().forward(x - 1)

    handgrad.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, dtype=np.float64), Shifted(), nn.MaxPool2d(2))
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8))
    with kernels.use_kernels():
        out = model(x)
    with kernels.reference():
        expected = model[2](model[1](model[0](x)))
    assert rel_err(out, expected) < 1e-12


def test_fused_training_step_matches_the_references_in_float64():
    """LeNet-5 in float64: one forward and backward with the kernels (fused) and with the references."""
    from handgrad.models import build_model

    handgrad.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10).double()
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    loss_fn = nn.CrossEntropyLoss()
    grads = {}
    for side in (kernels.use_kernels, kernels.reference):
        with side():
            model.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            grads[side] = (loss, [p.grad.copy() for p in model.parameters()])
    (loss_k, gk), (loss_r, gr) = grads.values()
    assert abs(loss_k - loss_r) < 1e-12
    for a, b in zip(gk, gr):
        assert rel_err(a, b) < 1e-11
