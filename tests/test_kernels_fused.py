"""Conv2d -> ReLU -> MaxPool2d fused (handgrad.kernels.fused) against the three references in a row
(handgrad.functional.fused), and nn.Sequential's fused path against the three layers one by one;
then the same for Linear -> ReLU (float64 to round-off, float32 within 1e-5; shapes with extra or no
batch axes, no bias, ties, NaN, a dtype the kernels are not compiled for, frozen layers, bad input).

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
from handgrad.errors import BackwardBeforeForwardError, DTypeError, HandgradError, ShapeError
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
    from handgrad.kernels import fused

    monkeypatch.setattr(fused, "COLUMNS_BLOCK_BYTES", 4000)  # a few samples per block
    x, weight, bias, args, _ = _case(case, np.float32)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args, keep_cache=False)
    assert cache is None
    assert rel_err(out, K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)[0]) < 1e-6


DIRECT_CASES = [  # (C, O, kernel, padding): tap counts below, at and above the eight per pass
    (1, 3, (1, 1), (0, 0)),  # 1 tap: only the taps left over
    (1, 2, (2, 3), (1, 1)),  # 6
    (2, 3, (2, 2), (0, 1)),  # 8: one full pass, none left over
    (1, 4, (3, 3), (1, 1)),  # 9, tiny-cnn's first layer
    (3, 2, (3, 3), (0, 0)),  # 27: three passes and three left over, several input channels
    (1, 6, (5, 5), (2, 2)),  # 25, LeNet-5's first layer
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", DIRECT_CASES, ids=str)
def test_direct_convolution_matches_the_references_for_every_tap_count(monkeypatch, case, dtype):
    """The direct convolution sums eight taps per pass and its weight gradient four: every count of
    taps left over, on one input channel or several (the direct path forced on)."""
    c, o, kernel, padding = case
    monkeypatch.setattr(K, "DIRECT_MAX_CHANNELS", c)
    x, weight, bias, args, rng = _case((2, c, 9, 11, o, kernel, (1, 1), padding, (2, 2), (2, 2), (0, 0)), dtype)
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    assert cache[0] == "direct"
    ref, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    assert rel_err(out, ref) < TOLERANCE[dtype], f"forward {case}: {rel_err(out, ref):.3g}"
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    got = K.conv2d_relu_max_pool2d_backward(grad_output, cache)
    expected = F.conv2d_relu_max_pool2d_backward(grad_output, ref_cache)
    for name, g, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
        assert g.dtype == dtype and rel_err(g, e) < TOLERANCE[dtype], f"{name} {case}: {rel_err(g, e):.3g}"


def _every_window(values):
    """x (1, 1, 2, 2*len(values)**4): window b of a 2x2 pool of stride 2 holds the b-th of every
    assignment of ``values`` to its four pixels, in row-major order."""
    windows = np.array(np.meshgrid(values, values, values, values, indexing="ij")).reshape(4, -1).T
    x = np.empty((1, 1, 2, 2 * len(windows)))
    x[0, 0, 0, 0::2], x[0, 0, 0, 1::2], x[0, 0, 1, 0::2], x[0, 0, 1, 1::2] = windows.T
    return x


@pytest.mark.parametrize("channels", [1, 2], ids=["direct", "columns"])
def test_two_by_two_pool_takes_the_first_maximum_or_the_last_nan_of_every_window(channels):
    """The 2x2 pool's selects against the references' scan, on every window of ties, NaN
    and distinct values: y and where its gradient goes. z = x exactly (a 1x1 kernel of weight 1 on
    the first channel, 0 on the second, no bias)."""
    x = _every_window([1.0, 2.0, np.nan])
    if channels == 2:
        x = np.concatenate([x, np.ones_like(x)], axis=1)
    weight = np.zeros((1, channels, 1, 1))
    weight[0, 0] = 1.0
    args = ((1, 1), (0, 0), (2, 2), (2, 2), (0, 0))
    out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, None, *args)
    ref, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, None, *args)
    assert np.array_equal(out, ref, equal_nan=True)
    grad_output = np.arange(1.0, out.size + 1).reshape(out.shape)  # tells the windows apart
    got = K.conv2d_relu_max_pool2d_backward(grad_output, cache, (True, False, False))[0]
    expected = F.conv2d_relu_max_pool2d_backward(grad_output, ref_cache, (True, False, False))[0]
    assert np.array_equal(got, expected)


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


# -- Linear -> ReLU ----------------------------------------------------------------------------------
LINEAR_CASES = [  # (x shape, out_features, bias)
    ((64, 784), 250, True),  # the mlp's first layer
    ((1, 5), 3, True),  # batch 1
    ((7, 3, 6), 4, True),  # extra leading axes
    ((5,), 2, True),  # one sample, no batch axis
    ((9, 4), 1, False),  # no bias
]


def _linear_case(case, dtype, kind="normal", seed=0):
    shape, out_features, bias = case
    rng = np.random.default_rng(seed)
    if kind == "ties":  # small integers: exact sums, and z = 0 exactly where the ReLU cuts
        x = rng.integers(-2, 3, shape).astype(dtype)
        weight = rng.integers(-1, 2, (out_features, shape[-1])).astype(dtype)
        b = rng.integers(-1, 2, out_features).astype(dtype) if bias else None
    else:
        x = rng.standard_normal(shape).astype(dtype)
        weight = rng.standard_normal((out_features, shape[-1])).astype(dtype)
        b = rng.standard_normal(out_features).astype(dtype) if bias else None
    return x, weight, b, rng


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=str)
def test_linear_relu_kernel_matches_the_two_references(case, dtype, kind):
    x, weight, bias, rng = _linear_case(case, dtype, kind)
    out, cache = K.linear_relu_forward(x, weight, bias)
    ref, ref_cache = F.linear_relu_forward(x, weight, bias)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOLERANCE[dtype], f"forward {case}: {rel_err(out, ref):.3g}"
    grad_output = (rng.integers(-3, 4, out.shape) if kind == "ties" else rng.standard_normal(out.shape)).astype(dtype)
    got = K.linear_relu_backward(grad_output, cache)
    expected = F.linear_relu_backward(grad_output, ref_cache)
    for name, g, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
        assert (g is None) == (e is None), f"{name} {case}"
        if g is None:
            continue
        assert g.dtype == dtype and g.shape == e.shape, f"{name} {case}"
        if kind == "ties":  # integer data: every sum is exact, so the gradients agree exactly
            assert np.array_equal(g, e), f"{name} {case} (ties)"
        else:
            assert rel_err(g, e) < TOLERANCE[dtype], f"{name} {case}: {rel_err(g, e):.3g}"


def test_linear_relu_kernel_propagates_nan_as_the_references():
    x, weight, bias, rng = _linear_case(LINEAR_CASES[1], np.float64)
    x[0, 2] = np.nan  # every output of that row is NaN; the ReLU keeps NaN and passes it no gradient
    out, cache = K.linear_relu_forward(x, weight, bias)
    ref, ref_cache = F.linear_relu_forward(x, weight, bias)
    assert np.isnan(out).all() and np.array_equal(out, ref, equal_nan=True)
    g = rng.standard_normal(out.shape)
    for a, b in zip(K.linear_relu_backward(g, cache), F.linear_relu_backward(g, ref_cache)):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True)])
def test_linear_relu_kernel_gives_only_what_is_asked(needs):
    x, weight, bias, rng = _linear_case(LINEAR_CASES[0], np.float64)
    out, cache = K.linear_relu_forward(x, weight, bias)
    g = rng.standard_normal(out.shape)
    got = K.linear_relu_backward(g, cache, needs)
    expected = F.linear_relu_backward(g, F.linear_relu_forward(x, weight, bias)[1], needs)
    for want, a, b in zip(needs, got, expected):
        assert (a is None) == (not want)
        if want:
            assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("case", LINEAR_CASES, ids=str)
def test_linear_relu_kernel_without_cache_gives_the_same_output(case):
    x, weight, bias, _ = _linear_case(case, np.float32)
    out, cache = K.linear_relu_forward(x, weight, bias, keep_cache=False)
    assert cache is None
    assert np.array_equal(out, K.linear_relu_forward(x, weight, bias)[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", [((300, 20), 7, True), ((2, 150, 9), 5, False)], ids=str)
def test_linear_relu_inference_in_blocks_of_rows_equals_the_references(case, dtype):
    """Without a cache, from 64 rows per thread: one block of rows per thread, its product and
    ReLU together; the reference's values (NaN kept as NaN), on 2 and on 3 threads."""
    x, weight, bias, _ = _linear_case(case, dtype)
    x.reshape(-1, x.shape[-1])[5, 1] = np.nan  # that row's outputs: NaN, kept by the ReLU
    ref = F.linear_relu_forward(x, weight, bias)[0]
    previous = handgrad.get_num_threads()
    try:
        for threads in (2, 3):
            handgrad.set_num_threads(threads)
            out, cache = K.linear_relu_forward(x, weight, bias, keep_cache=False)
            assert cache is None and out.shape == ref.shape and out.dtype == dtype
            assert np.array_equal(np.isnan(out), np.isnan(ref))
            finite = ~np.isnan(ref)
            assert rel_err(out[finite], ref[finite]) < TOLERANCE[dtype]
    finally:
        handgrad.set_num_threads(previous)


