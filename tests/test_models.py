import numpy as np
import pytest

import handgrad
from handgrad import models, nn

SHAPES = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_runs_forward_and_backward_on_each_dataset_shape(name, shape):
    model = models.build_model(name, shape, num_classes=10)
    x = np.random.default_rng(0).random((3,) + shape, dtype=np.float32)
    out = model(x)
    assert out.shape == (3, 10) and out.dtype == np.float32
    model.backward(np.ones_like(out), input_grad=False)
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize(
    "name, params",
    [
        ("tiny-mlp", 12_730),
        ("tiny-cnn", 11_128),
        ("mlp", 261_510),
        ("mlp-small", 109_386),
        ("mlp-sigmoid", 79_510),
        ("linear", 7_850),
    ],
)
def test_parameter_counts_on_mnist(name, params):
    assert models.build_model(name).num_parameters() == params


def test_matched_pair_is_matched():
    mlp, cnn = models.build_model("tiny-mlp").num_parameters(), models.build_model("tiny-cnn").num_parameters()
    assert abs(mlp - cnn) / mlp < 0.15


def test_custom_mlp_from_hidden_sizes_and_activation():
    model = models.build_model(hidden=[512, 256], activation="tanh")
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert model[1].out_features == 512 and model[3].out_features == 256


def test_layer_spec():
    model = models.build_model(layers="conv8-pool-conv16k5-bn-pool-fc32-tanh-dropout0.25", input_shape=(1, 28, 28))
    assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert any(isinstance(layer, nn.Tanh) for layer in model)
    with pytest.raises(ValueError, match="bad layer spec token 'wat'"):
        models.build_model(layers="conv8-wat")


def test_unknown_model_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*lenet5"):
        models.build_model("resnet")


@pytest.mark.parametrize("name", list(models.MODELS))
def test_architecture_round_trip_rebuilds_the_same_model(name):
    handgrad.manual_seed(0)
    model = models.build_model(name)
    rebuilt = models.from_architecture(models.architecture(model))
    rebuilt.load_state_dict(model.state_dict())
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(model(x), rebuilt(x))
    assert repr(model) == repr(rebuilt)


def test_summary_lists_layers_shapes_and_parameter_counts():
    text = models.summary(models.build_model("lenet5"), (1, 28, 28))
    assert "(N, 16, 5, 5)" in text and "61,706" in text and "Conv2d(1, 6" in text


def test_same_seed_same_weights():
    handgrad.manual_seed(3)
    a = models.build_model("tiny-cnn").state_dict()
    handgrad.manual_seed(3)
    b = models.build_model("tiny-cnn").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
