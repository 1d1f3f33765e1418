"""The compiled conv2d (handgrad.kernels.conv) against its reference (handgrad.functional.conv).

float64 to round-off, float32 within 1e-5 (relative to the largest entry): the kernel sums the
same products in another order. Padding, stride, rectangular kernels, odd sizes, batch 1, one
input channel, no bias, inference without a cache, and only the gradients asked for.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

import handgrad
from handgrad import functional as F
from handgrad import kernels, nn, optim
from handgrad.kernels import conv as K
from handgrad.models import build_model

CONV_CASES = [  # (N, C, H, W, O, kernel, stride, padding)
    (2, 1, 28, 28, 8, (3, 3), (1, 1), (1, 1)),
    (3, 4, 7, 7, 5, (3, 3), (1, 1), (1, 1)),
    (2, 3, 9, 8, 4, (3, 2), (2, 1), (1, 0)),
    (2, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),
    (1, 2, 6, 6, 3, (2, 2), (2, 2), (0, 0)),  # batch 1
    (2, 2, 5, 7, 3, (5, 3), (3, 2), (2, 1)),  # stride > 1 with padding: some windows half outside
    (2, 3, 6, 9, 4, (2, 3), (1, 1), (0, 1)),
    (2, 2, 5, 5, 3, (1, 1), (1, 1), (0, 0)),
    (1, 1, 3, 3, 2, (3, 3), (2, 2), (2, 2)),  # padding as large as the image: rows entirely outside
]
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def _case(case, dtype, seed=0):
    n, c, h, w, o, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c) + kernel).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    return x, weight, bias, stride, padding, rng


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_kernel_matches_reference(case, dtype):
    x, weight, bias, stride, padding, rng = _case(case, dtype)
    out, cache = K.conv2d_forward(x, weight, bias, stride, padding)
    ref, ref_cache = F.conv2d_forward(x, weight, bias, stride, padding)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOLERANCE[dtype], f"conv2d forward {case}: {rel_err(out, ref):.3g}"
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    for name, got, expected in zip(
        ("grad_input", "grad_weight", "grad_bias"),
        K.conv2d_backward(grad_output, cache),
        F.conv2d_backward(grad_output, ref_cache),
    ):
        assert got.dtype == dtype and got.shape == expected.shape, f"conv2d {name} {case}"
        assert rel_err(got, expected) < TOLERANCE[dtype], f"conv2d {name} {case}: {rel_err(got, expected):.3g}"


@pytest.mark.parametrize("case", CONV_CASES[:3], ids=str)
def test_conv2d_kernel_without_bias_and_only_what_is_asked(case):
    x, weight, _, stride, padding, rng = _case(case, np.float64)
    out, cache = K.conv2d_forward(x, weight, None, stride, padding)
    ref, ref_cache = F.conv2d_forward(x, weight, None, stride, padding)
    assert rel_err(out, ref) < 1e-12
    g = rng.standard_normal(out.shape)
    grads = K.conv2d_backward(g, cache, (False, True, True))
    assert grads[0] is None and grads[2] is None  # no bias, no grad_input asked for
    assert rel_err(grads[1], F.conv2d_backward(g, ref_cache)[1]) < 1e-12


@pytest.mark.parametrize("block_bytes", [1, 4000, 1 << 19])  # one sample per block, a few, all
@pytest.mark.parametrize("case", CONV_CASES + [(7, 3, 12, 12, 6, (3, 3), (1, 1), (1, 1))], ids=str)
def test_conv2d_kernel_without_cache_gives_the_same_output(monkeypatch, case, block_bytes):
    """keep_cache=False (inference) runs blocks of samples: the same y (BLAS may sum a product of
    another width in another order, so to float32 rounding), and no cache."""
    monkeypatch.setattr(K, "INFERENCE_BLOCK_BYTES", block_bytes)
    x, weight, bias, stride, padding, _ = _case(case, np.float32)
    out, cache = K.conv2d_forward(x, weight, bias, stride, padding, keep_cache=False)
    assert rel_err(out, K.conv2d_forward(x, weight, bias, stride, padding)[0]) < 1e-6
    assert cache is None and F.conv2d_forward(x, weight, bias, stride, padding, keep_cache=False)[1] is None


def test_conv2d_kernel_reads_a_strided_input():
    """A transposed (non-contiguous) input gives the same result as its contiguous copy."""
    x, weight, bias, stride, padding, _ = _case(CONV_CASES[1], np.float64)
    view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(
        K.conv2d_forward(view, weight, bias, stride, padding)[0], K.conv2d_forward(x, weight, bias, stride, padding)[0]
    )


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_fold_is_the_adjoint_of_unfold(case):
    """<unfold(x), c> == <x, fold(c)> for every x and c: fold adds back exactly what unfold read."""
    x, weight, _, stride, padding, rng = _case(case, np.float64, seed=2)
    sizes = K._sizes(x.shape, weight.shape, stride, padding)
    kh, kw, sh, sw, ph, pw, ho, wo = sizes
    cols = np.empty((x.shape[1] * kh * kw, x.shape[0] * ho * wo))
    K.unfold(x, *sizes, cols)
    other = rng.standard_normal(cols.shape)
    back = np.empty_like(x)
    K.fold(other, *sizes, back)
    lhs, rhs = np.vdot(cols, other), np.vdot(x, back)
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


def _train(name, steps):
    """A few SGD steps of a named model on fixed random batches; the parameters afterwards."""
    handgrad.manual_seed(0)
    model = build_model(name)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(6)
    for _ in range(steps):
        x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("name", ["tiny-cnn", "lenet5"])
def test_training_steps_with_kernels_match_the_references(name):
    with kernels.use_kernels():
        fast = _train(name, 5)
    with kernels.reference():
        ref = _train(name, 5)
    for key in ref:
        assert rel_err(fast[key], ref[key]) < 1e-4, f"{name} {key} after 5 steps: {rel_err(fast[key], ref[key]):.3g}"


@pytest.mark.parametrize("name", ["tiny-cnn", "lenet5"])
def test_no_grad_forward_matches_training_forward(name):
    """Under no_grad the layers keep no cache (no columns, no argmax) and give the same logits."""
    handgrad.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10)
    x = np.random.default_rng(5).standard_normal((9, 1, 28, 28)).astype(np.float32)
    with handgrad.no_grad():
        inferred = model(x)
    assert all(layer._cache is None for layer in model)
    assert rel_err(inferred, model(x)) < 1e-6
