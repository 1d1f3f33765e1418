"""Every layer against PyTorch (forward, dL/dx, dL/dparameter in float64) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import nn

torch = pytest.importorskip("torch")

from conftest import assert_close, check_against_torch, copy_weights_to_torch, to_numpy  # noqa: E402

# -- Linear ----------------------------------------------------------------------------------------
LINEAR_CASES = [
    pytest.param(4, 3, (5, 4), True, id="batch5-in4-out3"),
    pytest.param(6, 1, (1, 6), True, id="batch1-out1"),
    pytest.param(3, 5, (2, 4, 3), True, id="3d-input"),
    pytest.param(5, 2, (5,), True, id="1d-input"),
    pytest.param(4, 3, (3, 4), False, id="no-bias"),
]


@pytest.mark.parametrize("in_features, out_features, shape, bias", LINEAR_CASES)
def test_linear(in_features, out_features, shape, bias, rng):
    check_against_torch(
        nn.Linear(in_features, out_features, bias=bias),
        torch.nn.Linear(in_features, out_features, bias=bias),
        rng.standard_normal(shape),
        rng,
    )


# -- Conv2d ----------------------------------------------------------------------------------------
# (in_channels, out_channels, kernel_size, stride, padding, input shape, bias)
CONV_CASES = [
    pytest.param(1, 8, 3, 1, 0, (2, 1, 7, 7), True, id="c1-8_k3_s1_p0"),
    pytest.param(3, 4, 3, 2, 1, (2, 3, 9, 7), True, id="c3-4_k3_s2_p1_odd"),
    pytest.param(2, 5, (2, 3), 3, 2, (1, 2, 7, 9), True, id="k2x3_s3_p2_batch1"),
    pytest.param(8, 1, 1, 1, 0, (1, 8, 5, 5), True, id="c8-1_k1"),
    pytest.param(2, 3, (3, 1), (2, 1), (1, 0), (2, 2, 7, 5), True, id="k3x1_s2x1_p1x0"),
    pytest.param(2, 2, (1, 4), (1, 3), (0, 2), (2, 2, 5, 8), False, id="k1x4_s1x3_p0x2_nobias"),
    pytest.param(1, 2, 5, 3, 2, (1, 1, 5, 5), True, id="k5_s3_p2_kernel-equals-input"),
]


@pytest.mark.parametrize("cin, cout, kernel_size, stride, padding, shape, bias", CONV_CASES)
def test_conv2d(cin, cout, kernel_size, stride, padding, shape, bias, rng):
    check_against_torch(
        nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=bias),
        torch.nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=bias),
        rng.standard_normal(shape),
        rng,
    )


# -- Pooling ---------------------------------------------------------------------------------------
# (kernel_size, stride, padding, input shape)
POOL_CASES = [
    pytest.param(2, None, 0, (2, 3, 6, 6), id="k2_default-stride"),
    pytest.param(3, 1, 1, (1, 2, 5, 5), id="k3_s1_p1_batch1"),
    pytest.param(3, 2, 1, (2, 1, 7, 9), id="k3_s2_p1_odd"),
    pytest.param((2, 3), (1, 2), (1, 1), (1, 4, 5, 7), id="k2x3_s1x2_p1"),
    pytest.param(3, 3, 0, (2, 8, 7, 7), id="k3_s3_c8_drop-edge"),
    pytest.param((5, 3), 1, (2, 0), (1, 1, 4, 6), id="k5x3_s1_p2x0"),
]


@pytest.mark.parametrize("kernel_size, stride, padding, shape", POOL_CASES)
def test_max_pool2d(kernel_size, stride, padding, shape, rng):
    check_against_torch(
        nn.MaxPool2d(kernel_size, stride, padding),
        torch.nn.MaxPool2d(kernel_size, stride, padding),
        rng.standard_normal(shape),
        rng,
    )


@pytest.mark.parametrize("kernel_size, stride, padding, shape", POOL_CASES)
def test_avg_pool2d(kernel_size, stride, padding, shape, rng):
    check_against_torch(
        nn.AvgPool2d(kernel_size, stride, padding),
        torch.nn.AvgPool2d(kernel_size, stride, padding),
        rng.standard_normal(shape),
        rng,
    )


TIE_CASES = [
    pytest.param(3, 1, 0, id="k3_s1"),
    pytest.param(3, 2, 0, id="k3_s2"),
    pytest.param(3, 2, 1, id="k3_s2_p1"),
    pytest.param(2, 2, 0, id="k2_s2"),
    pytest.param((2, 3), 1, 1, id="k2x3_s1_p1"),
]


@pytest.mark.parametrize("kernel_size, stride, padding", TIE_CASES)
def test_max_pool2d_ties_go_to_first_maximum(kernel_size, stride, padding, rng):
    """Inputs in {0, 1} after ReLU: most windows hold several maxima; each window's gradient must go
    to the first one in row-major order, exactly as PyTorch routes it."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(kernel_size, stride, padding)).double()
    torch_model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(kernel_size, stride, padding)).double()
    x = rng.integers(-1, 2, (2, 3, 7, 8)).astype(np.float64)
    out = model(x)
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = torch_model(x_t)
    np.testing.assert_array_equal(out, to_numpy(out_t))
    grad_output = rng.integers(1, 5, out.shape).astype(np.float64)  # integers: sums are exact
    out_t.backward(torch.from_numpy(grad_output))
    np.testing.assert_array_equal(model.backward(grad_output), to_numpy(x_t.grad))


