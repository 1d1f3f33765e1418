"""The C++ port (cpp/) against the Python core: checkpoints both ways, the same logits, the same
training loss from the same initial weights and batch order, and the reference-output check; every
layer and loss the twin has, output and gradients from the same checkpoint; the same CLI (per-command
--help, info, --hidden, --layers with Python's grammar and words); run folders that `handgrad report`
reads; architectures the twin cannot compute refused.

Needs ``cpp/build/handgrad-cpp`` (``make test`` builds it first); the tests that read MNIST skip
with the reason when $HANDGRAD_DATA_DIR holds no mnist/. Kept fast: mlp-small trained one epoch on a
5,000-image stratified subset (about a second in Python), evaluated on all 10,000 test images; the
C++ runs that check an architecture, an option or a message read a 1,000-image copy of MNIST.
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

pytestmark = pytest.mark.skipif(
    not CPP.is_file(),
    reason=f"the C++ port is not built ({CPP} is missing): run `make test`, or "
    "cmake -S cpp -B cpp/build && cmake --build cpp/build",
)
HAVE_MNIST = bool(DATA) and os.path.isdir(os.path.join(DATA or "", "mnist"))
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason="MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/"
)

SUBSET, BATCH, LR, MOMENTUM = 5000, 64, 0.05, 0.9


def run_cpp(*args, check=True):
    result = subprocess.run([str(CPP), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"handgrad-cpp {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def mnist():
    if not HAVE_MNIST:
        pytest.skip("MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/")
    return load_dataset("mnist", download=False, progress=False)


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """A data folder with MNIST's first 1,000 training and 1,000 test images, uncompressed, for the
    C++ runs whose checks do not depend on the data: it reads them in milliseconds, where the whole
    dataset takes half a second of every run."""
    if not HAVE_MNIST:
        pytest.skip("MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/")
    folder = tmp_path_factory.mktemp("data")
    (folder / "mnist").mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        write_idx(folder / "mnist" / name, read_idx(os.path.join(DATA or "", "mnist", f"{name}.gz"))[:1000])
    return folder


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


@needs_mnist
@pytest.mark.parametrize(
    "optimizer, lr, momentum, weight_decay",
    [("rmsprop", 1e-3, 0.9, 1e-3), ("rmsprop", 1e-3, 0.0, 1e-3), ("adagrad", 0.02, 0.0, 1e-3)],
)
def test_optimizers_train_as_python(optimizer, lr, momentum, weight_decay, mnist, subset, tmp_path):
    """20 steps of mlp-small from the same weights and batch order: the same epoch loss and weights.
    With weight decay: RMSprop divides by the gradient's own size, so a unit whose gradient is
    nearly zero (a sum that cancels) would magnify float32 rounding into its whole step."""
    from handgrad.app.training import TrainConfig, make_optimizer

    index, norm = subset
    handgrad.manual_seed(5)
    model = build_model("mlp-small")
    handgrad.save(model, tmp_path / "init.safetensors", **metadata(norm))
    order = np.random.default_rng([5, 0]).permutation(SUBSET)[:1280]
    write_idx(tmp_path / "order.idx", index[order].astype(np.int32)[None])
    config = TrainConfig(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt = make_optimizer(config, model.parameters())
    x, y, loss_fn, loss_sum = norm(mnist.train_images[index]), mnist.train_labels[index], nn.CrossEntropyLoss(), 0.0
    for start in range(0, len(order), BATCH):
        batch = order[start : start + BATCH]
        loss_sum += loss_fn(model(x[batch]), y[batch]) * len(batch)
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()

    run_cpp(
        "train", "--init", tmp_path / "init.safetensors", "--order", tmp_path / "order.idx", "--epochs", 1,
        "--batch-size", BATCH, "--optimizer", optimizer, "--lr", lr, "--momentum", momentum, "--weight-decay",
        weight_decay, "--schedule", "none", "--quiet", "--out", tmp_path / "run",
    )  # fmt: skip
    cpp_loss = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"][0]["train_loss"]
    assert abs(cpp_loss - loss_sum / len(order)) < 1e-4 * loss_sum / len(order)
    cpp_weights = load_tensors(tmp_path / "run" / "last.safetensors")[0]
    for name, p in model.named_parameters():
        assert np.abs(cpp_weights[name] - p.data).max() < 1e-4 * max(1.0, np.abs(p.data).max()), name


@needs_mnist
@pytest.mark.parametrize("schedule, lr", [("multistep", 0.05), ("plateau", 1e-6), ("step", 0.05), ("cosine", 0.05)])
def test_schedules_set_the_lr_as_python(schedule, lr, small_mnist, tmp_path):
    """Five C++ epochs: the lr of each is the Python scheduler's, the plateau fed the C++ validation
    losses (an lr of 1e-6 leaves them flat, so it reduces the lr after the fourth)."""
    from handgrad.app.training import TrainConfig, make_optimizer, make_scheduler

    run_cpp(
        "train", "--dataset", "mnist", "--data-dir", small_mnist, "--train-size", 200, "--epochs", 5, "--schedule",
        schedule, "--lr", lr, "--quiet", "--out", tmp_path,
    )  # fmt: skip
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    config = TrainConfig(model="mlp-small", epochs=5, schedule=schedule, lr=lr).resolved()
    opt = make_optimizer(config, nn.Linear(2, 2).parameters())
    scheduler = make_scheduler(config, opt)
    expected = []
    for row in history:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: nothing moves, but the epoch's steps come before the schedule's, as in training
        scheduler.step(row["val_loss"]) if schedule == "plateau" else scheduler.step()
    assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 1  # the schedule changed the lr within the run


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


# -- every layer and loss: the same checkpoint gives the same outputs and gradients --------------------
def _bn(cls, features, rng, **options):
    """A BatchNorm layer with random affine parameters and running statistics."""
    layer = cls(features, **options)
    if layer.affine:
        layer.weight.data[:] = rng.uniform(0.5, 1.5, features)
        layer.bias.data[:] = rng.standard_normal(features)
    if layer.track_running_stats:
        layer.running_mean[:] = rng.standard_normal(features)
        layer.running_var[:] = rng.uniform(0.5, 2.0, features)
        layer.num_batches_tracked[...] = 3
    return layer


def _ln(normalized_shape, rng, **options):
    """A LayerNorm with random affine parameters (where it has them)."""
    layer = nn.LayerNorm(normalized_shape, **options)
    for parameter in (layer.weight, layer.bias):
        if parameter is not None:
            parameter.data[:] = rng.uniform(0.5, 1.5, parameter.data.shape)
    return layer


def _maps(*layers, features, classes=3):
    """Layers over (N, C, H, W) maps, then Flatten and a Linear from their ``features`` to the classes."""
    return [*layers, nn.Flatten(), nn.Linear(features, classes)]


#: the class weights of the loss cases (float32 values, written exactly in decimal for the C++)
WEIGHTS = [0.5, 2.0, 1.0, 1.5, 0.75]


def _loss_case(layers, shape, loss, reduction, options):
    """A LAYER_CASES entry for a loss's options, in training: ``layers()`` builds the layers."""
    return (lambda rng: layers(), shape, loss, reduction, True, options)


