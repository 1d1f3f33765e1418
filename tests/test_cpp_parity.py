"""The C++ port (cpp/) against the Python core: checkpoints both ways, the same logits, the same
training loss from the same initial weights and batch order, and the reference-output check.

Needs ``cpp/build/handgrad-cpp`` (``make test`` builds it first) and MNIST under $HANDGRAD_DATA_DIR;
each test skips with the reason when either is missing. Kept fast: mlp-small trained one epoch on a
5,000-image stratified subset (about a second in Python), evaluated on all 10,000 test images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import nn, optim
from handgrad.app.training import evaluate
from handgrad.data import DataLoader, Normalizer, load_dataset
from handgrad.data.idx import read_idx, write_idx
from handgrad.models import build_model
from handgrad.serialization import load_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "cpp" / "build" / "handgrad-cpp"
DATA = os.environ.get("HANDGRAD_DATA_DIR")

pytestmark = [
    pytest.mark.skipif(
        not CPP.is_file(),
        reason=f"the C++ port is not built ({CPP} is missing): run `make test`, or "
        "cmake -S cpp -B cpp/build && cmake --build cpp/build",
    ),
    pytest.mark.skipif(
        not DATA or not os.path.isdir(os.path.join(DATA or "", "mnist")),
        reason="MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/",
    ),
]

SUBSET, BATCH, LR, MOMENTUM = 5000, 64, 0.05, 0.9


def run_cpp(*args, check=True):
    result = subprocess.run([str(CPP), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"handgrad-cpp {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", download=False, progress=False)


@pytest.fixture(scope="module")
def subset(mnist):
    """(indices into the training file, normalizer) of a stratified 5,000-image subset."""
    from handgrad.data.split import stratified_indices

    index = stratified_indices(mnist.train_labels, SUBSET, seed=0)
    return index, Normalizer.fit(mnist.train_images[index])


def metadata(norm):
    return {
        "input_shape": [1, 28, 28],
        "normalization": norm.to_dict(),
        "classes": [str(k) for k in range(10)],
        "dataset": "mnist",
        "model": "mlp-small",
        "loss": "cross_entropy",
        "epoch": 1,
    }


def train_python(model, x, y, orders):
    """SGD(lr 0.05, momentum 0.9) with cross-entropy over the given per-epoch orders; mean loss per epoch."""
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    means = []
    for order in orders:
        loss_sum = 0.0
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            loss = loss_fn(model(x[index]), y[index])
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            loss_sum += loss * len(index)
        means.append(loss_sum / len(order))
    return means


@pytest.fixture(scope="module")
def python_checkpoint(mnist, subset, tmp_path_factory):
    """mlp-small trained one epoch in Python, saved with three reference inputs."""
    index, norm = subset
    handgrad.manual_seed(0)
    model = build_model("mlp-small")
    loader = DataLoader(np.arange(SUBSET), np.arange(SUBSET), batch_size=BATCH, shuffle=True, seed=0)
    train_python(model, norm(mnist.train_images[index]), mnist.train_labels[index], [loader.order(0)])
    path = tmp_path_factory.mktemp("py") / "mlp-small.safetensors"
    handgrad.save(model, path, reference_inputs=norm(mnist.test_images[:3]), **metadata(norm))
    return path


def python_logits(path, mnist):
    model = handgrad.load(path)
    norm = Normalizer.from_dict(model.metadata["normalization"])
    return evaluate(model, norm(mnist.test_images), mnist.test_labels)[2]


def test_python_checkpoint_evaluates_the_same_in_cpp(python_checkpoint, mnist, tmp_path):
    out = run_cpp("eval", python_checkpoint, "--json", "--logits", tmp_path / "logits.idx")
    cpp_logits = read_idx(tmp_path / "logits.idx")
    py_logits = python_logits(python_checkpoint, mnist)
    assert cpp_logits.shape == py_logits.shape == (10000, 10)
    assert (cpp_logits.argmax(axis=1) == py_logits.argmax(axis=1)).all()
    assert np.abs(cpp_logits - py_logits).max() < 1e-4
    # the same JSON as `handgrad eval --json`, key for key
    py = subprocess.run(
        [sys.executable, "-m", "handgrad", "eval", str(python_checkpoint), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    if py.returncode == 0:
        assert json.loads(out.stdout) == json.loads(py.stdout)
    assert list(json.loads(out.stdout)) == [
        "checkpoint",
        "dataset",
        "samples",
        "accuracy",
        "top5_accuracy",
        "per_class_accuracy",
        "classes",
        "confusion_matrix",
    ]


def test_cpp_checkpoint_loads_in_python_with_the_same_logits(mnist, tmp_path):
    run_cpp(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "mlp-small",
        "--epochs",
        1,
        "--train-size",
        2000,
        "--seed",
        3,
        "--quiet",
        "--out",
        tmp_path / "run",
    )
    checkpoint = tmp_path / "run" / "last.safetensors"
    model = handgrad.load(checkpoint)  # strict: the architecture and every tensor fit
    assert model.metadata["model"] == "mlp-small" and model.metadata["format"] == "handgrad-checkpoint-1"
    run_cpp("eval", checkpoint, "--json", "--logits", tmp_path / "logits.idx")
    cpp_logits = read_idx(tmp_path / "logits.idx")
    py_logits = python_logits(checkpoint, mnist)
    assert (cpp_logits.argmax(axis=1) == py_logits.argmax(axis=1)).all()
    assert np.abs(cpp_logits - py_logits).max() < 1e-4


def test_reference_inputs_pass_and_load_strictly_into_the_torch_twin(python_checkpoint):
    out = run_cpp("eval", python_checkpoint)
    assert "reference outputs: all 6 layers match" in out.stdout
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    twin = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    twin.load_state_dict(load_file(str(python_checkpoint)), strict=True)


def test_reference_mismatch_names_the_first_diverging_layer(python_checkpoint, tmp_path):
    tensors, raw = load_tensors(python_checkpoint)
    tensors["3.weight"] = tensors["3.weight"] + np.float32(0.05)  # the second Linear
    tampered = tmp_path / "tampered.safetensors"
    save_tensors(tampered, tensors, raw)
    result = run_cpp("eval", tampered, check=False)
    assert result.returncode == 1
    assert (
        "first layer whose output diverges from the saved outputs is layer 3 (Linear(in_features=128, "
        "out_features=64, bias=True))" in result.stderr
    )


def test_training_parity_from_the_same_weights_and_batch_order(mnist, subset, tmp_path):
    """One epoch of mlp-small on 5,000 images, float32: the C++ epoch loss within 1e-3 (relative)."""
    index, norm = subset
    handgrad.manual_seed(1)
    model = build_model("mlp-small")
    handgrad.save(model, tmp_path / "init.safetensors", **metadata(norm))
    order = np.random.default_rng([1, 0]).permutation(SUBSET)  # the DataLoader's epoch-0 order, seed 1
    write_idx(tmp_path / "order.idx", index[order].astype(np.int32)[None])  # as indices into the training file
    py_loss = train_python(model, norm(mnist.train_images[index]), mnist.train_labels[index], [order])[0]

    run_cpp(
        "train",
        "--init",
        tmp_path / "init.safetensors",
        "--order",
        tmp_path / "order.idx",
        "--epochs",
        1,
        "--batch-size",
        BATCH,
        "--lr",
        LR,
        "--momentum",
        MOMENTUM,
        "--weight-decay",
        0,
        "--schedule",
        "none",
        "--quiet",
        "--out",
        tmp_path / "run",
    )
    cpp_loss = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"][0]["train_loss"]
    assert abs(cpp_loss - py_loss) / py_loss < 1e-3
    # and the weights after 79 steps still agree closely
    cpp_model = handgrad.load(tmp_path / "run" / "last.safetensors")
    x = norm(mnist.test_images[:500])
    a, b = evaluate(model, x, mnist.test_labels[:500])[2], evaluate(cpp_model, x, mnist.test_labels[:500])[2]
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()


def test_cpp_training_is_deterministic(subset, tmp_path):
    """Same initial weights, same batch order: the same weights, bit for bit, run after run."""
    index, norm = subset
    handgrad.manual_seed(2)
    handgrad.save(build_model("mlp-small"), tmp_path / "init.safetensors", **metadata(norm))
    order = np.random.default_rng([2, 0]).permutation(SUBSET)[:1280]
    write_idx(tmp_path / "order.idx", index[order].astype(np.int32)[None])
    weights = []
    for run in ("a", "b"):
        run_cpp(
            "train",
            "--init",
            tmp_path / "init.safetensors",
            "--order",
            tmp_path / "order.idx",
            "--epochs",
            1,
            "--batch-size",
            BATCH,
            "--lr",
            LR,
            "--momentum",
            MOMENTUM,
            "--schedule",
            "none",
            "--quiet",
            "--out",
            tmp_path / run,
        )
        weights.append(load_tensors(tmp_path / run / "last.safetensors")[0])
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