def test_max_pool2d_all_equal_window_sends_everything_to_its_first_element():
    pool = nn.MaxPool2d(2).double()
    pool(np.ones((1, 1, 2, 2)))
    grad = pool.backward(np.array([[[[5.0]]]]))
    np.testing.assert_array_equal(grad, [[[[5.0, 0.0], [0.0, 0.0]]]])


# -- Flatten ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start_dim, end_dim, shape",
    [
        pytest.param(1, -1, (2, 3, 4, 5), id="default"),
        pytest.param(0, -1, (2, 3, 4), id="all"),
        pytest.param(1, 2, (2, 3, 4, 5), id="middle"),
        pytest.param(2, -1, (1, 3, 4, 5), id="spatial_batch1"),
    ],
)
def test_flatten(start_dim, end_dim, shape, rng):
    check_against_torch(
        nn.Flatten(start_dim, end_dim), torch.nn.Flatten(start_dim, end_dim), rng.standard_normal(shape), rng
    )


# -- Dropout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_train_zeroes_and_scales_by_one_over_keep(p, rng):
    x = rng.uniform(1, 2, (50, 40))  # never 0, so a zero in the output means dropped
    layer = nn.Dropout(p).double()
    out = layer(x)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
    assert abs(1 - kept.mean() - p) < 0.05  # 2000 draws: the drop rate is near p
    grad_output = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(grad_output), np.where(kept, grad_output / (1 - p), 0), rtol=1e-12)


def test_dropout_eval_is_identity_with_identity_gradient(rng):
    layer = nn.Dropout(0.5).eval()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), x)
    grad_output = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(grad_output), grad_output)
    assert torch.equal(torch.nn.Dropout(0.5).eval()(torch.from_numpy(x)), torch.from_numpy(layer(x)))


def test_dropout_p0_keeps_everything_and_p1_drops_everything(rng):
    x = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    zero = nn.Dropout(1.0)
    np.testing.assert_array_equal(zero(x), np.zeros_like(x))
    np.testing.assert_array_equal(zero.backward(np.ones_like(x)), np.zeros_like(x))
    np.testing.assert_array_equal(to_numpy(torch.nn.Dropout(1.0)(torch.from_numpy(x))), zero(x))


def test_dropout_is_reproducible_with_manual_seed(rng):
    x = rng.standard_normal((8, 8)).astype(np.float32)
    handgrad.manual_seed(7)
    first = nn.Dropout(0.5)(x)
    second_draw = nn.Dropout(0.5)(x)
    handgrad.manual_seed(7)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x), first)
    assert not np.array_equal(first, second_draw)