#: id -> (layers from a seeded rng, input shape, loss, reduction, training[, loss options]); the
#: options: the loss's keyword arguments, and "target" (explicit class indices) or "probabilities"
LAYER_CASES = {
    "elu": (lambda rng: [nn.Linear(6, 5), nn.ELU(0.7), nn.Linear(5, 3)], (4, 6), "cross_entropy", "mean", True),
    "softmax-mse": (lambda rng: [nn.Linear(6, 5), nn.Softmax(dim=1)], (4, 6), "mse", "sum", True),
    "softmax-dim0": (lambda rng: [nn.Linear(6, 5), nn.Softmax(dim=0)], (4, 6), "mse", "none", True),
    "log_softmax-nll-mean": (lambda rng: [nn.Linear(6, 5), nn.LogSoftmax(dim=1)], (4, 6), "nll_loss", "mean", True),
    "log_softmax-nll-sum": (lambda rng: [nn.Linear(6, 5), nn.LogSoftmax()], (4, 6), "nll_loss", "sum", True),
    "log_softmax-nll-none": (lambda rng: [nn.Linear(6, 5), nn.LogSoftmax()], (4, 6), "nll_loss", "none", True),
    "cross_entropy-sum": (lambda rng: [nn.Linear(6, 5)], (4, 6), "cross_entropy", "sum", True),
    "cross_entropy-none": (lambda rng: [nn.Linear(6, 5)], (4, 6), "cross_entropy", "none", True),
    "mse-mean": (lambda rng: [nn.Linear(6, 5), nn.Tanh()], (4, 6), "mse", "mean", True),
    "batchnorm1d-train": (
        lambda rng: [nn.Linear(6, 5), _bn(nn.BatchNorm1d, 5, rng), nn.ReLU(), nn.Linear(5, 3)],
        (8, 6),
        "cross_entropy",
        "mean",
        True,
    ),
    "batchnorm1d-eval": (
        lambda rng: [nn.Linear(6, 5), _bn(nn.BatchNorm1d, 5, rng), nn.ReLU(), nn.Linear(5, 3)],
        (8, 6),
        "cross_entropy",
        "mean",
        False,
    ),
    "batchnorm1d-cumulative-no-affine": (
        lambda rng: [nn.Linear(6, 5), _bn(nn.BatchNorm1d, 5, rng, momentum=None, affine=False), nn.Linear(5, 3)],
        (8, 6),
        "cross_entropy",
        "sum",
        True,
    ),
    "batchnorm1d-ncl": (
        lambda rng: [nn.Flatten(2), _bn(nn.BatchNorm1d, 2, rng), nn.Flatten(), nn.Linear(18, 3)],
        (3, 2, 3, 3),
        "cross_entropy",
        "mean",
        True,
    ),
    "batchnorm2d-train": (
        lambda rng: [
            nn.Conv2d(2, 3, 3, padding=1),
            _bn(nn.BatchNorm2d, 3, rng),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(48, 3),
        ],
        (3, 2, 4, 4),
        "cross_entropy",
        "mean",
        True,
    ),
    "batchnorm2d-eval": (
        lambda rng: [
            nn.Conv2d(2, 3, 3, padding=1),
            _bn(nn.BatchNorm2d, 3, rng),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(48, 3),
        ],
        (3, 2, 4, 4),
        "cross_entropy",
        "mean",
        False,
    ),
    "batchnorm2d-no-running-stats": (
        lambda rng: [_bn(nn.BatchNorm2d, 2, rng, track_running_stats=False), nn.Flatten(), nn.Linear(32, 3)],
        (3, 2, 4, 4),
        "cross_entropy",
        "mean",
        False,
    ),
    "gelu-silu-softplus": (
        lambda rng: [
            nn.Linear(6, 5),
            nn.GELU(),
            nn.Linear(5, 5),
            nn.GELU("tanh"),
            nn.Linear(5, 4),
            nn.SiLU(),
            nn.Linear(4, 4),
            nn.Softplus(2.0, 1.0),
            nn.Linear(4, 4),
            nn.Softplus(),
            nn.Linear(4, 3),
        ],
        (6, 6),
        "cross_entropy",
        "mean",
        True,
    ),  # fmt: skip
    "layernorm-maps": (
        lambda rng: _maps(nn.Conv2d(2, 3, 3, padding=1), _ln([3, 4, 4], rng), features=48),
        (3, 2, 4, 4),
        "cross_entropy",
        "mean",
        True,
    ),
    "layernorm-no-bias-no-affine": (
        lambda rng: [
            nn.Linear(6, 5),
            _ln(5, rng, bias=False),
            nn.Linear(5, 4),
            _ln(4, rng, elementwise_affine=False, eps=0.1),
            nn.Linear(4, 3),
        ],
        (4, 6),
        "mse",
        "sum",
        True,
    ),  # fmt: skip
    "dropout2d-identity-eval": (
        lambda rng: _maps(nn.Conv2d(2, 3, 3), nn.Dropout2d(0.4), nn.Identity(), features=12),
        (3, 2, 4, 4),
        "cross_entropy",
        "mean",
        False,
    ),
    "conv-groups-dilation-stride": (
        lambda rng: _maps(
            nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2), features=144
        ),
        (2, 4, 6, 6),
        "cross_entropy",
        "mean",
        True,
    ),
    "conv-same-reflect-and-uneven-zeros": (
        lambda rng: _maps(
            nn.Conv2d(2, 3, (2, 3), padding="same", padding_mode="reflect"),
            nn.Conv2d(3, 2, (2, 4), padding="same"),
            features=40,
        ),
        (2, 2, 5, 4),
        "cross_entropy",
        "sum",
        True,
    ),
    "conv-replicate-circular-valid": (
        lambda rng: _maps(
            nn.Conv2d(2, 2, 3, stride=2, padding=(2, 1), padding_mode="replicate"),
            nn.Conv2d(2, 4, 2, padding=(1, 2), padding_mode="circular", groups=2, bias=False),
            nn.Conv2d(4, 2, 2, padding="valid"),
            features=48,
        ),
        (2, 2, 6, 7),
        "cross_entropy",
        "mean",
        True,
    ),
    "maxpool-dilation-ceil": (
        lambda rng: _maps(
            nn.Conv2d(2, 2, 1), nn.MaxPool2d(3, stride=2, padding=1, dilation=(2, 1), ceil_mode=True), features=24
        ),
        (2, 2, 7, 6),
        "cross_entropy",
        "mean",
        True,
    ),
    "maxpool-ceil-uneven": (
        lambda rng: _maps(nn.Conv2d(2, 2, 1), nn.MaxPool2d((2, 3), stride=2, ceil_mode=True), features=24),
        (2, 2, 7, 6),
        "cross_entropy",
        "mean",
        True,
    ),
    "avgpool-ceil-exclude-pad-divisor": (
        lambda rng: _maps(
            nn.Conv2d(2, 2, 1),
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            nn.AvgPool2d(2, ceil_mode=True, divisor_override=3),
            features=8,
        ),
        (2, 2, 7, 6),
        "cross_entropy",
        "mean",
        True,
    ),
    "adaptiveavg": (
        lambda rng: _maps(
            nn.Conv2d(2, 3, 1), nn.AdaptiveAvgPool2d((3, 2)), nn.AdaptiveAvgPool2d((None, 1)), features=9
        ),
        (2, 2, 5, 7),
        "cross_entropy",
        "mean",
        True,
    ),
    "cross_entropy-weight-ignore-smoothing": _loss_case(
        lambda: [nn.Linear(6, 5)],
        (6, 6),
        "cross_entropy",
        "mean",
        {"weight": WEIGHTS, "ignore_index": 2, "label_smoothing": 0.1, "target": [0, 2, 4, 1, 2, 3]},
    ),
    "cross_entropy-probabilities-weight-sum": _loss_case(
        lambda: [nn.Linear(6, 5)],
        (4, 6),
        "cross_entropy",
        "sum",
        {"weight": WEIGHTS, "label_smoothing": 0.2, "probabilities": True},
    ),
    "nll-weight-ignore-none": _loss_case(
        lambda: [nn.Linear(6, 5), nn.LogSoftmax()],
        (5, 6),
        "nll_loss",
        "none",
        {"weight": WEIGHTS, "ignore_index": 0, "target": [0, 1, 4, 0, 3]},
    ),
    "cross_entropy-maps-weight": _loss_case(
        lambda: [nn.Conv2d(2, 3, 1)], (2, 2, 3, 4), "cross_entropy", "mean", {"weight": WEIGHTS[:3]}
    ),
    "cross_entropy-maps-probabilities-none": _loss_case(
        lambda: [nn.Conv2d(2, 3, 1)], (2, 2, 2, 3), "cross_entropy", "none", {"probabilities": True}
    ),
    "nll-maps-ignore-sum": _loss_case(
        lambda: [nn.Conv2d(2, 3, 1), nn.LogSoftmax(dim=1)], (2, 2, 3, 4), "nll_loss", "sum", {"ignore_index": 1}
    ),
    "unbatched-convs-and-pools": (  # (C, H, W) input: the plain conv, ReLU and 2x2 pool unfused, then the references
        lambda rng: [
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 3, 2, padding=1, dilation=(1, 2), groups=3),
            nn.AvgPool2d(2, stride=1, padding=1),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d((2, 3)),
        ],
        (2, 6, 7),
        "mse",
        "sum",
        True,
    ),
}