def test_linear_relu_kernel_runs_the_reference_for_a_dtype_it_is_not_compiled_for():
    x, weight, bias, rng = _linear_case(LINEAR_CASES[1], np.float16)
    out, cache = K.linear_relu_forward(x, weight, bias)
    ref, ref_cache = F.linear_relu_forward(x, weight, bias)
    assert out.dtype == np.float16 and np.array_equal(out, ref)
    g = rng.standard_normal(out.shape).astype(np.float16)
    for a, b in zip(K.linear_relu_backward(g, cache), F.linear_relu_backward(g, ref_cache)):
        assert np.array_equal(a, b)


def _mlp(dtype=np.float64, seed=0):
    """Flatten, then two Linear -> ReLU runs, then a Linear: the mlp model's shape, smaller."""
    handgrad.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 7, dtype=dtype),
        nn.ReLU(),
        nn.Linear(7, 5, dtype=dtype),
        nn.ReLU(),
        nn.Linear(5, 3, dtype=dtype),
    )


def _spy_on(monkeypatch, name):
    """Count the calls of the fused kernel ``name`` that Sequential makes."""
    calls = []
    real = getattr(K, name)
    monkeypatch.setattr(K, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    kernels._kernels = None  # look the kernels up again, the spy among them
    return calls


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("input_grad", [False, True])
def test_sequential_fuses_linear_relu_and_matches_the_layers_one_by_one(monkeypatch, input_grad, dtype, tol):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    model = _mlp(dtype)
    calls = _spy_on(monkeypatch, "linear_relu_forward")
    try:
        with kernels.use_kernels():
            out = model(x)
            grad = rng.standard_normal(out.shape).astype(dtype)
            model.zero_grad()
            grad_input = model.backward(grad, input_grad=input_grad)
            fused_grads = [p.grad.copy() for p in model.parameters()]
    finally:
        kernels._kernels = None
    assert len(calls) == 2, "both Linear -> ReLU runs go through the fused kernel"
    with kernels.reference():  # the layers one by one, each its own reference
        h = x
        for layer in model:
            h = layer(h)
        assert out.dtype == dtype and rel_err(out, h) < tol
        model.zero_grad()
        g = grad
        for i, layer in reversed(list(enumerate(model))):
            if g is not None:  # below the first Linear only when dL/dx is asked for
                g = layer.backward(g, input_grad=input_grad or i > 1)
    for got, p in zip(fused_grads, model.parameters()):
        assert got.dtype == dtype and rel_err(got, p.grad) < tol
    if input_grad:
        assert rel_err(grad_input, g) < tol
    else:
        assert grad_input is None


def test_a_frozen_linear_in_a_fused_run_gets_no_gradient():
    model = _mlp()
    model[3].weight.requires_grad = False
    model[3].bias.requires_grad = False
    x = np.random.default_rng(7).standard_normal((4, 12))
    with kernels.use_kernels():
        out = model(x)
        model.zero_grad()
        model.backward(np.ones_like(out), input_grad=False)
    assert model[3].weight.grad is None and model[3].bias.grad is None
    assert model[1].weight.grad is not None and model[5].weight.grad is not None


def test_each_layer_of_a_fused_linear_relu_still_works_alone():
    rng = np.random.default_rng(8)
    model = _mlp()
    x = rng.standard_normal((3, 12))
    linear, relu = model[1], model[2]
    with kernels.use_kernels():
        model(x)  # a fused forward: the layers' own caches are cleared, not left stale
        with pytest.raises(BackwardBeforeForwardError):
            linear.backward(np.ones((3, 7)))
        y = relu(linear(x))
        g = rng.standard_normal(y.shape)
        linear.zero_grad()
        grad_input = linear.backward(relu.backward(g))
    ref, cache = F.linear_relu_forward(x, linear.weight.data, linear.bias.data)
    expected = F.linear_relu_backward(g, cache)
    assert rel_err(y, ref) < 1e-12 and rel_err(grad_input, expected[0]) < 1e-12
    assert rel_err(linear.weight.grad, expected[1]) < 1e-12 and rel_err(linear.bias.grad, expected[2]) < 1e-12


def test_a_subclass_of_linear_is_not_fused(monkeypatch):
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    handgrad.manual_seed(0)
    model = nn.Sequential(Scaled(4, 3, dtype=np.float64), nn.ReLU())
    x = np.random.default_rng(9).standard_normal((2, 4))
    calls = _spy_on(monkeypatch, "linear_relu_forward")
    try:
        with kernels.use_kernels():
            out = model(x)
    finally:
        kernels._kernels = None
    assert not calls
    with kernels.reference():
        assert rel_err(out, model[1](model[0](x))) < 1e-12


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((2, 11)), ShapeError, r"Linear\(in_features=12.*expected input of shape \(\*, 12\).*got \(2, 11\)"),
        (np.zeros((2, 12), np.float32), DTypeError, r"Linear\(in_features=12.*dtype float64.*got float32"),
        (np.zeros((2, 12), np.int64), DTypeError, r"Linear\(in_features=12.*dtype float64.*got int64"),
        ([[0.0] * 12], HandgradError, r"Flatten.*numpy.ndarray, got list"),
    ],
)
def test_bad_input_to_a_fused_run_names_the_layer_as_alone(x, error, match):
    model = _mlp()
    with kernels.use_kernels(), pytest.raises(error, match=match):
        model(x)


