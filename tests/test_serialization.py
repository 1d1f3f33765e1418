import json
import os

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
    handgrad.save(
        model, path, classes=list("0123456789"), input_shape=[1, 28, 28], normalization={"mean": 0.13, "std": 0.31}
    )
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
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 42, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(42 * 3 * 3, 10),
    )
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
    from handgrad import files

    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        handgrad.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_float64_model_round_trips_in_float64(tmp_path, model):
    model.double()
    handgrad.save(model, tmp_path / "m.safetensors")
    assert handgrad.load(tmp_path / "m.safetensors").dtype == np.float64


# -- a checkpoint is checked before anything is built ----------------------------------------------
def _write_checkpoint(path, architecture, tensors=None, **metadata):
    from handgrad.serialization import FORMAT, save_tensors

    header = {"format": FORMAT, "architecture": architecture, **metadata}
    save_tensors(path, tensors or {}, {k: json.dumps(v) for k, v in header.items()})


def _linear(fin=3, fout=2, **extra):
    return {"type": "Linear", "in_features": fin, "out_features": fout, **extra}


def _linear_tensors(fin=3, fout=2, dtype=np.float32):
    return {"0.weight": np.zeros((fout, fin), dtype), "0.bias": np.zeros(fout, np.float32)}


# (case, architecture, tensors, metadata, fragments of the one-line error)
BAD_CHECKPOINTS = [
    ("no-type", [{"in_features": 3, "out_features": 2}], None, {}, ["architecture layer 0: missing 'type'"]),
    ("type-not-string", [{"type": 3}], None, {}, ["architecture layer 0: 'type' must be a string, got 3"]),
    (
        "unknown-type",
        [{"type": "Sequential"}],
        None,
        {},
        ["unknown type 'Sequential'", "known: AdaptiveAvgPool2d, AvgPool2d"],
    ),
    (
        "unknown-keyword",
        [_linear(color="red")],
        None,
        {},
        ["layer 0 (Linear): unknown keyword 'color'", "Linear takes in_features, out_features, bias"],
    ),
    (
        "missing-keyword",
        [{"type": "Conv2d", "in_channels": 1, "out_channels": 2}],
        None,
        {},
        ["layer 0 (Conv2d): missing 'kernel_size'"],
    ),
    ("float-size", [_linear(fin=3.0)], None, {}, ["'in_features' must be an integer from 1 to 1048576, got 3.0"]),
    ("bool-size", [_linear(fin=True)], None, {}, ["'in_features' must be an integer", "got True"]),
    ("zero-size", [_linear(fout=0)], None, {}, ["'out_features' must be an integer from 1", "got 0"]),
    ("absurd-size", [_linear(fin=10**9)], None, {}, ["'in_features' must be an integer from 1 to 1048576"]),
    ("string-bias", [_linear(bias="yes")], None, {}, ["'bias' must be true or false, got 'yes'"]),
    ("nan-dropout", [{"type": "Dropout", "p": float("nan")}], None, {}, ["'p' must be a number from 0 to 1, got nan"]),
    ("three-kernel-sizes", [{"type": "MaxPool2d", "kernel_size": [2, 2, 2]}], None, {}, ["'kernel_size' must be"]),
    ("not-a-list", {"type": "Linear"}, None, {}, ["'architecture' must be a non-empty list of layers"]),
    (
        "not-chaining",
        [_linear(3, 4), {"type": "ReLU"}, _linear(5, 2)],
        None,
        {},
        ["layer 2 (Linear): 'in_features' is 5, but the layer before gives 4 features"],
    ),
    (
        "conv-channels",
        [{"type": "Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 3}],
        None,
        {"input_shape": [1, 8, 8]},
        ["layer 0 (Conv2d): 'in_channels' is 3, but the layer before gives 1 channels"],
    ),
    (
        "pool-to-nothing",
        [{"type": "MaxPool2d", "kernel_size": 2}] * 4 + [{"type": "Flatten"}],
        None,
        {"input_shape": [1, 8, 8]},
        ["layer 3 (MaxPool2d): the kernel (2) is larger than the padded height (1)"],
    ),
    (
        "linear-on-maps",
        [_linear(5)],
        None,
        {"input_shape": [1, 8, 8]},
        ["'in_features' is 5, but the layer before gives 8 features (shape (1, 8, 8))"],
    ),
    (
        "huge-padding",
        [{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 100000}],
        {"0.weight": np.zeros((1, 1, 3, 3), np.float32), "0.bias": np.zeros(1, np.float32)},
        {"input_shape": [1, 28, 28]},
        ["layer 0 (Conv2d): unfolds", "more than the limit 67108864"],
    ),
    (
        "huge-input-shape",
        [{"type": "Flatten"}],
        None,
        {"input_shape": [1, 100000, 100000]},
        ["'input_shape' [1, 100000, 100000] holds 10000000000 values per sample, more than the limit"],
    ),
    ("bad-input-shape", [{"type": "Flatten"}], None, {"input_shape": [1, 0, 8]}, ["'input_shape' must be a list"]),
    ("no-tensors", [_linear(30000, 30000)], None, {}, ["missing tensors: 0.weight, 0.bias"]),
    (
        "unexpected-tensor",
        [_linear()],
        {**_linear_tensors(), "extra": np.zeros(1, np.float32)},
        {},
        ["unexpected tensors: extra"],
    ),
    (
        "integer-weights",
        [_linear()],
        _linear_tensors(dtype=np.int32),
        {},
        ["0.weight: expected a float dtype (F16, F32, F64), got I32"],
    ),
    ("int-dtype", [_linear()], _linear_tensors(), {"dtype": "int32"}, ['\'dtype\' must be "float32" or "float64"']),
    (
        "fewer-classes",
        [_linear()],
        _linear_tensors(),
        {"classes": ["a"]},
        ["'classes' names 1 classes, but the model has 2 outputs"],
    ),
    ("more-classes", [_linear()], _linear_tensors(), {"classes": ["a", "b", "c"]}, ["names 3 classes"]),
    ("class-not-string", [_linear()], _linear_tensors(), {"classes": [1, 2]}, ["'classes' must be a list of 1 to"]),
    (
        "bad-normalization",
        [_linear()],
        _linear_tensors(),
        {"normalization": {"mean": 0.1, "std": 0}},
        ["'normalization' must be null or"],
    ),
    ("bad-loss", [_linear()], _linear_tensors(), {"loss": "hinge"}, ["'loss' must be one of cross_entropy, mse"]),
    ("dataset-not-string", [_linear()], _linear_tensors(), {"dataset": 7}, ["'dataset' must be a string, got 7"]),
]


@pytest.mark.parametrize(
    "case,architecture,tensors,metadata,fragments", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS]
)
def test_bad_checkpoint_is_refused_in_one_line_naming_file_and_field(
    tmp_path, case, architecture, tensors, metadata, fragments
):
    path = tmp_path / "m.safetensors"
    _write_checkpoint(path, architecture, tensors, **metadata)
    with pytest.raises(HandgradError) as info:
        handgrad.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "metadata_text, fragment",
    [
        ("[" * 100000, "nested too deeply"),
        ("1" * 5000, "not valid JSON"),
        ("{'single': 'quotes'}", "not valid JSON"),
    ],
)
def test_metadata_that_is_not_json_is_refused(tmp_path, metadata_text, fragment):
    from handgrad.serialization import FORMAT, save_tensors

    path = tmp_path / "m.safetensors"
    save_tensors(path, {}, {"format": json.dumps(FORMAT), "architecture": metadata_text})
    with pytest.raises(HandgradError, match=fragment):
        handgrad.load(path)