def _python_step(model, x, target, loss, reduction, options):
    """Python's output, loss, dL/dx and parameter gradients for one forward and backward, dL/dloss_n = 1."""
    if "weight" in options:
        options = {**options, "weight": np.array(options["weight"], np.float32)}
    fn = {"cross_entropy": nn.CrossEntropyLoss, "nll_loss": nn.NLLLoss, "mse": nn.MSELoss}[loss](
        reduction=reduction, **options
    )
    out = model(x)
    value = fn(out, target)
    model.zero_grad()
    grad_input = model.backward(fn.backward(np.ones_like(value) if reduction == "none" else 1.0))
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out, np.asarray(value, np.float32), grad_input, grads


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layers_and_losses_give_the_same_outputs_and_gradients(case, tmp_path):
    build, shape, loss, reduction, training, *more = LAYER_CASES[case]
    options = dict(more[0]) if more else {}
    rng = np.random.default_rng(sorted(LAYER_CASES).index(case))
    handgrad.manual_seed(0)
    model = nn.Sequential(*build(rng))
    handgrad.save(model, tmp_path / "model.safetensors")
    x = rng.standard_normal(shape).astype(np.float32)
    n_out = model.eval()(x).shape  # eval: the running statistics stay as they are
    if loss == "mse":
        target = rng.standard_normal(n_out).astype(np.float32)
    elif options.pop("probabilities", False):
        target = nn.Softmax(dim=1)(rng.standard_normal(n_out).astype(np.float32))
    else:
        target = np.array(options.pop("target", rng.integers(0, n_out[1], n_out[:1] + n_out[2:])), np.int32)
    write_idx(tmp_path / "x.idx", x)
    write_idx(tmp_path / "y.idx", target)
    model.train(training)
    out, value, grad_input, grads = _python_step(model, x, target, loss, reduction, options)

    mode = [] if training else ["--eval"]
    loss_options = [] if "weight" not in options else ["--weight", ",".join(map(str, options["weight"]))]
    for key in ("ignore_index", "label_smoothing"):
        loss_options += [f"--{key.replace('_', '-')}", options[key]] if key in options else []
    run_cpp(
        "grad", tmp_path / "model.safetensors", "--inputs", tmp_path / "x.idx", "--targets", tmp_path / "y.idx",
        "--loss", loss, "--reduction", reduction, *loss_options, *mode, "--out", tmp_path / "cpp.safetensors",
    )  # fmt: skip
    cpp, _ = load_tensors(tmp_path / "cpp.safetensors")
    expected = {"output": out, "loss": value, "grad_input": grad_input}
    expected |= {f"grad.{name}": g for name, g in grads.items()}
    expected |= dict(model.named_buffers())  # the running statistics after the forward
    assert sorted(cpp) == sorted(expected)
    for name, want in expected.items():
        got = cpp[name]
        assert got.shape == np.shape(want), name
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        assert np.abs(got - want).max(initial=0) <= 1e-5 * scale, f"{case}: {name}: C++ {got}, Python {want}"


