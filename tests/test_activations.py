"""Activations against PyTorch and finite differences, and the two ways to define one's own."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import nn

torch = pytest.importorskip("torch")

from conftest import assert_close, check_against_torch, to_numpy  # noqa: E402


def _swish(x):
    return x / (1 + np.exp(-x))


def _swish_derivative(x):
    s = 1 / (1 + np.exp(-x))
    return s * (1 + x * (1 - s))


# Defined once, at import: both register themselves by name.
UserSwish = nn.define_activation("UserSwish", _swish, _swish_derivative)


class UserSoftplus(nn.ElementwiseActivation):
    """y = log(1 + exp(x)), dy/dx = sigmoid(x)."""

    @staticmethod
    def function(x):
        return np.logaddexp(0, x)

    @staticmethod
    def derivative(x):
        return 1 / (1 + np.exp(-x))


ACTIVATION_CASES = [
    pytest.param(nn.ReLU(), torch.nn.ReLU(), (4, 7), id="ReLU"),
    pytest.param(nn.LeakyReLU(), torch.nn.LeakyReLU(), (4, 7), id="LeakyReLU-default"),
    pytest.param(nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2), (2, 3, 4, 5), id="LeakyReLU-0.2-4d"),
    pytest.param(nn.Sigmoid(), torch.nn.Sigmoid(), (3, 5), id="Sigmoid"),
    pytest.param(nn.Tanh(), torch.nn.Tanh(), (1, 2, 3, 3), id="Tanh-4d-batch1"),
    pytest.param(nn.Softmax(dim=1), torch.nn.Softmax(dim=1), (3, 6), id="Softmax-dim1"),
    pytest.param(nn.Softmax(dim=0), torch.nn.Softmax(dim=0), (4, 5), id="Softmax-dim0"),
    pytest.param(nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1), (2, 3, 4), id="Softmax-dim-1-3d"),
    pytest.param(nn.Softmax(dim=1), torch.nn.Softmax(dim=1), (2, 3, 4), id="Softmax-dim1-3d"),
    pytest.param(nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1), (3, 6), id="LogSoftmax-dim1"),
    pytest.param(nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0), (4, 5), id="LogSoftmax-dim0"),
    pytest.param(nn.LogSoftmax(dim=2), torch.nn.LogSoftmax(dim=2), (2, 3, 4), id="LogSoftmax-dim2-3d"),
    pytest.param(UserSwish(), torch.nn.SiLU(), (3, 5), id="define_activation-swish"),
    pytest.param(UserSoftplus(), torch.nn.Softplus(), (2, 3, 4), id="subclass-softplus"),
]


@pytest.mark.parametrize("layer, torch_layer, shape", ACTIVATION_CASES)
def test_activation_matches_torch(layer, torch_layer, shape, rng):
    check_against_torch(layer, torch_layer, rng.standard_normal(shape) * 2, rng)


@pytest.mark.parametrize(
    "layer, torch_layer",
    [
        pytest.param(nn.Sigmoid(), torch.nn.Sigmoid(), id="Sigmoid"),
        pytest.param(nn.Tanh(), torch.nn.Tanh(), id="Tanh"),
        pytest.param(nn.Softmax(dim=1), torch.nn.Softmax(dim=1), id="Softmax"),
        pytest.param(nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1), id="LogSoftmax"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_is_stable_for_huge_inputs(layer, torch_layer, dtype, rng):
    x = np.array([[1e4, -1e4, 0.0, 50.0], [-800.0, 800.0, -1e4, 3.0]], dtype=dtype)
    out = layer(x)
    assert out.dtype == dtype
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, to_numpy(torch_layer(torch.from_numpy(x))), rtol=1e-6, atol=1e-30)
    grad = layer.backward(np.ones_like(x))
    assert grad.dtype == dtype and np.isfinite(grad).all()


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = np.array([-1.0, 0.0, 1.0])
    relu = nn.ReLU()
    relu(x)
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    torch.relu(x_t).backward(torch.ones(3, dtype=torch.float64))
    np.testing.assert_array_equal(relu.backward(np.ones(3)), to_numpy(x_t.grad))


@pytest.mark.parametrize(
    "layer",
    [
        nn.ReLU(),
        nn.LeakyReLU(0.1),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.Softmax(1),
        nn.LogSoftmax(1),
        UserSwish(),
        UserSoftplus(),
    ],
    ids=repr,
)
def test_activation_keeps_float32(layer, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert layer(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


# -- user-defined activations ----------------------------------------------------------------------
def test_define_activation_is_registered_by_name():
    assert nn.get_activation("UserSwish") is UserSwish
    assert nn.get_activation("userswish") is UserSwish
    assert nn.get_activation("USERSOFTPLUS") is UserSoftplus
    assert nn.get_activation("relu") is nn.ReLU
    assert nn.get_activation("leaky-relu") is nn.LeakyReLU


def test_get_activation_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown activation 'nope'.*relu"):
        nn.get_activation("nope")


def test_wrong_derivative_is_refused_with_the_points():
    with pytest.raises(nn.ActivationDerivativeError) as info:
        nn.define_activation("BadSquare", lambda x: x * x, lambda x: x)  # should be 2x
    message = str(info.value)
    assert message.startswith("BadSquare: ")
    assert "disagrees with finite differences" in message
    assert "of 81 points" in message
    assert "x=-3.9877: derivative gave -3.9877, finite differences -7.9754" in message
    assert "more)" in message
    with pytest.raises(KeyError):
        nn.ACTIVATIONS["badsquare"]  # refused classes are not registered


def test_wrong_derivative_on_a_subclass_is_refused():
    with pytest.raises(nn.ActivationDerivativeError, match="BadCube: .* at 81 of 81 points"):

        class BadCube(nn.ElementwiseActivation):
            function = staticmethod(lambda x: x**3)
            derivative = staticmethod(lambda x: 3 * x**2 + 1)


def test_wrong_derivative_at_a_few_points_lists_only_those():
    def derivative(x):
        return np.where(x > 3.5, 0.0, np.cos(x))

    with pytest.raises(nn.ActivationDerivativeError, match=r"at 6 of 81 points: x=3\.5123") as info:
        nn.define_activation("BadSine", np.sin, derivative)
    assert "more)" in str(info.value)  # six bad points, five shown


def test_subclass_without_function_is_a_type_error():
    with pytest.raises(TypeError, match="must define static methods"):

        class Incomplete(nn.ElementwiseActivation):
            function = staticmethod(np.sin)


def test_user_activation_in_sequential_matches_torch(rng):
    model = nn.Sequential(nn.Linear(4, 6), UserSwish(), nn.Linear(6, 3), UserSoftplus())
    torch_model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.SiLU(), torch.nn.Linear(6, 3), torch.nn.Softplus()
    )
    check_against_torch(model, torch_model, rng.standard_normal((5, 4)), rng)


def test_user_activation_found_by_name_builds_a_working_layer(rng):
    layer = nn.get_activation("userswish")()
    x = rng.standard_normal((2, 3))
    assert_close(layer(x), _swish(x), "swish")
    assert handgrad.gradcheck(layer, x).passed


def test_check_derivative_accepts_a_correct_one():
    nn.check_derivative("sin", np.sin, np.cos)  # no error
