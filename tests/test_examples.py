"""The PyTorch-bridge examples train on an MNIST subset to the accuracy their docstrings state
(5,000 training images, 1 epoch, the first 2,000 test images)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import handgrad.data  # noqa: E402
from handgrad.errors import HandgradError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SUBSET = ["--epochs", "1", "--train-size", "5000", "--test-size", "2000"]


@pytest.fixture(scope="module")
def mnist_available():
    try:
        handgrad.data.load_dataset("mnist", download=False, progress=False)
    except HandgradError as e:
        pytest.skip(f"MNIST not found (set HANDGRAD_DATA_DIR to a folder holding mnist/; tests never download): {e}")


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.data
@pytest.mark.parametrize("name, threshold", [
    pytest.param("one_layer_mnist", 0.80, id="one-layer"),   # measured 85.5% on this subset
    pytest.param("custom_cnn_mnist", 0.80, id="custom-cnn"),  # measured 86.3% on this subset
])
def test_example_trains_to_its_stated_accuracy_on_a_subset(name, threshold, mnist_available, capsys):
    accuracy = load_example(name).main(SUBSET)
    assert accuracy >= threshold, f"{name}: test accuracy {accuracy:.2%} < {threshold:.0%}"
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["one_layer_mnist", "custom_cnn_mnist"])
def test_example_flags(name):
    args = load_example(name).parse_args(["--data-dir", "/d", "--epochs", "2", "--train-size", "100"])
    assert (args.data_dir, args.epochs, args.train_size) == ("/d", 2, 100)


class _Recorder:
    """Wraps a loss (a callable returning a torch scalar) and keeps (loss, batch size) per call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, output, target, *args):
        loss = self.fn(output, target, *args)
        self.calls.append((loss.item(), len(target)))
        return loss


@pytest.mark.data
@pytest.mark.parametrize("name", ["one_layer_mnist", "custom_cnn_mnist"])
def test_example_prints_the_epochs_mean_loss_not_the_last_batchs(name, mnist_available, capsys, monkeypatch):
    module = load_example(name)
    if name == "one_layer_mnist":
        recorder = _Recorder(module.CrossEntropyFunction.apply)
        monkeypatch.setattr(module, "CrossEntropyFunction", type("Recorded", (), {"apply": staticmethod(recorder)}))
    else:
        recorder = _Recorder(module.ht.CrossEntropyLoss())
        monkeypatch.setattr(module.ht, "CrossEntropyLoss", lambda: recorder)
    module.main(["--epochs", "1", "--train-size", "300", "--test-size", "100", "--batch-size", "64"])
    losses, sizes = zip(*recorder.calls)
    printed = float(capsys.readouterr().out.split("mean train loss ")[1].split(",")[0])
    assert printed == pytest.approx(sum(v * n for v, n in recorder.calls) / sum(sizes), abs=5e-5)
    assert printed != pytest.approx(losses[-1], abs=5e-5)