# -- every optimizer option: the same updates and state, bit for bit ---------------------------------
#: id -> (optimizer, keyword arguments)
OPTIMIZER_CASES = {
    "sgd-nesterov-weight_decay": ("sgd", {"lr": 0.1, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-2}),
    "sgd-dampening-maximize": ("sgd", {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "maximize": True}),
    "adam-amsgrad-betas-eps": (
        "adam",
        {"lr": 1e-2, "betas": [0.5, 0.9], "eps": 1e-6, "amsgrad": True},
    ),
    "adamw-maximize-amsgrad": ("adamw", {"lr": 1e-2, "betas": [0.5, 0.999], "maximize": True, "amsgrad": True}),
    "rmsprop-centered-momentum-maximize": (
        "rmsprop",
        {"lr": 1e-2, "alpha": 0.5, "centered": True, "momentum": 0.5, "maximize": True},
    ),  # lerp's second form (weight 1 - alpha >= 0.5), then its first
    "rmsprop-centered-alpha-eps": ("rmsprop", {"lr": 1e-2, "alpha": 0.8, "centered": True, "eps": 1e-4}),
    "rmsprop-weight_decay-momentum": ("rmsprop", {"lr": 1e-2, "weight_decay": 1e-2, "momentum": 0.9}),
    "adagrad-lr_decay-maximize": (
        "adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-8, "maximize": True},
    ),
}
OPTIMIZER_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
#: the state that decays into subnormals in the tests' tiny column (Adagrad's sum only grows)
DECAYING_STATE = {"sgd": "momentum_buffer", "adam": "exp_avg", "adamw": "exp_avg", "rmsprop": "grad_avg"}


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_options_update_as_python_bit_for_bit(case, tmp_path):
    """Twelve steps on the same gradients: the same parameters and state, bit for bit. The first
    column's parameters are 0 and get one tiny gradient, then none: their state decays into
    subnormals, which both set to zero on the eighth step."""
    name, options = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(sorted(OPTIMIZER_CASES).index(case))
    start = {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "a.bias": rng.standard_normal(4).astype(np.float32),
    }
    grads = {key: rng.standard_normal((12, *p.shape)).astype(np.float32) for key, p in start.items()}
    start["a.weight"][:, 0] = 0.0
    grads["a.weight"][:, :, 0] = 0.0
    grads["a.weight"][0, :, 0] = np.float32(1e-37)
    grads["a.bias"][5] = 0.0  # a step without gradient moves the state all the same
    save_tensors(tmp_path / "params.safetensors", start)
    save_tensors(tmp_path / "grads.safetensors", grads)

    params = {key: nn.Parameter(value.copy()) for key, value in start.items()}
    python_options = {k: tuple(v) if k == "betas" else v for k, v in options.items()}
    opt = getattr(optim, OPTIMIZER_CLASSES[name])(list(params.values()), **python_options)
    for step in range(12):
        for key, p in params.items():
            p.grad = grads[key][step]
        opt.step()
        decaying = opt.state[params["a.weight"]].get(DECAYING_STATE.get(name, ""))
        if step == 7 and decaying is not None:  # the flush reached the tiny column's decaying state
            assert (decaying[:, 0] == 0).all()

    run_cpp(
        "step", tmp_path / "params.safetensors", "--grads", tmp_path / "grads.safetensors", "--optimizer", name,
        "--options", json.dumps(options), "--out", tmp_path / "cpp.safetensors",
    )  # fmt: skip
    cpp, _ = load_tensors(tmp_path / "cpp.safetensors")
    expected = {key: p.data for key, p in params.items()}
    for key, p in params.items():
        expected |= {f"state.{key}.{k}": v for k, v in opt.state[p].items() if isinstance(v, np.ndarray) and v.ndim}
    assert sorted(cpp) == sorted(expected)
    for key, want in expected.items():
        assert cpp[key].dtype == want.dtype and np.array_equal(cpp[key], want), (
            f"{case}: {key}: C++ {cpp[key]}, Python {want}"
        )


