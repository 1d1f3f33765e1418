"""Module behaviour: state_dict parity with torch.nn, dtypes, gradient accumulation, modes, init."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, check_against_torch, copy_weights_to_torch, to_numpy

import handgrad
from handgrad import nn
from handgrad.errors import BackwardBeforeForwardError, DTypeError, StateDictError


def small_cnn():
    """(N, 1, 8, 8) -> (N, 4): every kind of state the library has (weights, biases, buffers)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 4),
    )


def small_cnn_torch():
    torch = pytest.importorskip("torch")
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(48, 6),
        torch.nn.BatchNorm1d(6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 4),
    )


def _trained_a_little(model, rng, steps=2):
    """Run a few training forwards so the BatchNorm buffers move away from their defaults."""
    for _ in range(steps):
        model(rng.standard_normal((4, 1, 8, 8)).astype(model.dtype))
    return model


# -- state_dict parity with torch ------------------------------------------------------------------
def test_state_dict_keys_shapes_and_order_match_torch():
    torch_state = small_cnn_torch().state_dict()
    state = small_cnn().state_dict()
    assert list(state) == list(torch_state)
    for key, value in state.items():
        assert value.shape == tuple(torch_state[key].shape), key
    assert state["1.num_batches_tracked"].dtype == np.int64
    assert state["0.weight"].dtype == np.float32


def test_state_dict_handgrad_to_torch_gives_identical_outputs(rng):
    torch = pytest.importorskip("torch")
    model, torch_model = _trained_a_little(small_cnn().double(), rng), small_cnn_torch().double()
    copy_weights_to_torch(model, torch_model)
    x = rng.standard_normal((3, 1, 8, 8))
    for mode in ("train", "eval"):
        getattr(model, mode)(), getattr(torch_model, mode)()
        assert_close(model(x), to_numpy(torch_model(torch.from_numpy(x))), f"output ({mode})")


def test_state_dict_torch_to_handgrad_gives_identical_outputs(rng):
    torch = pytest.importorskip("torch")
    torch_model = small_cnn_torch()
    torch_model(torch.randn(4, 1, 8, 8))  # move the running statistics
    model = small_cnn()
    model.load_state_dict(torch_model.state_dict())  # torch tensors, no renaming
    for key, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value.numpy())
    model.eval(), torch_model.eval()
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model(x), to_numpy(torch_model(torch.from_numpy(x))), rtol=1e-4, atol=1e-5)


def test_state_dict_returns_copies(rng):
    model = nn.Linear(3, 2)
    state = model.state_dict()
    state["weight"][...] = 0
    assert np.abs(model.weight.data).sum() > 0


def test_load_state_dict_casts_into_the_module_dtype(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    state = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in model.state_dict().items()}
    state["0.weight"] = rng.standard_normal((2, 3))
    model.load_state_dict(state)
    assert model[0].weight.dtype == np.float32
    assert model[1].running_mean.dtype == np.float32
    np.testing.assert_array_equal(model[0].weight.data, state["0.weight"].astype(np.float32))
    state["0.weight"][...] = 0  # the module holds a copy
    assert np.abs(model[0].weight.data).sum() > 0