def test_bad_grad_output_to_a_fused_run_names_its_last_layer():
    head = _mlp()[:3]  # Flatten, then one fused Linear -> ReLU
    with kernels.use_kernels():
        head(np.zeros((2, 12)))
        with pytest.raises(ShapeError, match=r"ReLU\(\): expected grad_output of shape \(2, 7\).*got \(2, 6\)"):
            head.backward(np.zeros((2, 6)))


def test_backward_reads_the_cache_its_forward_wrote_whatever_the_switch_says():
    """A forward with the kernels, then backward inside ``reference()``: the fused op's own backward."""
    model = _mlp()
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 12))
    with kernels.use_kernels():
        out = model(x)
    g = rng.standard_normal(out.shape)
    with kernels.reference():
        model.zero_grad()
        got = model.backward(g)
        grads = [p.grad.copy() for p in model.parameters()]
        model(x)
        model.zero_grad()
        expected = model.backward(g)
    assert rel_err(got, expected) < 1e-12
    for a, p in zip(grads, model.parameters()):
        assert rel_err(a, p.grad) < 1e-12


@pytest.mark.parametrize("name", ["mlp", "mlp-small", "lenet5"])
def test_one_training_step_with_every_fusion_matches_the_references_in_float64(name):
    """Both fusions, as the models use them: one forward and backward with the kernels and with the
    references, the same loss and gradients."""
    from handgrad.models import build_model

    handgrad.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10).double()
    rng = np.random.default_rng(11)
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


