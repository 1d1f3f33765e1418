"""handgrad compare and sweep on digits, one epoch of tiny models: files, tables, resuming."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from handgrad.app.cli import main  # noqa: E402
from handgrad.app.compare import compare, run_is_complete  # noqa: E402
from handgrad.app.sweep import grid_points, parse_values, run_name, sweep  # noqa: E402


def test_compare_trains_each_model_and_writes_figure_and_table(tmp_path):
    log = []
    rows = compare(["tiny-mlp", "linear"], out=tmp_path, log=log.append, dataset="digits", epochs=1)
    assert [r.model for r in rows] == ["tiny-mlp", "linear"]
    assert all(0.3 < r.best_test_acc <= 1 and r.best_epoch == 1 and r.parameters > 0 for r in rows)
    assert rows[1].parameters == 64 * 10 + 10
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    table = (tmp_path / "compare.md").read_text()
    assert "| tiny-mlp |" in table and "seconds / epoch" in table
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert set(saved["histories"]) == {"tiny-mlp", "linear"}
    # the same split and seed: every model saw the same number of images
    sizes = {
        json.loads((tmp_path / m / "manifest.json").read_text())["data"]["sizes"]["train"] for m in saved["histories"]
    }
    assert len(sizes) == 1
    # a second call reads the finished runs back
    log.clear()
    again = compare(["tiny-mlp", "linear"], out=tmp_path, log=log.append, dataset="digits", epochs=1)
    assert any("already finished" in line for line in log)
    assert [r.best_test_acc for r in again] == [r.best_test_acc for r in rows]


def test_compare_cli(tmp_path, capsys):
    assert main(["compare", "tiny-mlp", "--epochs", "1", "--train-size", "500", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| tiny-mlp |" in out and "compare.png" in out


def test_compare_cli_refuses_an_unknown_model(tmp_path, capsys):
    assert main(["compare", "resnet", "--out", str(tmp_path)]) == 1
    assert "unknown model(s) resnet" in capsys.readouterr().err


def test_grid_and_names():
    grid = {"lr": parse_values("lr", "0.1,0.01"), "optimizer": parse_values("optimizer", "sgd,adam")}
    points = grid_points(grid)
    assert len(points) == 4 and points[0] == {"lr": 0.1, "optimizer": "sgd"}
    assert run_name(points[-1]) == "lr=0.01,optimizer=adam"
    with pytest.raises(ValueError, match="--batch-size"):
        parse_values("batch_size", "64,big")


def test_sweep_runs_in_parallel_and_resumes(tmp_path):
    grid = {"lr": [0.1, 0.02], "batch_size": [64]}
    rows = sweep(
        grid, out=tmp_path, workers=2, log=lambda *_: None, dataset="digits", model="tiny-mlp", epochs=1, train_size=400
    )
    assert [r["run"] for r in rows] == ["lr=0.1,batch_size=64", "lr=0.02,batch_size=64"]
    assert all(r["status"] == "trained" and 0 < r["test_acc"] <= 1 for r in rows)
    assert all(run_is_complete(tmp_path / r["run"], 1) for r in rows)
    for name in ("sweep.json", "sweep.csv", "parallel.png", "sweep.html"):
        assert (tmp_path / name).stat().st_size > 200, name
    page = (tmp_path / "sweep.html").read_text()
    assert "data:image/png;base64," in page and "<th>lr</th>" in page and "addEventListener('click'" in page
    again = sweep(
        grid, out=tmp_path, workers=2, log=lambda *_: None, dataset="digits", model="tiny-mlp", epochs=1, train_size=400
    )
    assert all(r["status"] == "skipped" for r in again)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]


def test_sweep_cli(tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                "--lr",
                "0.1,0.05",
                "--epochs",
                "1",
                "--train-size",
                "300",
                "--workers",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "sweep: 2 runs" in out and "test acc" in out and "sweep.html" in out


def test_sweep_refuses_an_unknown_field(tmp_path):
    with pytest.raises(ValueError, match="cannot sweep over colour"):
        sweep({"colour": ["red"]}, out=tmp_path)


# -- reuse only a run with the same settings ----------------------------------------------------------
BASE = dict(
    dataset="digits", model="tiny-mlp", epochs=1, train_size=400, lr=0.1, optimizer="sgd", batch_size=64, seed=0
)


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 0.05},
        {"optimizer": "adam"},
        {"epochs": 2},
        {"train_size": 300},
        {"batch_size": 32},
        {"seed": 1},
        {"weight_decay": 0.01},
        {"momentum": 0.5},
    ],
)
def test_a_finished_run_with_other_settings_is_trained_again(tmp_path, change):
    from handgrad.app.compare import run_config
    from handgrad.app.training import TrainConfig

    out = str(tmp_path / "run")
    first, _, status = run_config(TrainConfig(**BASE, out=out))
    assert status == "trained"
    log = []
    second, manifest, status = run_config(TrainConfig(**{**BASE, **change}, out=out), log=log.append)
    assert status == "retrained"
    ((field, value),) = change.items()
    assert manifest["config"][field] == value
    was = getattr(TrainConfig(**BASE).resolved(), field)
    assert any(f"{field} {was} (now {value})" in line for line in log), log
    assert [r["train_loss"] for r in second] != [r["train_loss"] for r in first]
    again, _, status = run_config(TrainConfig(**{**BASE, **change}, out=out))
    assert status == "skipped" and again == second


def test_an_interrupted_run_is_resumed_only_with_the_same_settings(tmp_path):
    from handgrad.app.compare import run_config
    from handgrad.app.training import TrainConfig, Trainer

    out = str(tmp_path / "run")
    trainer = Trainer(TrainConfig(**BASE, out=out), progress=False, log=lambda *_: None).setup()
    trainer.optimizer.step = lambda: (_ for _ in ()).throw(KeyboardInterrupt())  # Ctrl-C at the first update
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    _, manifest, status = run_config(TrainConfig(**{**BASE, "lr": 0.02}, out=out))
    assert status == "retrained" and manifest["config"]["lr"] == 0.02
    trainer = Trainer(TrainConfig(**BASE, out=out), progress=False, log=lambda *_: None, overwrite=True).setup()
    trainer.optimizer.step = lambda: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    _, manifest, status = run_config(TrainConfig(**BASE, out=out))
    assert status == "resumed" and manifest["config"]["lr"] == 0.1


def test_compare_does_not_show_old_numbers_under_new_settings(tmp_path):
    log = []
    old = compare(["tiny-mlp"], out=tmp_path, log=log.append, dataset="digits", epochs=1, train_size=400, lr=0.1)
    new = compare(["tiny-mlp"], out=tmp_path, log=log.append, dataset="digits", epochs=1, train_size=400, lr=0.02)
    assert any("training again" in line and "lr 0.1 (now 0.02)" in line for line in log)
    assert new[0].final_test_acc != old[0].final_test_acc
    saved = json.loads((tmp_path / "tiny-mlp" / "manifest.json").read_text())["config"]
    assert saved["lr"] == 0.02


def test_sweep_trains_again_when_a_fixed_setting_changes(tmp_path):
    grid = {"lr": [0.1]}
    quiet = lambda *_: None  # noqa: E731
    first = sweep(
        grid, out=tmp_path, workers=1, log=quiet, dataset="digits", model="tiny-mlp", epochs=1, train_size=400
    )
    changed = sweep(
        grid, out=tmp_path, workers=1, log=quiet, dataset="digits", model="tiny-mlp", epochs=1, train_size=300
    )
    assert changed[0]["status"] == "retrained" and changed[0]["test_acc"] != first[0]["test_acc"]
    same = sweep(grid, out=tmp_path, workers=1, log=quiet, dataset="digits", model="tiny-mlp", epochs=1, train_size=300)
    assert same[0]["status"] == "skipped" and same[0]["test_acc"] == changed[0]["test_acc"]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_sweep_workers_share_the_threads(tmp_path, threads):
    from handgrad.app.sweep import available_cores

    log = []
    sweep(
        {"lr": [0.1, 0.05]},
        out=tmp_path,
        workers=2,
        threads=threads,
        log=log.append,
        dataset="digits",
        model="tiny-mlp",
        epochs=1,
        train_size=300,
    )
    workers = min(2, available_cores())
    share = max(1, threads // workers)
    assert any(f"{workers} worker process" in line and f"{share} thread" in line for line in log), log
    for run in ("lr=0.1", "lr=0.05"):
        env = json.loads((tmp_path / run / "manifest.json").read_text())["environment"]
        assert env["threads"] == share
        assert all(b["num_threads"] == share for b in env["blas"])