def test_dropout_keeps_float32(rng):
    x = rng.standard_normal((4, 4)).astype(np.float32)
    layer = nn.Dropout(0.3)
    assert layer(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_gradcheck(p, rng):
    report = handgrad.gradcheck(nn.Dropout(p), rng.standard_normal((3, 7)))
    assert report.passed, str(report)


def test_dropout_in_model_gradcheck(rng):
    """gradcheck reseeds before every evaluation, so the mask is the same each time."""
    model = nn.Sequential(nn.Linear(5, 6), nn.Dropout(0.5), nn.Linear(6, 2))
    report = handgrad.gradcheck(model, rng.standard_normal((4, 5)))
    assert report.passed, str(report)


# -- BatchNorm -------------------------------------------------------------------------------------
BN_CASES = [
    pytest.param(nn.BatchNorm1d, torch.nn.BatchNorm1d, 3, (6, 3), {}, id="1d-2d-input"),
    pytest.param(nn.BatchNorm1d, torch.nn.BatchNorm1d, 4, (3, 4, 5), {}, id="1d-3d-input"),
    pytest.param(nn.BatchNorm1d, torch.nn.BatchNorm1d, 2, (2, 2), {}, id="1d-batch2"),
    pytest.param(nn.BatchNorm2d, torch.nn.BatchNorm2d, 3, (2, 3, 5, 7), {}, id="2d"),
    pytest.param(nn.BatchNorm2d, torch.nn.BatchNorm2d, 1, (1, 1, 3, 5), {}, id="2d-batch1-c1"),
    pytest.param(nn.BatchNorm2d, torch.nn.BatchNorm2d, 8, (2, 8, 3, 3), {"affine": False}, id="2d-c8-no-affine"),
    pytest.param(nn.BatchNorm2d, torch.nn.BatchNorm2d, 2, (3, 2, 3, 3), {"momentum": None}, id="2d-momentum-None"),
    pytest.param(
        nn.BatchNorm1d, torch.nn.BatchNorm1d, 3, (4, 3), {"track_running_stats": False}, id="1d-no-running-stats"
    ),
]


def _randomise(model, torch_model, rng):
    """Weights, biases and running statistics far from their defaults, the same in both models."""
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
        elif value.dtype.kind == "f":
            state[key] = rng.standard_normal(value.shape)
    model.load_state_dict(state)
    copy_weights_to_torch(model, torch_model)


@pytest.mark.parametrize("cls, torch_cls, features, shape, kwargs", BN_CASES)
def test_batch_norm_train(cls, torch_cls, features, shape, kwargs, rng):
    model, torch_model = cls(features, **kwargs).double(), torch_cls(features, **kwargs).double()
    _randomise(model, torch_model, rng)
    check_against_torch(model, torch_model, rng.standard_normal(shape) * 3 + 1, rng)


@pytest.mark.parametrize("cls, torch_cls, features, shape, kwargs", BN_CASES)
def test_batch_norm_eval(cls, torch_cls, features, shape, kwargs, rng):
    model, torch_model = cls(features, **kwargs).double().eval(), torch_cls(features, **kwargs).double().eval()
    _randomise(model, torch_model, rng)
    check_against_torch(model, torch_model, rng.standard_normal(shape) * 3 + 1, rng)


@pytest.mark.parametrize("cls, torch_cls, features, shape, kwargs", BN_CASES[:-1])
def test_batch_norm_running_statistics_follow_torch(cls, torch_cls, features, shape, kwargs, rng):
    model, torch_model = cls(features, **kwargs).double(), torch_cls(features, **kwargs).double()
    for _ in range(4):
        x = rng.standard_normal(shape) * 2 + 0.5
        model(x)
        torch_model(torch.from_numpy(x))
    torch_state = torch_model.state_dict()
    state = model.state_dict()
    assert list(state) == list(torch_state)
    for key, value in state.items():
        assert_close(value, to_numpy(torch_state[key]), key, tol=1e-12)
    assert int(state["num_batches_tracked"]) == 4


def test_batch_norm_float32_running_statistics_stay_float32(rng):
    layer = nn.BatchNorm2d(3)
    out = layer(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    assert out.dtype == np.float32
    assert layer.running_mean.dtype == layer.running_var.dtype == np.float32
    assert layer.num_batches_tracked.dtype == np.int64