@pytest.mark.parametrize(
    "change, expected",
    [
        pytest.param(lambda s: s.pop("0.bias"), "missing keys: 0.bias", id="missing"),
        pytest.param(lambda s: s.update(extra=np.zeros(1)), "unexpected keys: extra", id="unexpected"),
        pytest.param(
            lambda s: s.update({"1.weight": np.zeros(5)}),
            "mis-shaped: 1.weight: expected (2,), got (5,)",
            id="mis-shaped",
        ),
    ],
)
def test_failed_load_lists_the_keys_and_leaves_the_model_unchanged(change, expected, rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = model.state_dict()
    state = {k: rng.standard_normal(v.shape) if v.dtype.kind == "f" else v for k, v in before.items()}
    change(state)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    assert expected in str(info.value)
    assert "Sequential" in str(info.value)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_failed_load_lists_every_problem_at_once():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(StateDictError) as info:
        model.load_state_dict({"0.weight": np.zeros((3, 3)), "0.extra": np.zeros(2)})
    message = str(info.value)
    assert "missing keys: 0.bias" in message
    assert "unexpected keys: 0.extra" in message
    assert "0.weight: expected (2, 3), got (3, 3)" in message


def test_load_state_dict_not_strict_returns_missing_and_unexpected(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    bias_before = model[0].bias.data.copy()
    weight = rng.standard_normal((2, 3))
    result = model.load_state_dict({"0.weight": weight, "head.weight": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert result.unexpected_keys == ["head.weight"]
    np.testing.assert_array_equal(model[0].weight.data, weight.astype(np.float32))
    np.testing.assert_array_equal(model[0].bias.data, bias_before)


def test_load_state_dict_not_strict_still_refuses_mis_shaped():
    model = nn.Linear(3, 2)
    with pytest.raises(StateDictError, match=r"weight: expected \(2, 3\), got \(3, 2\)"):
        model.load_state_dict({"weight": np.zeros((3, 2))}, strict=False)


# -- dtypes ----------------------------------------------------------------------------------------
def test_float32_by_default_and_through_a_training_step_of_a_cnn(rng):
    model = small_cnn()
    assert all(p.dtype == np.float32 for p in model.parameters())
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    out = model(x)
    assert out.dtype == np.float32
    loss = nn.CrossEntropyLoss()
    loss(out, rng.integers(0, 4, 4))
    grad_input = model.backward(loss.backward())
    assert grad_input.dtype == np.float32
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name
    for name, b in model.named_buffers():
        assert b.dtype == (np.int64 if name.endswith("num_batches_tracked") else np.float32), name


@pytest.mark.parametrize(
    "layer",
    [nn.Linear(4, 2), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(4), nn.BatchNorm1d(4), nn.BatchNorm1d(4, affine=False)],
    ids=lambda layer: type(layer).__name__,
)
def test_float64_input_to_a_float32_layer_raises_dtype_error(layer):
    x = np.zeros((2, 4, 3, 3) if isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)) else (2, 4))
    with pytest.raises(DTypeError, match="expected input of dtype float32 .*got float64"):
        layer(x)


@pytest.mark.parametrize(
    "convert, dtype",
    [
        pytest.param(lambda m: m.double(), np.float64, id="double"),
        pytest.param(lambda m: m.double().float(), np.float32, id="float"),
        pytest.param(lambda m: m.to(np.float64), np.float64, id="to"),
    ],
)
def test_dtype_conversion_is_in_place_and_returns_self(convert, dtype, rng):
    model = _trained_a_little(small_cnn(), rng)
    before = model.state_dict()
    assert convert(model) is model
    assert model.dtype == dtype
    for key, value in model.state_dict().items():
        expected = np.int64 if key.endswith("num_batches_tracked") else dtype
        assert value.dtype == expected, key
        np.testing.assert_allclose(value, before[key], rtol=1e-7)
    assert model(rng.standard_normal((2, 1, 8, 8)).astype(dtype)).dtype == dtype


def test_to_refuses_a_non_floating_dtype():
    with pytest.raises(TypeError, match="floating dtype"):
        nn.Linear(2, 2).to(np.int32)


# -- gradients -------------------------------------------------------------------------------------
def test_gradients_accumulate_until_zero_grad(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    model(x)
    model.backward(g)
    first = {name: p.grad.copy() for name, p in model.named_parameters()}
    model(x)
    model.backward(g)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[name], rtol=1e-12)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model(x)
    model.backward(g)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, first[name], rtol=1e-12)


def test_zero_grad_set_to_none_false_fills_zeros(rng):
    layer = nn.Linear(2, 2)
    layer(np.ones((1, 2), np.float32))
    layer.backward(np.ones((1, 2), np.float32))
    layer.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(layer.weight.grad, np.zeros((2, 2)))


def test_gradient_does_not_alias_the_callers_arrays(rng):
    """A second backward adds into .grad; that must never write into an array the caller holds."""
    layer = nn.BatchNorm1d(3).double()
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-12)


