import json

import numpy as np
import pytest

import handgrad
from handgrad import models, nn
from handgrad.errors import HandgradError


@pytest.fixture
def model():
    handgrad.manual_seed(0)
    return models.build_model("tiny-cnn")


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path, model):
    path = tmp_path / "m.safetensors"
    handgrad.save(model, path, classes=list("0123456789"), input_shape=[1, 28, 28],
                  normalization={"mean": 0.13, "std": 0.31})
    loaded = handgrad.load(path)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))
    assert loaded.metadata["classes"] == list("0123456789")
    assert loaded.metadata["normalization"] == {"mean": 0.13, "std": 0.31}
    assert loaded.metadata["handgrad_version"] == handgrad.__version__


def test_file_opens_with_safetensors_and_torch_giving_identical_outputs(tmp_path, model):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 42, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(42 * 3 * 3, 10))
    twin.load_state_dict(load_file(str(path)))
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_user_activation_is_rebuilt_by_name(tmp_path):
    nn.define_activation("Softsign", lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2)
    model = models.build_model(hidden=[8], activation="softsign", input_shape=(1, 4, 4))
    handgrad.save(model, tmp_path / "m.safetensors")
    loaded = handgrad.load(tmp_path / "m.safetensors")
    assert type(loaded[2]).__name__ == "Softsign"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_gives_a_clear_error_naming_the_file(tmp_path, model, damage):
    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64 + data[64:], "empty": b""}[damage])
    with pytest.raises(HandgradError, match="m.safetensors"):
        handgrad.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(HandgradError, match="no such checkpoint file"):
        handgrad.load(tmp_path / "nope.safetensors")


def test_tensors_that_do_not_fit_the_architecture_are_refused(tmp_path, model):
    from handgrad.serialization import load_tensors, save_tensors

    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    tensors, meta = load_tensors(path)
    tensors["0.weight"] = np.zeros((8, 1, 5, 5), np.float32)
    save_tensors(path, tensors, meta)
    with pytest.raises(HandgradError, match=r"0\.weight: expected \(8, 1, 3, 3\), got \(8, 1, 5, 5\)"):
        handgrad.load(path)


def test_a_plain_safetensors_file_is_not_mistaken_for_a_checkpoint(tmp_path):
    from handgrad.serialization import save_tensors

    save_tensors(tmp_path / "x.safetensors", {"a": np.zeros(3, np.float32)}, {"note": json.dumps("hi")})
    with pytest.raises(HandgradError, match="not a handgrad checkpoint"):
        handgrad.load(tmp_path / "x.safetensors")


def test_failed_write_keeps_the_previous_file(tmp_path, model, monkeypatch):
    from handgrad import serialization

    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(serialization.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        handgrad.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_float64_model_round_trips_in_float64(tmp_path, model):
    model.double()
    handgrad.save(model, tmp_path / "m.safetensors")
    assert handgrad.load(tmp_path / "m.safetensors").dtype == np.float64
