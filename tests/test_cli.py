import json
import subprocess
import sys

import numpy as np
import pytest

from handgrad.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--dataset", "digits", "--model", "mlp-small", "--epochs", "2", "--quiet",
                 "--out", str(out)]) == 0
    return out


def test_train_prints_epoch_lines_and_where_the_run_went(run_dir, capsys, tmp_path):
    code = main(["train", "--dataset", "digits", "--model", "tiny-mlp", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch 1/1  train loss" in out and "val loss" in out
    assert f"run directory: {tmp_path / 'r'}" in out


def test_train_shows_the_model_table_unless_quiet(capsys, tmp_path):
    main(["train", "--dataset", "digits", "--hidden", "32,16", "--activation", "tanh", "--epochs", "1",
          "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "Tanh()" in out and "total" in out


def test_eval_json(run_dir, capsys):
    assert main(["eval", str(run_dir / "best.safetensors"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.5 < result["accuracy"] <= 1.0
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == result["samples"]
    assert abs(np.trace(matrix) / matrix.sum() - result["accuracy"]) < 1e-12
    assert set(result["per_class_accuracy"]) == {str(i) for i in range(10)}


def test_eval_text(run_dir, capsys):
    assert main(["eval", str(run_dir / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "top-5" in out


def test_predict_reads_a_dark_on_light_png(run_dir, capsys, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = int(np.flatnonzero(digits.target == 3)[-1])
    image = 255 - (digits.images[index] * 255 / 16).astype(np.uint8)  # dark digit on white paper
    Image.fromarray(image).resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / "three.png")
    assert main(["predict", str(run_dir / "best.safetensors"), str(tmp_path / "three.png"), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["class"] == "3"
    assert abs(sum(t["probability"] for t in result["top"]) - 1) < 1.0  # top-3 of a distribution


def test_info(run_dir, capsys):
    assert main(["info", str(run_dir / "best.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "dataset: digits" in out and "Linear(in_features=64, out_features=128" in out


def test_datasets(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "mnist" in out and "fashion-mnist" in out


@pytest.mark.parametrize("argv, message", [
    (["eval", "missing.safetensors"], "no such checkpoint file"),
    (["info", "missing.safetensors"], "no such checkpoint file"),
    (["predict", "missing.safetensors", "x.png"], "no such checkpoint file"),
    (["train", "--dataset", "nosuchset", "--epochs", "1"], "nosuchset"),
])
def test_errors_are_one_line_with_non_zero_exit(argv, message, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error:") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_predict_unreadable_image(run_dir, capsys, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["predict", str(run_dir / "best.safetensors"), str(tmp_path / "bad.png")]) == 1
    assert "bad.png: cannot read the image" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "predict", "info", "datasets"])
def test_help_for_every_command(command):
    result = subprocess.run([sys.executable, "-m", "handgrad", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: handgrad " + command in result.stdout


def test_console_script_exit_code_on_error():
    result = subprocess.run([sys.executable, "-m", "handgrad", "eval", "nope.safetensors"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