def test_accumulating_never_writes_into_the_callers_gradient():
    class AddBias(nn.Module):
        """y = x + b for x of shape (3,): dL/db is grad_output itself."""

        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(np.zeros(3))

        def forward(self, x):
            self._save_for_backward(None, x.shape)
            return x + self.b.data

        def backward(self, grad_output, input_grad=True):
            self._saved(grad_output)
            self.b.accumulate_grad(grad_output)
            return grad_output

    layer, grad_output = AddBias(), np.ones(3)
    for _ in range(2):
        layer(np.zeros(3))
        layer.backward(grad_output)
    np.testing.assert_array_equal(grad_output, np.ones(3))
    np.testing.assert_array_equal(layer.b.grad, 2 * np.ones(3))


def test_input_grad_false_gives_identical_parameter_gradients(rng):
    model = small_cnn().double()
    x = rng.standard_normal((3, 1, 8, 8))
    g = rng.standard_normal((3, 4))
    model(x)
    grad_input = model.backward(g, input_grad=True)
    assert grad_input.shape == x.shape
    with_input = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    model(x)
    assert model.backward(g, input_grad=False) is None
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, with_input[name], err_msg=name)


def test_sequential_skips_input_grad_for_the_first_parameter_layer(rng):
    calls = []

    class Spy(nn.Linear):
        def backward(self, grad_output, input_grad=True):
            calls.append(input_grad)
            return super().backward(grad_output, input_grad)

    model = nn.Sequential(Spy(3, 3), nn.ReLU(), Spy(3, 2))
    model(rng.standard_normal((2, 3)).astype(np.float32))
    assert model.backward(np.ones((2, 2), np.float32), input_grad=False) is None
    assert calls == [True, False]


def test_sequential_calls_user_layers_without_the_input_grad_flag(rng):
    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

        def backward(self, grad_output):
            return 2 * grad_output

    model = nn.Sequential(nn.Linear(2, 2), Double()).double()
    model(rng.standard_normal((1, 2)))
    model.backward(np.ones((1, 2)))
    assert model[0].weight.grad is not None


# -- modes, structure ------------------------------------------------------------------------------
def test_train_and_eval_propagate_and_return_self():
    model = small_cnn()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())


def test_children_and_named_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2, bias=False)))
    assert [type(c).__name__ for c in model.children()] == ["Linear", "ReLU", "Sequential"]
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.0.weight"]
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2


def test_named_parameters_match_torch():
    names = [name for name, _ in small_cnn().named_parameters()]
    assert names == [name for name, _ in small_cnn_torch().named_parameters()]


def test_repr_matches_torch_for_conv_and_linear():
    assert repr(nn.Conv2d(1, 8, 3)) == "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1))"
    assert (
        repr(nn.Conv2d(1, 8, 3, padding=1, bias=False))
        == "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"
    )
    assert repr(nn.Linear(784, 10)) == "Linear(in_features=784, out_features=10, bias=True)"


# -- init ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, fan_in",
    [
        pytest.param(nn.Linear(100, 80), 100, id="Linear"),
        pytest.param(nn.Conv2d(6, 40, (3, 5)), 90, id="Conv2d"),
    ],
)
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(layer, fan_in):
    bound = 1 / math.sqrt(fan_in)
    weight = layer.weight.data
    assert np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.95 * bound
    assert abs(weight.mean()) < 0.05 * bound
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.05 * bound  # std of U(-b, b)
    assert np.abs(layer.bias.data).max() <= bound
    assert weight.dtype == np.float32


