"""The five tutorials' example scripts, each run on an MNIST subset for one or two epochs (a few
seconds each); skipped, with the reason, where MNIST is absent. Their full-run numbers are in the
README's table "The five tutorials"."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import handgrad.data
from handgrad.errors import HandgradError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CPP = Path(__file__).resolve().parent.parent / "cpp" / "build" / "handgrad-cpp"
SCRIPTS = ["one_layer_mnist", "custom_cnn_mnist", "linear_function_chain", "mlp_cpp_roundtrip", "sigmoid_mse_topk"]


@pytest.fixture(scope="module")
def mnist_available():
    try:
        handgrad.data.load_dataset("mnist", download=False, progress=False)
    except HandgradError as e:
        pytest.skip(f"MNIST not found (set HANDGRAD_DATA_DIR to a folder holding mnist/; tests never download): {e}")


@pytest.fixture
def one_thread():
    """One thread for torch, BLAS and handgrad: the examples are small and the machine is shared."""
    from handgrad.app.training import limited_threads

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with limited_threads(1):
        yield
    torch.set_num_threads(threads)


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def epoch_lines(out):
    return [line for line in out.splitlines() if "epoch" in line and "mean loss" in line]


@pytest.mark.data
def test_one_layer_functions_train_on_one_hot_targets(mnist_available, one_thread, capsys):
    accuracy = load_example("one_layer_mnist").main(["--subset", "5000", "--epochs", "1"])
    out = capsys.readouterr().out
    assert accuracy >= 0.80, f"test accuracy {accuracy:.2%} < 80% (measured 85.9%)"
    gradient_error = float(out.split("gradient on one batch: ")[1].split()[0])
    assert gradient_error < 1e-5
    assert len(epoch_lines(out)) == 1


@pytest.mark.data
@pytest.mark.parametrize("activation", ["relu", "swish"])
def test_matched_cnn_and_mlp_give_per_step_curves(activation, mnist_available, one_thread, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    results = load_example("custom_cnn_mnist").main(
        ["--subset", "2000", "--epochs", "1", "--activation", activation, "--plot", str(plot)]
    )
    assert (results["cnn"]["parameters"], results["mlp"]["parameters"]) == (11_146, 12_730)
    for kind in ("cnn", "mlp"):
        steps, means = results[kind]["steps"], results[kind]["epoch_means"]
        assert len(steps) == 32 and len(means) == 1  # 2,000 images in batches of 64
        assert sum(steps[-5:]) / 5 < steps[0]
        assert results[kind]["test_accuracy"] > 0.5
    assert plot.stat().st_size > 10_000
    assert len(epoch_lines(capsys.readouterr().out)) == 2


@pytest.mark.data
def test_manual_chain_matches_autograd_and_the_mlp_trains(mnist_available, one_thread, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    result = load_example("linear_function_chain").main(["--subset", "2000", "--epochs", "2", "--stats", str(stats)])
    assert result["gradcheck"] is True
    assert result["max_rel_error"] < 1e-12
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["test_acc"] > 0.7
    assert stats.read_text().count('"train_loss"') == 2
    assert len(epoch_lines(capsys.readouterr().out)) == 2


@pytest.mark.data
def test_python_and_cpp_round_trip(mnist_available, one_thread, tmp_path, capsys):
    result = load_example("mlp_cpp_roundtrip").main(["--subset", "2000", "--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert result["python"] > 0.7
    if not CPP.is_file():
        assert result["cpp_of_python"] is None and f"skipped: no C++ program at {CPP}" in out
        pytest.skip(f"the C++ half needs {CPP} (make cpp); the Python half passed")
    assert result["cpp_of_python"] == result["python"]
    assert result["python_of_cpp"] == result["cpp_trained"] > 0.7


@pytest.mark.data
def test_sigmoid_mse_hand_backprop_and_top_k(mnist_available, one_thread, capsys):
    result = load_example("sigmoid_mse_topk").main(["--subset", "3000", "--epochs", "2"])
    assert result["parameters"] == 79_400
    assert result["gradient_error"] < 1e-12
    losses, top = result["epoch_losses"], result["top_k"]
    assert losses[1] < losses[0]
    assert top[1] <= top[3] <= top[5] and top[1] > 0.5 and top[5] > 0.9
    assert len(epoch_lines(capsys.readouterr().out)) == 2


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_example_takes_data_dir_subset_and_epochs(name):
    args = load_example(name).parse_args(["--data-dir", "/d", "--subset", "100", "--epochs", "2"])
    assert (args.data_dir, args.subset, args.epochs) == ("/d", 100, 2)
    assert (EXAMPLES / f"{name}.py").read_text().count("mean loss") >= 1