def test_step_refuses_unknown_options_and_missing_gradients(tmp_path):
    save_tensors(tmp_path / "params.safetensors", {"w": np.zeros(3, np.float32)})
    save_tensors(tmp_path / "grads.safetensors", {"w": np.zeros((2, 3), np.float32)})
    args = ["step", tmp_path / "params.safetensors", "--grads", tmp_path / "grads.safetensors", "--out", tmp_path / "o"]
    result = run_cpp(*args, "--optimizer", "sgd", "--options", '{"lr": 0.1, "betas": [0.9, 0.99]}', check=False)
    assert result.returncode == 1
    assert result.stderr == "handgrad-cpp: error: argument --options: sgd takes no keyword 'betas'\n"
    result = run_cpp(*args, "--optimizer", "adam", "--options", '{"amsgrad": 1}', check=False)
    assert "adam amsgrad: expected true or false, got 1" in result.stderr
    save_tensors(tmp_path / "grads.safetensors", {"v": np.zeros((2, 3), np.float32)})
    result = run_cpp(*args, check=False)
    assert result.returncode == 1 and "no gradients for parameter 'w'" in result.stderr


# -- the same predictions on the 10,000 MNIST test images -----------------------------------------------
@pytest.mark.parametrize(
    "model_name, spec", [("mlp", "fc64-bn-fc32-elu-dropout0.1"), ("cnn", "conv8-bn-pool-conv16-bn-pool-fc32-bn")]
)
def test_same_predictions_on_the_mnist_test_set_with_batchnorm(model_name, spec, mnist, subset, tmp_path):
    """A model with BatchNorm trained briefly in Python (its running statistics moved), saved, then
    evaluated by both on all 10,000 test images."""
    index, norm = subset
    handgrad.manual_seed(4)
    model = build_model(layers=spec)
    loader = DataLoader(np.arange(2000), np.arange(2000), batch_size=BATCH, shuffle=True, seed=4)
    train_python(model, norm(mnist.train_images[index[:2000]]), mnist.train_labels[index[:2000]], [loader.order(0)])
    path = tmp_path / f"{model_name}.safetensors"
    meta = {**metadata(norm), "model": "custom", "layers": spec}
    handgrad.save(model, path, reference_inputs=norm(mnist.test_images[:2]), **meta)
    out = run_cpp("eval", path, "--logits", tmp_path / "logits.idx")
    assert f"reference outputs: all {len(model)} layers match" in out.stdout
    cpp_logits, py_logits = read_idx(tmp_path / "logits.idx"), python_logits(path, mnist)
    assert cpp_logits.shape == (10000, 10)
    assert (cpp_logits.argmax(axis=1) == py_logits.argmax(axis=1)).all()
    assert np.abs(cpp_logits - py_logits).max() < 1e-4 * max(1.0, np.abs(py_logits).max())


# -- the CLI: --help, info, --hidden, --layers ---------------------------------------------------------
def python_cli(*args):
    """``handgrad ARGS`` in a separate process: what a user's shell runs."""
    return subprocess.run(
        [sys.executable, "-m", "handgrad", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def python_main(capsys, *args) -> subprocess.CompletedProcess:
    """``handgrad ARGS`` through the CLI's ``main`` in this process (argparse's exit as the return
    code), for the comparisons that need its output, not a fresh interpreter."""
    from handgrad.app.cli import main

    capsys.readouterr()  # what came before is not this command's
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["handgrad", *map(str, args)], code, out, err)


@pytest.mark.parametrize(
    "command, options",
    [
        ("train", ["--dataset", "--model", "--hidden", "--activation", "--layers", "--epochs", "--batch-size",
                   "--optimizer", "--lr", "--momentum", "--weight-decay", "--schedule", "--loss", "--reduction",
                   "--seed", "--train-size", "--val-fraction", "--data-dir", "--out", "--quiet", "--no-bias",
                   "--init", "--threads"]),
        ("eval", ["--dataset", "--data-dir", "--top-k", "--json"]),
        ("predict", ["--top-k", "--json"]),
        ("info", []),
        ("bench", ["--model", "--batch-size", "--steps", "--inference"]),
        ("grad", ["--inputs", "--targets", "--loss", "--reduction", "--weight", "--ignore-index", "--label-smoothing",
                  "--eval", "--out"]),
        ("step", ["--grads", "--optimizer", "--options", "--out"]),
    ],
)  # fmt: skip
def test_every_command_has_its_help(command, options):
    result = run_cpp(command, "--help")
    assert result.stdout.startswith(f"usage: handgrad-cpp {command} [-h]")
    assert "-h, --help" in result.stdout
    for option in options:  # the options it shares with the Python command, each described
        assert f"\n  {option} " in result.stdout, option
    assert run_cpp(command, "-h").stdout == result.stdout
    top = run_cpp("--help").stdout
    assert f"\n  {command} " in top


def test_unknown_option_names_the_command_and_its_help():
    result = run_cpp("info", "--nope", "x.safetensors", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "handgrad-cpp: error: handgrad-cpp info: unrecognized arguments: --nope (see handgrad-cpp info --help)\n"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "fc32-tanh",
        "conv4-bn-pool-fc16-elu-bn-dropout0.2",
        "conv3k5s2p1nb-avgpool3s1p1-fc8-leaky_relu0.2-out-sigmoid",
        "conv4-conv8k3d2x1g4-gelu-adaptiveavg3x2-ln-fc16-softplus-dropout0.2-out-silu",
    ],
)
def test_info_prints_what_python_info_prints(spec, tmp_path, capsys):
    handgrad.manual_seed(1)
    model = build_model(layers=spec)
    path = tmp_path / "model.safetensors"
    norm = Normalizer(0.1307, 0.3081)
    handgrad.save(model, path, **{**metadata(norm), "model": "custom", "layers": spec})
    py = python_main(capsys, "info", path)
    assert py.returncode == 0, py.stderr
    assert run_cpp("info", path).stdout == py.stdout