@pytest.mark.parametrize(
    "fn, kwargs, kind, spread",
    [
        pytest.param(nn.init.kaiming_uniform_, {}, "uniform", math.sqrt(2) * math.sqrt(3 / 200), id="kaiming_uniform"),
        pytest.param(
            nn.init.kaiming_uniform_,
            {"nonlinearity": "relu", "mode": "fan_out"},
            "uniform",
            math.sqrt(2) * math.sqrt(3 / 300),
            id="kaiming_uniform-fan_out",
        ),
        pytest.param(nn.init.kaiming_normal_, {}, "normal", math.sqrt(2) / math.sqrt(200), id="kaiming_normal"),
        pytest.param(
            nn.init.kaiming_normal_,
            {"a": 0.2, "nonlinearity": "leaky_relu"},
            "normal",
            math.sqrt(2 / 1.04) / math.sqrt(200),
            id="kaiming_normal-a0.2",
        ),
        pytest.param(nn.init.xavier_uniform_, {}, "uniform", math.sqrt(6 / 500), id="xavier_uniform"),
        pytest.param(
            nn.init.xavier_uniform_, {"gain": 2.0}, "uniform", 2 * math.sqrt(6 / 500), id="xavier_uniform-gain2"
        ),
        pytest.param(nn.init.xavier_normal_, {}, "normal", math.sqrt(2 / 500), id="xavier_normal"),
    ],
)
def test_init_functions_bounds_and_std(fn, kwargs, kind, spread):
    """Weights (300, 200): fan_in 200, fan_out 300. ``spread``: the bound (uniform) or std (normal)."""
    handgrad.manual_seed(0)
    weight = nn.Parameter(np.zeros((300, 200), np.float32))
    assert fn(weight, **kwargs) is weight
    values = weight.data
    assert values.dtype == np.float32
    if kind == "uniform":
        assert np.abs(values).max() <= spread * (1 + 1e-6)
        assert np.abs(values).max() > 0.99 * spread
        assert abs(values.std() - spread / math.sqrt(3)) < 0.02 * spread
    else:
        assert abs(values.std() - spread) < 0.02 * spread
    assert abs(values.mean()) < 0.02 * spread


def test_init_matches_torch_statistics_for_a_conv():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    w_t = torch.empty(64, 16, 3, 3)
    torch.nn.init.kaiming_normal_(w_t, nonlinearity="relu")
    w = nn.init.kaiming_normal_(np.zeros((64, 16, 3, 3), np.float32), nonlinearity="relu")
    assert abs(w.std() - w_t.std().item()) < 0.03 * w_t.std().item()


def test_zeros_ones_constant():
    p = nn.Parameter(np.ones((2, 3), np.float32))
    nn.init.zeros_(p)
    np.testing.assert_array_equal(p.data, 0)
    nn.init.constant_(p, 0.25)
    np.testing.assert_array_equal(p.data, 0.25)
    nn.init.ones_(p)
    np.testing.assert_array_equal(p.data, 1)
    assert p.dtype == np.float32


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
    ]:
        assert math.isclose(nn.init.calculate_gain(name, param), torch.nn.init.calculate_gain(name, param)), name


def test_manual_seed_makes_construction_reproducible():
    handgrad.manual_seed(0)
    first = small_cnn().state_dict()
    other = small_cnn().state_dict()
    handgrad.manual_seed(0)
    again = small_cnn().state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["0.weight"], other["0.weight"])