def test_a_tiny_file_declaring_a_huge_model_allocates_nothing(tmp_path):
    import tracemalloc

    path = tmp_path / "m.safetensors"
    _write_checkpoint(path, [_linear(30000, 30000)], input_shape=[30000], classes=[str(i) for i in range(30000)])
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(HandgradError, match="missing tensors"):
            handgrad.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # the model alone would be 3.6 GB


@pytest.mark.parametrize(
    "value, count", [(np.nan, "1 NaN, 0 inf"), (np.inf, "0 NaN, 1 inf"), (-np.inf, "0 NaN, 1 inf")]
)
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, model, value, count):
    path = tmp_path / "m.safetensors"
    model[3].bias.data[5] = value
    handgrad.save(model, path)
    with pytest.raises(HandgradError, match=rf"m.safetensors: non-finite weights in 3.bias \({count} of 16 values\)"):
        handgrad.load(path)
    assert handgrad.load(path, allow_nonfinite=True).nonfinite == [f"3.bias ({count} of 16 values)"]


def test_every_named_model_passes_the_checks_with_and_without_an_input_shape():
    from handgrad.models import MODELS, architecture, check_architecture

    for name in MODELS:
        for shape in [(1, 28, 28), (1, 8, 8)]:
            built = models.build_model(name, shape, 10)
            for known in (list(shape), None):
                tensors, output = check_architecture(architecture(built), known)
                assert {k: v[0] for k, v in tensors.items()} == {k: v.shape for k, v in built.state_dict().items()}
                assert output[-1] == 10


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(HandgradError, match=f"{tmp_path}: is a folder, expected a checkpoint file"):
        handgrad.load(tmp_path)


def test_failed_write_names_the_file_being_written(tmp_path, model, monkeypatch):
    import errno

    from handgrad import files
    from handgrad.errors import WriteError

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(WriteError) as info:
        handgrad.save(model, tmp_path / "best.safetensors")
    assert str(info.value) == f"{tmp_path / 'best.safetensors'}: cannot write the file: No space left on device"
    assert isinstance(info.value, OSError) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["fc8-bn", "conv4-bn-pool-fc8-bn"])
def test_batchnorm_checkpoint_round_trip_keeps_its_0d_batch_count(spec, tmp_path):
    handgrad.manual_seed(0)
    model = models.build_model(layers=spec)
    model(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))  # one training batch
    handgrad.save(model, tmp_path / "bn.safetensors")
    buffers = dict(handgrad.load(tmp_path / "bn.safetensors").named_buffers())
    for name, buffer in model.named_buffers():
        assert buffers[name].shape == buffer.shape and np.array_equal(buffers[name], buffer), name
    assert [int(v) for k, v in buffers.items() if k.endswith("num_batches_tracked")] == [1] * spec.count("bn")