def test_info_shows_every_layer_option_as_python_does(tmp_path):
    """Options no spec token sets (padding names and modes, pooling's ceil_mode and divisors, ...)."""
    handgrad.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, (2, 3), padding="same", padding_mode="reflect"),
        nn.Conv2d(4, 4, 3, padding=(1, 2), dilation=(1, 2), groups=2, padding_mode="circular", bias=False),
        nn.Dropout2d(0.25),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
        nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, divisor_override=3),
        nn.Conv2d(4, 4, 2, padding="valid"),
        nn.AdaptiveAvgPool2d((None, 2)),
        nn.Identity(),
        nn.LayerNorm([6, 2], eps=1e-3, bias=False),
        nn.Flatten(),
        nn.Linear(48, 10),
        nn.Softplus(beta=0.5, threshold=10),
        nn.GELU("tanh"),
    )
    path = tmp_path / "model.safetensors"
    handgrad.save(model, path, **{**metadata(Normalizer(0.1307, 0.3081)), "model": "custom"})
    py = python_cli("info", path)
    assert py.returncode == 0, py.stderr
    assert run_cpp("info", path).stdout == py.stdout


#: Specs whose every token is well formed but some token is not; the C++ message is Python's.
BAD_SPECS = [
    "conv", "conv8k", "conv8q3", "conv8k3k5", "convk5", "maxpool3s2p1nb", "pool2x", "fc10-none-none",
    "out-fc10", "dropout1.5", "dropoutx", "relu6", "elu0.5", "tanh-fc10", "bn3", "out5", "fc0", "fc99999999999",
    "convv8", "xyz", "maxpol2", "sigmod", "maxpool0", "conv8p", "conv8d0", "conv8g", "conv8g2x2", "conv8d2d2",
    "conv8k3d2xg", "adaptiveavg", "adaptiveavg0", "adaptiveavg2nb", "adaptive3", "ln2", "lnx", "layernorm",
    "gelu0.5", "softplus2",
]  # fmt: skip


def python_spec_error(call) -> str:
    try:
        call()
    except ValueError as e:
        return str(e)
    raise AssertionError("Python accepted the spec")


def without_activation_list(message: str) -> str:
    """The message with the list of known activations blanked (the Python core may register more)."""
    import re

    return re.sub(r"an activation \([^)]*\)", "an activation (...)", message)


def test_spec_grammar_and_activations_are_pythons():
    """The grammar's words, and the activations handgrad itself defines (other tests register more)."""
    from handgrad.models import spec_grammar

    result = run_cpp("train", "--layers", "xyz", check=False)
    assert without_activation_list(result.stderr).endswith(without_activation_list(f"expected {spec_grammar()}\n"))
    own = sorted(
        name
        for name, cls in nn.ACTIVATIONS.items()
        if cls.__module__ == "handgrad.nn.activation" and not issubclass(cls, nn.activation.ElementwiseActivation)
    )
    assert result.stderr.endswith(f"an activation ({', '.join(own)})\n")


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_layer_spec_errors_use_python_words(spec):
    from handgrad.models import tokenize_layer_spec

    expected = python_spec_error(lambda: tokenize_layer_spec(spec))
    result = run_cpp("train", "--layers", spec, check=False)  # refused before any data is read
    assert result.returncode == 1
    assert without_activation_list(result.stderr) == without_activation_list(f"handgrad-cpp: error: {expected}\n")


#: Specs that tokenize but do not fit 28x28 MNIST images.
BAD_SHAPES = [
    "conv8-pool-pool-pool-pool-pool-pool", "fc10-conv8", "maxpool3p2", "fc10-pool", "conv8k29p0", "conv8g3",
    "fc10-adaptiveavg2", "conv8k5d10p0", "conv4-conv6g4",
]  # fmt: skip


@needs_mnist
@pytest.mark.parametrize("spec", BAD_SHAPES)
def test_layer_spec_shape_errors_use_python_words(spec, small_mnist, tmp_path):
    from handgrad.models import parse_layer_spec

    expected = python_spec_error(lambda: parse_layer_spec(spec, (1, 28, 28), 10))
    result = run_cpp(
        "train", "--dataset", "mnist", "--data-dir", small_mnist, "--layers", spec, "--out", tmp_path, check=False
    )
    assert result.returncode == 1
    assert result.stderr == f"handgrad-cpp: error: {expected}\n"