def test_fused_inference_keeps_no_cache():
    model = _mlp(np.float32)
    x = np.random.default_rng(12).standard_normal((5, 12)).astype(np.float32)
    with kernels.use_kernels():
        with handgrad.no_grad():
            out = model.eval()(x)
        assert model._cache is None and all(layer._cache is None for layer in model)
        assert np.array_equal(out, model(x))


def test_layers_after_a_fused_run_take_its_transposed_output():
    """A fused Linear -> ReLU hands on y as a transposed (F-ordered) view, and its backward hands
    back dL/dx likewise: the layers around it (BatchNorm1d, Dropout, Sigmoid, Flatten) give what
    they give on the references' C-ordered arrays."""
    handgrad.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8, dtype=np.float64),
        nn.ReLU(),
        nn.BatchNorm1d(8, dtype=np.float64),
        nn.Dropout(0.3),
        nn.Linear(8, 6, dtype=np.float64),
        nn.ReLU(),
        nn.Linear(6, 5, dtype=np.float64),
        nn.ReLU(),
        nn.Sigmoid(),
    )
    rng = np.random.default_rng(13)
    x, g = rng.standard_normal((7, 3, 4)), rng.standard_normal((7, 5))
    results = []
    for side in (kernels.use_kernels, kernels.reference):
        with side():
            handgrad.manual_seed(1)  # the same dropout mask on both sides
            model.zero_grad()
            out = model(x)
            results.append((out, model.backward(g), *[p.grad.copy() for p in model.parameters()]))
    for got, expected in zip(*results):
        assert got.shape == expected.shape and rel_err(got, expected) < 1e-12


