"""Bad input: each mistake raises a handgrad error (a ValueError) naming the layer as it prints, what
was expected and what came."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from handgrad import nn
from handgrad.errors import BackwardBeforeForwardError, DTypeError, HandgradError, ShapeError, StateDictError

CONV = "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1))"
LINEAR = "Linear(in_features=784, out_features=10, bias=True)"
BN2D = "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
BN1D = "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"


def f32(*shape):
    return np.zeros(shape, np.float32)


# (layer, input, error class, the message's start, fragments it must contain)
FORWARD_CASES = [
    pytest.param(
        nn.Conv2d(1, 8, 3),
        f32(28, 28),
        ShapeError,
        CONV,
        ["expected input of shape (N, 1, H, W) or (1, H, W) (3-D or 4-D)", "got shape (28, 28) (2-D)"],
        id="conv-rank",
    ),
    pytest.param(
        nn.Conv2d(1, 8, 3),
        f32(2, 3, 28, 28),
        ShapeError,
        CONV,
        ["expected input of shape (N, 1, H, W)", "in_channels=1", "got (2, 3, 28, 28)"],
        id="conv-channels",
    ),
    pytest.param(
        nn.Conv2d(1, 8, 3),
        f32(1, 1, 2, 5),
        ShapeError,
        CONV,
        ["kernel size (3, 3) is larger than the padded input (2, 5)", "input (1, 1, 2, 5)"],
        id="conv-kernel-too-large",
    ),
    pytest.param(
        nn.Conv2d(1, 8, 5, padding=1),
        f32(1, 1, 2, 2),
        ShapeError,
        "Conv2d(1, 8, kernel_size=(5, 5), stride=(1, 1), padding=(1, 1))",
        ["larger than the padded input (4, 4)", "padding (1, 1)"],
        id="conv-kernel-too-large-padded",
    ),
    pytest.param(
        nn.Linear(784, 10),
        f32(2, 100),
        ShapeError,
        LINEAR,
        ["expected input of shape (*, 784)", "got (2, 100)"],
        id="linear-features",
    ),
    pytest.param(
        nn.Linear(784, 10),
        np.array(1.0, np.float32),
        ShapeError,
        LINEAR,
        ["expected input of shape (*, in_features)", "got shape () (0-D)"],
        id="linear-rank",
    ),
    pytest.param(
        nn.Linear(784, 10),
        np.zeros((2, 784)),
        DTypeError,
        LINEAR,
        ["expected input of dtype float32", "got float64"],
        id="linear-float64",
    ),
    pytest.param(
        nn.Linear(784, 10),
        [[0.0] * 784],
        HandgradError,
        LINEAR,
        ["expected input to be a numpy.ndarray, got list"],
        id="linear-list",
    ),
    pytest.param(
        nn.MaxPool2d(3),
        f32(1, 1, 2, 2),
        ShapeError,
        "MaxPool2d(kernel_size=3, stride=3, padding=0)",
        ["input (1, 1, 2, 2) is smaller than one window", "kernel_size (3, 3), dilation (1, 1), padding (0, 0)"],
        id="maxpool-kernel-too-large",
    ),
    pytest.param(
        nn.AvgPool2d(2),
        f32(4, 4),
        ShapeError,
        "AvgPool2d(kernel_size=2, stride=2, padding=0)",
        ["expected input of shape (N, C, H, W) or (C, H, W)", "got (4, 4)"],
        id="avgpool-rank",
    ),
    pytest.param(
        nn.BatchNorm2d(3),
        f32(2, 4, 5, 5),
        ShapeError,
        BN2D,
        ["expected 3 channels", "got input (2, 4, 5, 5)"],
        id="bn2d-channels",
    ),
    pytest.param(
        nn.BatchNorm1d(3),
        f32(2, 3, 4, 5),
        ShapeError,
        BN1D,
        ["expected input of shape (N, 3) or (N, 3, L) (2-D or 3-D)", "got shape (2, 3, 4, 5) (4-D)"],
        id="bn1d-rank",
    ),
    pytest.param(
        nn.BatchNorm1d(3),
        f32(1, 3),
        ShapeError,
        BN1D,
        ["more than 1 value per channel when training", "got input (1, 3)"],
        id="bn1d-batch1-train",
    ),
    pytest.param(
        nn.ReLU(),
        np.array([1, 2]),
        DTypeError,
        "ReLU()",
        ["expected input of a floating dtype, got int64"],
        id="relu-int",
    ),
]


@pytest.mark.parametrize("layer, x, error, start, fragments", FORWARD_CASES)
def test_forward_error_names_layer_expected_and_got(layer, x, error, start, fragments):
    with pytest.raises(error) as info:
        layer(x)
    message = str(info.value)
    assert message.startswith(start + ": "), message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)
    assert info.value.where is layer


LOSS_CASES = [
    pytest.param(
        nn.CrossEntropyLoss(),
        f32(2, 3),
        np.array([0, 3]),
        HandgradError,
        "CrossEntropyLoss()",
        ["must be in [0, 2] (C=3)", "got [3]"],
        id="ce-label-too-large",
    ),
    pytest.param(
        nn.NLLLoss(),
        f32(3, 4),
        np.array([-1, 0, 9]),
        HandgradError,
        "NLLLoss()",
        ["must be in [0, 3] (C=4)", "got [-1, 9]"],
        id="nll-label-negative",
    ),
    pytest.param(
        nn.CrossEntropyLoss(),
        f32(2, 3),
        np.array([0.0, 1.0]),
        DTypeError,
        "CrossEntropyLoss()",
        ["expected target of an integer dtype", "got float64"],
        id="ce-float-labels",
    ),
    pytest.param(
        nn.NLLLoss(reduction="sum"),
        f32(2, 3),
        np.array([0, 1, 2]),
        ShapeError,
        "NLLLoss(reduction='sum')",
        ["expected target of shape (2,)", "got (3,)"],
        id="nll-label-count",
    ),
    pytest.param(
        nn.CrossEntropyLoss(),
        f32(2, 3, 4),
        np.array([0, 1]),
        ShapeError,
        "CrossEntropyLoss()",
        # (N, C, d1) input is torch's too: the target must then be (N, d1)
        ["expected target of shape (2, 4) to match input (2, 3, 4)", "got (2,)"],
        id="ce-rank",
    ),
    pytest.param(
        nn.CrossEntropyLoss(),
        np.zeros((), np.float32),
        np.array(0),
        ShapeError,
        "CrossEntropyLoss()",
        ["expected input of shape (N, C, d1, ...) or (C,) (at least 1-D)", "got shape () (0-D)"],
        id="ce-scalar-input",
    ),
    pytest.param(
        nn.CrossEntropyLoss(),
        f32(2, 3),
        [0, 1],
        HandgradError,
        "CrossEntropyLoss()",
        ["expected target to be a numpy.ndarray", "got list"],
        id="ce-list-labels",
    ),
    pytest.param(
        nn.MSELoss(),
        f32(2, 3),
        f32(3, 2),
        ShapeError,
        "MSELoss()",
        ["expected target of the input's shape (2, 3)", "got (3, 2)"],
        id="mse-shape",
    ),
]


@pytest.mark.parametrize("loss, x, target, error, start, fragments", LOSS_CASES)
def test_loss_error_names_loss_expected_and_got(loss, x, target, error, start, fragments):
    with pytest.raises(error) as info:
        loss(x, target)
    message = str(info.value)
    assert message.startswith(start + ": "), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(1, 8, 3),
        nn.Linear(784, 10),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm1d(3),
        nn.Dropout(),
        nn.Flatten(),
        nn.CrossEntropyLoss(),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_backward_before_forward(layer):
    with pytest.raises(BackwardBeforeForwardError) as info:
        layer.backward(np.zeros((1, 1), np.float32))
    assert str(info.value).startswith(repr(layer) + ": backward() called before forward()")
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)


@pytest.mark.parametrize(
    "layer, x, bad_grad, expected, got",
    [
        pytest.param(nn.Conv2d(1, 8, 3), f32(2, 1, 5, 5), f32(2, 8, 5, 5), "(2, 8, 3, 3)", "(2, 8, 5, 5)", id="conv"),
        pytest.param(nn.Linear(784, 10), f32(4, 784), f32(4, 784), "(4, 10)", "(4, 784)", id="linear"),
        pytest.param(nn.MaxPool2d(2), f32(1, 1, 4, 4), f32(1, 1, 4, 4), "(1, 1, 2, 2)", "(1, 1, 4, 4)", id="maxpool"),
        pytest.param(nn.Sigmoid(), f32(3), f32(3, 1), "(3,)", "(3, 1)", id="sigmoid"),
    ],
)
def test_grad_output_of_the_wrong_shape(layer, x, bad_grad, expected, got):
    layer(x)
    with pytest.raises(ShapeError) as info:
        layer.backward(bad_grad)
    message = str(info.value)
    assert message.startswith(repr(layer) + ": ")
    assert f"expected grad_output of shape {expected}" in message and f"got {got}" in message


def test_loss_with_reduction_none_needs_a_grad_output_per_sample():
    loss = nn.CrossEntropyLoss(reduction="none")
    loss(f32(2, 3), np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"expected grad_output of shape \(2,\).*got \(\)"):
        loss.backward(1.0)


@pytest.mark.parametrize(
    "state, fragments",
    [
        pytest.param({"weight": f32(10, 784)}, ["missing keys: bias"], id="missing"),
        pytest.param(
            {"weight": f32(10, 784), "bias": f32(10), "scale": f32(1)}, ["unexpected keys: scale"], id="extra"
        ),
        pytest.param(
            {"weight": f32(784, 10), "bias": f32(10)},
            ["mis-shaped: weight: expected (10, 784), got (784, 10)"],
            id="mis-shaped",
        ),
    ],
)
def test_bad_state_dict(state, fragments):
    layer = nn.Linear(784, 10)
    with pytest.raises(StateDictError) as info:
        layer.load_state_dict(state)
    message = str(info.value)
    assert message.startswith(LINEAR), message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_state_dict_for_a_container_names_it():
    with pytest.raises(StateDictError, match=r"^Sequential.*missing keys: 0\.bias"):
        nn.Sequential(nn.Linear(2, 2)).load_state_dict({"0.weight": f32(2, 2)})


@pytest.mark.parametrize(
    "make, message",
    [
        pytest.param(lambda: nn.Conv2d(1, 8, 3, stride=0), "expected stride >= 1, got 0", id="conv-stride0"),
        pytest.param(lambda: nn.Conv2d(1, 8, (3, 3, 3)), "expected an int or a pair of ints", id="conv-kernel-triple"),
        pytest.param(lambda: nn.MaxPool2d(2, padding=2), "padding (2, 2) should be at most half", id="pool-padding"),
        pytest.param(lambda: nn.Dropout(1.5), "between 0 and 1, but got 1.5", id="dropout-p"),
        pytest.param(lambda: nn.MSELoss(reduction="avg"), "reduction must be one of", id="reduction"),
    ],
)
def test_invalid_constructor_arguments(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_errors_survive_pickle_and_deepcopy():
    """Errors cross process boundaries (data-loader workers) and deep copies intact."""
    with pytest.raises(ShapeError) as info:
        nn.Linear(784, 10)(f32(2, 100))
    for clone in (pickle.loads(pickle.dumps(info.value)), copy.deepcopy(info.value)):
        assert type(clone) is ShapeError
        assert str(clone) == str(info.value)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
@pytest.mark.parametrize(
    "values, bad",
    [([0, 2, 1], None), ([0, 3, 1], [3]), ([0, -1, 1], [-1]), ([0, -100, 1], None), ([-2, 0, 127], [-2, 127])],
    ids=["in-range", "too-large", "negative", "ignored", "both"],
)
def test_class_index_range_checked_in_every_integer_width(values, bad, dtype):
    # one reduction over the indices read as unsigned checks both bounds: the values that cannot be
    # held in this dtype are left out
    info = np.iinfo(dtype)
    if any(v < info.min or v > info.max for v in values):
        pytest.skip(f"{values} do not fit in {np.dtype(dtype).name}")
    loss = nn.CrossEntropyLoss()
    target = np.array(values, dtype=dtype)
    if bad is None:
        assert np.isfinite(loss(f32(3, 3), target))
    else:
        with pytest.raises(HandgradError) as info:
            loss(f32(3, 3), target)
        assert "must be in [0, 2] (C=3)" in str(info.value) and f"got {bad}" in str(info.value), str(info.value)