def _cpp_train_one_step(tmp_path, data_dir, *args):
    """One C++ step of training on 200 images of ``data_dir``'s MNIST into ``tmp_path``, loaded back."""
    run_cpp(
        "train", "--dataset", "mnist", "--data-dir", data_dir, "--train-size", 200, "--epochs", 1, "--max-steps", 1,
        "--quiet", "--out", tmp_path, *args,
    )  # fmt: skip
    return handgrad.load(tmp_path / "last.safetensors")


SPECS = ["conv8k5s1p2-maxpool3s2p1-fc120-sigmoid", "conv4-bn-pool-fc16-none-bn-dropout-out-sigmoid",
         "conv6nb-avgpool-fc10nb-leaky_relu0.2-outnb",
         "conv4-conv8k3d2g2-gelu-adaptiveavg3x2-ln-fc16-silu-ln-out-softplus"]  # fmt: skip


@needs_mnist
@pytest.mark.parametrize(
    "args, python",
    [(["--layers", spec], {"layers": spec}) for spec in SPECS]
    + [
        (["--hidden", "32,16", "--activation", "tanh"], {"hidden": [32, 16], "activation": "tanh"}),
        (["--hidden", "24", "--activation", "elu"], {"hidden": [24], "activation": "elu"}),
        (["--hidden", "24,12", "--activation", "gelu"], {"hidden": [24, 12], "activation": "gelu"}),
        (["--no-bias", "--layers", SPECS[3]], {"layers": SPECS[3], "bias": False}),
    ],
)
def test_hidden_and_layers_build_the_python_architecture(args, python, small_mnist, tmp_path):
    from handgrad.models import architecture

    model = _cpp_train_one_step(tmp_path, small_mnist, *args)  # Python loads it strictly
    assert architecture(model) == architecture(build_model(**python))
    assert model.metadata["model"] == "custom"
    assert model.metadata.get("layers") == python.get("layers")


@needs_mnist
def test_no_bias_drops_every_bias_of_a_named_model_as_python(small_mnist, tmp_path):
    from handgrad.models import architecture

    model = _cpp_train_one_step(tmp_path, small_mnist, "--model", "lenet5", "--no-bias")  # Python loads it strictly
    assert architecture(model) == architecture(build_model("lenet5", bias=False))
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["bias"] is False


@needs_mnist
@pytest.mark.parametrize(
    "init, std",
    [("kaiming_uniform", np.sqrt(2 / 784)), ("xavier_normal", np.sqrt(2 / (784 + 128))), ("normal", 0.01)],
)
def test_init_draws_the_python_schemes(init, std, small_mnist, tmp_path):
    """--init NAME: the first Linear's weight (784 -> 128) has the scheme's spread, every bias is 0
    (an lr of 0 leaves the initial weights), and the manifest names the scheme as the Python's."""
    model = _cpp_train_one_step(tmp_path, small_mnist, "--model", "mlp-small", "--init", init, "--lr", 0)
    parameters = dict(model.named_parameters())
    weight = parameters["1.weight"].data
    assert weight.shape == (128, 784) and abs(weight.std() / std - 1) < 0.02 and abs(weight.mean()) < 0.05 * std
    assert all(not p.data.any() for name, p in parameters.items() if name.endswith("bias"))
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["init"] == init


def test_threads_refuses_a_bad_count_in_python_words(capsys):
    result = run_cpp("train", "--threads", "0", check=False)
    message = "argument --threads: expected a positive number of threads, got '0'"
    assert result.returncode == 1 and result.stderr == f"handgrad-cpp: error: {message}\n"
    assert message in python_main(capsys, "train", "--threads", "0").stderr


@needs_mnist
def test_threads_sizes_the_pool(small_mnist, tmp_path):
    _cpp_train_one_step(tmp_path, small_mnist, "--threads", 1)
    assert json.loads((tmp_path / "manifest.json").read_text())["environment"]["threads"] == 1


@pytest.mark.parametrize("custom", [["--hidden", "32"], ["--layers", "fc16"], ["--no-bias"]])
def test_init_checkpoint_refuses_another_architecture(custom, tmp_path):
    result = run_cpp("train", "--init", tmp_path / "start.safetensors", *custom, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "handgrad-cpp: error: train: --init takes the checkpoint's architecture: give no --hidden, --layers or "
        "--no-bias with it\n"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("a,b", "argument --hidden: expected comma-separated integers, got 'a,b'"),
        ("0,16", "argument --hidden: expected comma-separated sizes from 1 to 1048576, got '0,16'"),
        (",", "argument --hidden: expected comma-separated sizes from 1 to 1048576, got ','"),
    ],
)
def test_hidden_errors_use_python_words(value, message, capsys):
    py = python_main(capsys, "train", "--hidden", value)
    assert py.returncode == 2 and py.stderr.rstrip().endswith(f"error: {message}")
    result = run_cpp("train", "--hidden", value, check=False)
    assert result.returncode == 1 and result.stderr == f"handgrad-cpp: error: {message}\n"