BLOCK_CASES = [  # im2col cases whose batch splits into blocks of 1, 2 or 3 samples, the last one short
    (7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1), (2, 2), (2, 2), (0, 0)),
    (5, 2, 9, 8, 3, (2, 3), (2, 1), (1, 0), (3, 2), (2, 1), (1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("block_samples", [1, 2, 3])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=str)
def test_columns_blocks_give_the_reference_values_on_any_thread_count(monkeypatch, case, block_samples, dtype):
    """The columns path in blocks of samples (each unfolded, multiplied and pooled on one thread,
    its shares of grad_weight and grad_bias summed over the blocks in order): the reference's
    output and gradients, and the same bits on 1 and 2 threads."""
    from handgrad.kernels import fused

    n, c, h, w, o, kernel = case[:6]
    ho = (h + 2 * case[7][0] - kernel[0]) // case[6][0] + 1
    wo = (w + 2 * case[7][1] - kernel[1]) // case[6][1] + 1
    itemsize = np.dtype(dtype).itemsize
    monkeypatch.setattr(fused, "COLUMNS_BLOCK_BYTES", block_samples * c * kernel[0] * kernel[1] * ho * wo * itemsize)
    assert fused.columns_block(c * kernel[0] * kernel[1], ho * wo, itemsize) == block_samples
    x, weight, bias, args, rng = _case(case, dtype)
    ref, ref_cache = F.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
    g = rng.standard_normal(ref.shape).astype(dtype)
    expected = F.conv2d_relu_max_pool2d_backward(g, ref_cache)
    runs = []
    previous = handgrad.get_num_threads()
    try:
        for threads in (1, 2):
            handgrad.set_num_threads(threads)
            out, cache = K.conv2d_relu_max_pool2d_forward(x, weight, bias, *args)
            runs.append((out, *K.conv2d_relu_max_pool2d_backward(g, cache)))
    finally:
        handgrad.set_num_threads(previous)
    assert rel_err(runs[0][0], ref) < TOLERANCE[dtype]
    for got, want in zip(runs[0][1:], expected):
        assert rel_err(got, want) < TOLERANCE[dtype]
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)
