"""The C++ port (cpp/) on damaged and hostile checkpoints: `handgrad-cpp eval` must end with a
one-line error naming the file, or a valid result, and never with a signal, a traceback-like dump,
a huge allocation or a hang.

Needs ``cpp/build/handgrad-cpp`` (or the binary named by $HANDGRAD_CPP, e.g. a sanitizer build);
skips when it is missing. No data files are needed: a tiny MNIST-shaped dataset (8x8 images) is
written to a temporary folder. Every case runs under a 2 GiB address-space limit, so an allocation
that a small file should never cause fails as `bad_alloc` instead of slowing the machine.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.data.idx import write_idx
from handgrad.models import build_model
from handgrad.serialization import load_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[1]
CPP = Path(os.environ.get("HANDGRAD_CPP", ROOT / "cpp" / "build" / "handgrad-cpp"))
ADDRESS_SPACE = 2 << 30

pytestmark = pytest.mark.skipif(
    not CPP.is_file(),
    reason=f"the C++ port is not built ({CPP} is missing): run cmake -S cpp -B cpp/build && cmake --build cpp/build",
)

SHAPE, CLASSES, TEST_IMAGES = (1, 8, 8), [str(k) for k in range(10)], 30


def limit_memory():
    if ADDRESS_SPACE and "HANDGRAD_CPP" not in os.environ:  # sanitizers reserve far more address space
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_eval(checkpoint, data_dir, *extra):
    return subprocess.run(
        [str(CPP), "eval", str(checkpoint), "--data-dir", str(data_dir), "--json", *extra],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        preexec_fn=limit_memory,
    )


def assert_clean(result, checkpoint):
    """Exit 0 with valid, finite JSON, or exit 1 with one line naming the checkpoint."""
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-2000:]}"
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 0:
        report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))
        assert report["samples"] == TEST_IMAGES and 0.0 <= report["accuracy"] <= 1.0
        assert len(report["classes"]) == len(report["confusion_matrix"]) == 10
        return report
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handgrad-cpp: error: "), result.stderr
    assert "bad_alloc" not in lines[0] and "std::" not in lines[0], lines[0]
    assert str(checkpoint) in lines[0], f"the error does not name the file: {lines[0]}"
    return None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """mnist/ with 8x8 images: 20 training and 30 test images, labels 0-9."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("data") / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 20), ("t10k", TEST_IMAGES)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return folder.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """tiny-mlp for 8x8 inputs, saved from Python with every metadata field and reference inputs."""
    handgrad.manual_seed(0)
    model = build_model("tiny-mlp", SHAPE, 10)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    inputs = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    handgrad.save(
        model,
        path,
        reference_inputs=inputs,
        input_shape=list(SHAPE),
        normalization={"mean": 0.5, "std": 0.25},
        classes=CLASSES,
        dataset="mnist",
        model="tiny-mlp",
        loss="cross_entropy",
        epoch=1,
    )
    return path


def rewrite(source, target, drop=(), **metadata):
    tensors, raw = load_tensors(source)
    raw = {k: v for k, v in raw.items() if k not in drop}
    raw.update({k: json.dumps(v) for k, v in metadata.items()})
    save_tensors(target, tensors, raw)
    return target


def test_intact_checkpoint_evaluates(checkpoint, data_dir):
    assert assert_clean(run_eval(checkpoint, data_dir), checkpoint) is not None


@pytest.mark.parametrize(
    "field", ["classes", "normalization", "input_shape", "dataset", "model", "loss", "dtype", "reference", "epoch"]
)
def test_an_absent_optional_field_still_gives_the_result(checkpoint, data_dir, tmp_path, field):
    """A checkpoint saved without `classes` used to crash eval (exit 139): its outputs are named 0-9."""
    full = assert_clean(run_eval(checkpoint, data_dir), checkpoint)
    path = rewrite(checkpoint, tmp_path / "partial.safetensors", drop=(field,))
    report = assert_clean(run_eval(path, data_dir), path)
    assert report is not None, "eval refused a checkpoint whose missing field has a default"
    assert report["classes"] == CLASSES
    if field != "normalization":
        assert report["accuracy"] == full["accuracy"]
        assert report["confusion_matrix"] == full["confusion_matrix"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("classes", ["a", "b"], "metadata 'classes' names 2 classes, the model has 10 outputs"),
        ("classes", [str(k) for k in range(12)], "metadata 'classes' names 12 classes, the model has 10 outputs"),
        ("classes", {"0": "zero"}, "metadata 'classes' must be a list of class names"),
        ("input_shape", [1, 28, 28], "do not fit the checkpoint's input shape (1, 28, 28)"),
        ("input_shape", [1, 8], "metadata 'input_shape' must be [channels, height, width]"),
        ("normalization", {"mean": 0.5, "std": -1}, "metadata 'normalization' must be"),
        ("dataset", ["mnist"], "metadata 'dataset' must be a string"),
        ("dtype", "float16", "metadata 'dtype' must be"),
        ("loss", 3, "metadata 'loss' must be"),
        (
            "architecture",
            [{"type": "Flatten"}, {"type": "Linear", "in_features": 64}],
            "entry 1 (Linear): 'out_features' must be an integer >= 0, got nothing",
        ),
        (
            "architecture",
            [{"type": "Linear", "in_features": 10**6, "out_features": 10**6}],
            "tensors do not match the stored architecture: missing keys 0.weight, 0.bias",
        ),
        ("format", "something-else", "not a handgrad checkpoint"),
    ],
)
def test_a_malformed_field_is_named(checkpoint, data_dir, tmp_path, field, value, message):
    path = rewrite(checkpoint, tmp_path / "bad.safetensors", **{field: value})
    result = run_eval(path, data_dir, "--no-reference-check")
    assert_clean(result, path)
    assert result.returncode == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(checkpoint, data_dir, tmp_path, value):
    tensors, raw = load_tensors(checkpoint)
    tensors["1.weight"] = tensors["1.weight"].copy()
    tensors["1.weight"][3, 7] = value
    path = tmp_path / "broken.safetensors"
    save_tensors(path, tensors, raw)
    result = run_eval(path, data_dir)
    assert_clean(result, path)
    assert result.returncode == 1
    assert "tensor '1.weight' holds 1 non-finite value" in result.stderr


def mutations(data: bytes, header_end: int, rng: np.random.Generator):
    """(name, damaged bytes): truncations, bit flips anywhere and in the header, and header edits."""
    for k in range(12):
        cut = int(rng.integers(0, len(data)))
        yield f"truncate-{k}@{cut}", data[:cut]
    for k in range(24):
        flipped = bytearray(data)
        where = rng.integers(0, header_end if k % 2 else len(data), size=int(rng.integers(1, 9)))
        for i in where:
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        yield f"bitflip-{k}", bytes(flipped)
    # a header length far beyond the file, and one that cuts the JSON
    yield "header-length-huge", struct.pack("<Q", 1 << 60) + data[8:]
    yield "header-length-short", struct.pack("<Q", header_end - 20) + data[8:]


def header_edits(header: dict, rng: np.random.Generator):
    """(name, header) with one tensor entry or metadata value replaced by something random."""
    odd_values = [
        None,
        True,
        -1,
        0,
        2**63,
        2**64 + 5,
        1e308,
        -0.5,
        "x",
        "F16",
        [],
        [[1, 2]],
        [-1, 4],
        [2**40, 2**40],
        [1, 2, 3],
        {},
        {"a": 1},
        "[]",
        '{"type": 1}',
        "null",
        "NaN",
        "[[[[[]]]]]",
    ]
    tensor_names = [k for k in header if k != "__metadata__"]
    meta_names = sorted(header["__metadata__"])
    for k in range(40):
        edited = json.loads(json.dumps(header))
        value = odd_values[int(rng.integers(0, len(odd_values)))]
        if k % 2:
            name, key = tensor_names[int(rng.integers(0, len(tensor_names)))], ["dtype", "shape", "data_offsets"][k % 3]
            edited[name][key] = value
            yield f"tensor-{name}-{key}={value!r}", edited
        else:
            name = meta_names[int(rng.integers(0, len(meta_names)))]
            edited["__metadata__"][name] = value if isinstance(value, str) else json.dumps(value)
            yield f"metadata-{name}={value!r}", edited


def with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def test_fuzzed_checkpoints_never_crash(checkpoint, data_dir, tmp_path):
    rng = np.random.default_rng(13)
    data = Path(checkpoint).read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:header_end]), data[header_end:]
    cases = list(mutations(data, header_end, rng))
    cases += [(name, with_header(edited, body)) for name, edited in header_edits(header, rng)]
    # a deeply nested metadata value and an architecture entry of every supported type with odd values
    cases.append(
        (
            "deep-nesting",
            with_header(
                {**header, "__metadata__": {**header["__metadata__"], "classes": "[" * 100000 + "]" * 100000}}, body
            ),
        )
    )
    for layer_type in ("Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "LeakyReLU"):
        odd = {
            "type": layer_type,
            "kernel_size": [0, 2**31],
            "stride": -1,
            "padding": 2**40,
            "start_dim": -(2**40),
            "p": "half",
            "negative_slope": None,
            "in_channels": 1,
            "out_channels": 2**40,
        }
        arch = json.loads(header["__metadata__"]["architecture"])
        edited = {**header, "__metadata__": {**header["__metadata__"], "architecture": json.dumps([odd] + arch)}}
        cases.append((f"architecture-{layer_type}", with_header(edited, body)))
    outcomes = {0: 0, 1: 0}
    for name, damaged in cases:
        path = tmp_path / "fuzzed.safetensors"
        path.write_bytes(damaged)
        result = run_eval(path, data_dir)
        try:
            assert_clean(result, path)
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from None
        outcomes[result.returncode] += 1
    assert outcomes[1] > len(cases) // 2  # most damage is detected, not evaluated