# -- a run folder that `handgrad report` reads -----------------------------------------------------------
@needs_mnist
def test_report_and_python_read_a_cpp_run(mnist, tmp_path):
    import csv

    run = tmp_path / "run"
    run_cpp(
        "train", "--dataset", "mnist", "--layers", "conv4-bn-pool-fc16", "--train-size", 600, "--epochs", 2,
        "--batch-size", 32, "--reduction", "sum", "--lr", 0.002, "--quiet", "--out", run, "--data-dir", DATA,
    )  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["layers"] == "conv4-bn-pool-fc16" and manifest["config"]["reduction"] == "sum"
    assert manifest["data"]["sizes"] == {"train": 600, "val": 67, "test": 10000}  # Python's validation_size
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    assert list(history["epochs"][0]) == [
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
        "samples_per_s", "val_top5_acc", "test_top5_acc",
    ]  # fmt: skip
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [{k: float(v) for k, v in r.items()} for r in rows] == history["epochs"]
    assert (run / "steps.csv").read_text().startswith("step,epoch,loss,acc\n1,1,")

    report = python_cli("report", run, "--data-dir", DATA)
    assert report.returncode == 0, report.stderr
    assert "test accuracy (best)" in (run / "report.html").read_text()
    # the BatchNorm statistics the C++ saved: Python predicts the same on every test image
    run_cpp("eval", run / "best.safetensors", "--logits", tmp_path / "logits.idx")
    assert (
        read_idx(tmp_path / "logits.idx").argmax(axis=1)
        == python_logits(run / "best.safetensors", mnist).argmax(axis=1)
    ).all()


# -- architectures the twin cannot compute are refused, naming the file, the layer and the argument -----
NOT_SUPPORTED = "is not supported by the C++ port"


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda arch: arch[2].update(return_indices=True),
            f"entry 2 (MaxPool2d): argument 'return_indices' = true {NOT_SUPPORTED} (only its default false)",
        ),
        (
            lambda arch: arch[0].update(groups=2),
            "entry 0 (Conv2d): 'groups' must be an integer >= 1 dividing in_channels 1 and out_channels 4, got 2",
        ),
        (
            lambda arch: arch[0].update(padding_mode="mirror"),
            "entry 0 (Conv2d): 'padding_mode' must be 'zeros', 'reflect', 'replicate' or 'circular', got \"mirror\"",
        ),
        (
            lambda arch: arch[0].update(padding="full"),
            "entry 0 (Conv2d): 'padding' must be 'same', 'valid', an integer >= 0 or a pair of them, got \"full\"",
        ),
        (lambda arch: arch[1].update(type="Hardswish"), f"entry 1 (Hardswish): layer type Hardswish {NOT_SUPPORTED}"),
        (
            lambda arch: arch.insert(4, {"type": "LayerNorm", "normalized_shape": [8], "elementwise_affine": "yes"}),
            "entry 4 (LayerNorm): 'elementwise_affine' must be true or false, got \"yes\"",
        ),
        (
            lambda arch: arch.insert(3, {"type": "AdaptiveAvgPool2d", "output_size": [1, 2, 3]}),
            "entry 3 (AdaptiveAvgPool2d): 'output_size' must be an integer from 0 to 1048576 or a pair of them",
        ),
        (
            lambda arch: arch[2].update(divisor_override=0, type="AvgPool2d"),
            "entry 2 (AvgPool2d): 'divisor_override' must be null or a nonzero integer, got 0",
        ),
        (lambda arch: arch[4].update(approximate="tanh"), "entry 4 (Linear): unexpected argument 'approximate'"),
    ],
)
def test_unknown_layer_types_and_arguments_are_refused(change, words, tmp_path):
    handgrad.manual_seed(2)
    path = tmp_path / "model.safetensors"
    handgrad.save(build_model(layers="conv4-pool-fc8"), path)
    tensors, raw = load_tensors(path)
    arch = json.loads(raw["architecture"])
    change(arch)
    save_tensors(path, tensors, {**raw, "architecture": json.dumps(arch)})
    for command in ("info", "eval"):
        result = run_cpp(command, path, check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"handgrad-cpp: error: {path}: metadata 'architecture': {words}")


def test_defaults_python_spells_out_are_accepted(tmp_path):
    handgrad.manual_seed(3)
    model = build_model(layers="conv4-pool-fc8")
    path = tmp_path / "model.safetensors"
    handgrad.save(model, path)
    tensors, raw = load_tensors(path)
    arch = json.loads(raw["architecture"])
    arch[0].update(dilation=[1, 1], groups=1, padding_mode="zeros")
    arch[2].update(ceil_mode=False, dilation=1)
    save_tensors(path, tensors, {**raw, "architecture": json.dumps(arch)})
    assert "MaxPool2d(kernel_size=2, stride=2, padding=0)" in run_cpp("info", path).stdout


@needs_mnist
def test_cpp_train_refuses_a_folder_holding_another_run_unless_overwrite(small_mnist, tmp_path):
    """As the Python's train: a run folder is never written over silently; --overwrite replaces the
    run's own files (and a leftover temporary) and leaves other files alone."""
    _cpp_train_one_step(tmp_path, small_mnist)
    before = (tmp_path / "last.safetensors").read_bytes()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".history.json.tmp").write_text("left by a killed run")
    result = run_cpp(
        "train", "--dataset", "mnist", "--data-dir", small_mnist, "--train-size", 200, "--epochs", 1, "--max-steps",
        1, "--quiet", "--seed", 1, "--out", tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"handgrad-cpp: error: {tmp_path}: holds another run (manifest.json, ")
    assert result.stderr.rstrip().endswith("replace it with --overwrite, or choose another --out")
    assert (tmp_path / "last.safetensors").read_bytes() == before  # untouched
    _cpp_train_one_step(tmp_path, small_mnist, "--seed", "1", "--overwrite")
    assert (tmp_path / "last.safetensors").read_bytes() != before
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / ".history.json.tmp").exists()