# -- no_grad ---------------------------------------------------------------------------------------
def test_no_grad_stores_no_cache_and_backward_then_raises(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with handgrad.no_grad():
        assert not handgrad.is_grad_enabled()
        out = model(x)
    assert handgrad.is_grad_enabled()
    assert all(m._cache is None for m in model.modules())
    with pytest.raises(BackwardBeforeForwardError, match=r"ReLU\(\): backward\(\) called before forward\(\)"):
        model.backward(np.ones_like(out))
    model(x)
    model.backward(np.ones_like(out))  # works again once the forward runs with gradients on


def test_no_grad_as_decorator_restores_the_mode():
    @handgrad.no_grad()
    def infer():
        return handgrad.is_grad_enabled()

    assert infer() is False
    assert handgrad.is_grad_enabled()
    with handgrad.no_grad():
        with handgrad.enable_grad():
            assert handgrad.is_grad_enabled()
        assert not handgrad.is_grad_enabled()


def test_sequential_slice_keeps_torch_keys():
    pytest.importorskip("torch")
    model = small_cnn()
    assert list(model[5:].state_dict()) == list(small_cnn_torch()[5:].state_dict())
    assert model[5:][0] is model[5]


def test_replacing_a_layer_or_parameter_keeps_its_place_like_torch(rng):
    torch = pytest.importorskip("torch")
    model, torch_model = small_cnn(), small_cnn_torch()
    model[5].weight = nn.Parameter(np.zeros((6, 48), np.float32))
    torch_model[5].weight = torch.nn.Parameter(torch.zeros(6, 48))
    setattr(model, "0", nn.Conv2d(1, 3, 3, padding=1, bias=False))
    setattr(torch_model, "0", torch.nn.Conv2d(1, 3, 3, padding=1, bias=False))
    assert list(model.state_dict()) == list(torch_model.state_dict())
    assert type(model[0]).__name__ == "Conv2d"  # still first in the forward order
    assert model(rng.standard_normal((2, 1, 8, 8)).astype(np.float32)).shape == (2, 4)


def test_tied_parameter_is_listed_once_and_gets_both_gradients(rng):
    torch = pytest.importorskip("torch")
    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second)
    t_first, t_second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    t_second.weight = t_first.weight
    torch_model = torch.nn.Sequential(t_first, torch.nn.Tanh(), t_second)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in torch_model.named_parameters()]
    assert model.num_parameters() == sum(p.numel() for p in torch_model.parameters())
    assert list(model.state_dict()) == list(torch_model.state_dict())
    check_against_torch(model, torch_model, rng.standard_normal((4, 3)), rng)


def test_float32_training_step_matches_torch_float32(rng):
    torch = pytest.importorskip("torch")
    model, torch_model = small_cnn(), small_cnn_torch()
    copy_weights_to_torch(model, torch_model)
    x, target = rng.standard_normal((5, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, 5)
    loss = nn.CrossEntropyLoss()
    value = loss(model(x), target)
    grad_input = model.backward(loss.backward())
    x_t = torch.from_numpy(x).requires_grad_(True)
    value_t = torch.nn.CrossEntropyLoss()(torch_model(x_t), torch.from_numpy(target))
    value_t.backward()
    assert abs(value - value_t.item()) < 1e-5
    assert_close(grad_input, to_numpy(x_t.grad), "grad_input", tol=1e-4)
    torch_params = dict(torch_model.named_parameters())
    for name, p in model.named_parameters():
        if name in ("0.bias", "5.bias"):  # feed BatchNorm: true gradient 0, both sides float32 noise
            continue
        assert_close(p.grad, to_numpy(torch_params[name].grad), name, tol=1e-4)
    for key, value in torch_model.state_dict().items():
        assert_close(model.state_dict()[key], value.numpy(), key, tol=1e-5)


def _assign_none(layer):
    layer.bias = None


def _delete(layer):
    del layer.bias


def _register(layer):
    layer.register_parameter("bias", nn.Parameter(np.zeros(3, np.float32)))


def _replace_by_module(layer):
    layer.bias = nn.ReLU()


def _replace_by_buffer(layer):
    del layer.bias
    layer.register_buffer("bias", np.zeros(3, np.float32))


@pytest.mark.parametrize("change", [_assign_none, _delete, _register, _replace_by_module, _replace_by_buffer])
def test_attribute_reads_follow_the_registered_parameters_and_modules(change):
    # parameters and sub-modules are mirrored as plain attributes: each change keeps reads and the walk in step
    layer = nn.Linear(2, 3)
    change(layer)
    stores = {**layer._parameters, **layer._buffers, **layer._modules}
    if "bias" in stores:
        assert layer.bias is stores["bias"]
    else:
        with pytest.raises(AttributeError):
            _ = layer.bias
    assert [name for name, _ in layer.named_parameters()] == [n for n, p in layer._parameters.items() if p is not None]
