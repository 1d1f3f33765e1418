import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import train_argv

import handgrad
from handgrad.app.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_argv(out, model="mlp-small", epochs=2)) == 0
    return out


def test_train_prints_epoch_lines_and_where_the_run_went(run_dir, capsys, tmp_path):
    code = main(train_argv(tmp_path / "r"))
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch 1/1  train loss" in out and "val loss" in out
    assert f"run directory: {tmp_path / 'r'}" in out


def test_train_shows_the_model_table_unless_quiet(capsys, tmp_path):
    main(
        [
            "train",
            "--dataset",
            "digits",
            "--hidden",
            "32,16",
            "--activation",
            "tanh",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
        ]
    )
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "missing.safetensors"], "no such checkpoint file"),
        (["info", "missing.safetensors"], "no such checkpoint file"),
        (["predict", "missing.safetensors", "x.png"], "no such checkpoint file"),
        (["train", "--dataset", "nosuchset", "--epochs", "1"], "nosuchset"),
    ],
)
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
    result = subprocess.run(
        [sys.executable, "-m", "handgrad", "eval", "nope.safetensors"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr


# -- runs: signals, concurrent runs, file modes, threads ------------------------------------------------
def handgrad_command(*args):
    return [sys.executable, "-m", "handgrad", *args]


def child_env():
    import os

    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def folder_bytes(folder):
    """Every file's bytes but the lock's (which holds the id of the process that locked it last)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize(
    "signum, code, said", [("SIGINT", 130, "handgrad: interrupted"), ("SIGTERM", 143, "handgrad: terminated")]
)
def test_a_signal_saves_the_state_between_two_steps_and_resume_continues(tmp_path, signum, code, said):
    import signal

    from handgrad.app.training import TrainConfig, read_resume_metadata, train

    run = tmp_path / "run"
    child = subprocess.Popen(
        handgrad_command(
            "train",
            "--dataset",
            "digits",
            "--model",
            "tiny-mlp",
            "--schedule",
            "none",
            "--epochs",
            "100000",
            "--quiet",
            "--out",
            str(run),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    for line in child.stdout:  # training has started once an epoch line is printed
        if line.startswith("epoch "):
            break
    child.send_signal(getattr(signal, signum))
    out, err = child.communicate(timeout=120)
    assert child.returncode == code, err
    assert err.strip() == said and "Traceback" not in err
    assert f"state saved. Continue with: handgrad train --resume {run}" in out
    meta = read_resume_metadata(run)
    epochs = meta["epoch"] + 1
    assert main(["train", "--resume", str(run), "--epochs", str(epochs), "--quiet"]) == 0
    straight = train(
        TrainConfig(dataset="digits", model="tiny-mlp", schedule="none", epochs=epochs, out=str(tmp_path / "straight")),
        progress=False,
        log=lambda *_: None,
    )
    resumed = handgrad.load(run / "last.safetensors").state_dict()
    assert all(np.array_equal(v, resumed[k]) for k, v in straight.model.state_dict().items())


@pytest.mark.parametrize("existing", [False, True])
def test_two_trains_into_one_folder_at_once_one_error_line_or_a_whole_run(tmp_path, existing):
    run = tmp_path / "run"
    if existing:
        assert main(train_argv(run, "--seed", "7")) == 0
    before = folder_bytes(run) if existing else None
    children = [
        subprocess.Popen(
            handgrad_command(
                "train",
                "--dataset",
                "digits",
                "--model",
                "tiny-mlp",
                "--epochs",
                str(epochs),
                "--seed",
                str(seed),
                "--quiet",
                "--out",
                str(run),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for seed, epochs in ((1, 3), (2, 4))
    ]
    results = [(c.returncode, err) for c in children for _, err in [c.communicate(timeout=300)]]
    for code, err in results:
        assert "Traceback" not in err
        if code != 0:
            assert code == 1 and err.startswith("handgrad: error:") and err.count("\n") == 1, err
            assert "another handgrad run" in err or "holds another run" in err, err
    winners = [i for i, (code, _) in enumerate(results) if code == 0]
    if existing:
        assert winners == [] and folder_bytes(run) == before
        return
    assert len(winners) == 1
    seed, epochs = ((1, 3), (2, 4))[winners[0]]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["seed"] == seed and manifest["config"]["epochs"] == epochs
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())["epochs"]] == list(range(1, epochs + 1))
    assert handgrad.load(run / "last.safetensors").metadata["epoch"] == epochs
    assert handgrad.load(run / "best.safetensors").metadata["epoch"] <= epochs


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_written_respect_the_umask(tmp_path, umask, mode):
    import os

    previous = os.umask(umask)
    try:
        assert main(train_argv(tmp_path / "run")) == 0
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert set(modes) >= {
        ".lock",
        "manifest.json",
        "best.safetensors",
        "last.safetensors",
        "resume.safetensors",
        "history.json",
        "history.csv",
        "curves.png",
    }
    assert modes == {name: mode for name in modes}


def test_replacing_a_file_keeps_its_mode(tmp_path):
    from handgrad.files import atomic_write_text

    path = tmp_path / "kept.json"
    atomic_write_text(path, "{}")
    path.chmod(0o640)
    atomic_write_text(path, '{"a": 1}')
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]  # no temporary file left


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--dataset", "digits", "--epochs", "1"],
        ["eval", "run/best.safetensors"],
        ["predict", "run/best.safetensors", "x.png"],
        ["compare", "tiny-mlp"],
        ["sweep", "--lr", "0.1"],
        ["explain", "--model", "tiny-mlp"],
    ],
)
def test_threads_limits_blas_and_handgrad_for_the_command(argv, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from handgrad.app import cli

    seen = {}

    def record(args):
        seen["handgrad"] = handgrad.get_num_threads()
        seen["blas"] = {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
        return 0

    before = handgrad.get_num_threads()
    monkeypatch.setitem(cli.COMMANDS, argv[0], record)
    assert main(argv + ["--threads", "1"]) == 0
    assert seen["handgrad"] == 1 and seen["blas"] <= {1}
    assert handgrad.get_num_threads() == before  # put back afterwards


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_a_positive_count(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--threads", value])
    assert exit_.value.code == 2 and "expected a positive number of threads" in capsys.readouterr().err


def test_resume_with_a_conflicting_option_is_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_argv(run)) == 0
    before = folder_bytes(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.5", "--seed", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error:") and err.count("\n") == 1
    assert "--lr 0.5 differs from the run being resumed (lr 0.05)" in err
    assert folder_bytes(run) == before
    # the same seed is fine
    assert main(["train", "--resume", str(run), "--epochs", "2", "--seed", "0", "--quiet"]) == 0
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2
