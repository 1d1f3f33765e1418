"""Softmax and LogSoftmax: torch's ``dtype=`` and empty inputs, in the functional pair, the nn layer
and the bridge, against torch autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import functional as F
from handgrad import nn
from handgrad.errors import DTypeError

torch = pytest.importorskip("torch")

import handgrad.torch as ht  # noqa: E402

OPS = ("softmax", "log_softmax")
LAYERS = {"softmax": nn.Softmax, "log_softmax": nn.LogSoftmax}


def _torch_op(name, x, dim, dtype=None):
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = getattr(torch.nn.functional, name)(t, dim=dim, dtype=dtype)
    return t, out


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape, dim", [((2, 0), 1), ((2, 0), 0), ((0, 3), 1), ((0,), 0), ((2, 0, 4), -1)])
def test_empty_input_gives_an_empty_output_and_gradient(name, shape, dim):
    x = np.zeros(shape)
    forward, backward = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")
    out, cache = forward(x, dim=dim)
    t, expected = _torch_op(name, x, dim)
    assert out.shape == tuple(expected.shape) and out.dtype == np.float64
    grad = backward(np.zeros(shape), cache)
    assert grad.shape == shape and grad.dtype == np.float64
    layer = LAYERS[name](dim=dim)
    assert layer(x).shape == shape and layer.backward(np.zeros(shape)).shape == shape
    bridged = getattr(ht, name)(torch.zeros(shape, dtype=torch.float64, requires_grad=True), dim=dim)
    assert tuple(bridged.shape) == shape


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize(
    "source, dtype, dim",
    [(np.float32, np.float64, 1), (np.float64, np.float32, -1), (np.float64, np.float64, 0), (np.float32, None, 1)],
)
def test_dtype_casts_first_and_the_gradient_comes_back_in_the_inputs_dtype(name, source, dtype, dim):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 2)) * 3).astype(source)
    upstream = rng.standard_normal((3, 4, 2))
    torch_dtype = None if dtype is None else getattr(torch, np.dtype(dtype).name)
    t, expected = _torch_op(name, x, dim, torch_dtype)
    expected.backward(torch.from_numpy(upstream).to(expected.dtype))
    out, cache = getattr(F, f"{name}_forward")(x, dim=dim, dtype=dtype)
    grad = getattr(F, f"{name}_backward")(upstream.astype(out.dtype), cache)
    tolerance = 1e-12 if out.dtype == np.float64 and source == np.float64 else 2e-6
    assert out.dtype == expected.detach().numpy().dtype and grad.dtype == source
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=tolerance, atol=tolerance)
    layer = LAYERS[name](dim=dim, dtype=dtype)
    np.testing.assert_array_equal(layer(x), out)
    np.testing.assert_array_equal(layer.backward(upstream.astype(out.dtype)), grad)
    mine = torch.from_numpy(x.copy()).requires_grad_(True)
    bridged = getattr(ht, name)(mine, dim=dim, dtype=torch_dtype)
    bridged.backward(torch.from_numpy(upstream).to(bridged.dtype))
    assert bridged.dtype == expected.dtype and mine.grad.dtype == t.grad.dtype
    np.testing.assert_allclose(bridged.detach().numpy(), expected.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(mine.grad.numpy(), t.grad.numpy(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", OPS)
def test_bridge_takes_torchs_signature_and_implicit_dim(name):
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 4)))
    with pytest.warns(UserWarning, match="implicit dimension"):
        ours = getattr(ht, name)(x, None, 3, None)
    with pytest.warns(UserWarning):
        expected = getattr(torch.nn.functional, name)(x)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12)
    twin = getattr(ht, LAYERS[name].__name__)(dim=1)
    np.testing.assert_allclose(twin(x).numpy(), getattr(torch.nn.functional, name)(x, dim=1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int64, "int32", "complex128", "nonsense"])
def test_a_dtype_that_is_not_floating_is_refused_naming_it(dtype):
    with pytest.raises(DTypeError, match="expected dtype to be a floating dtype"):
        nn.Softmax(dim=1, dtype=dtype)


def test_a_layers_dtype_survives_its_architecture():
    from handgrad import models

    model = nn.Sequential(nn.LogSoftmax(dim=1, dtype="float64"))
    rebuilt = models.from_architecture(models.architecture(model))
    assert repr(rebuilt) == repr(model)
    assert models.architecture(nn.Sequential(nn.Softmax(dim=1))) == [{"type": "Softmax", "dim": 1}]
