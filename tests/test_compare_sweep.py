"""handgrad compare and sweep on digits, one epoch of tiny models: files, tables, resuming."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from handgrad.cli import main  # noqa: E402
from handgrad.compare import compare, run_is_complete  # noqa: E402
from handgrad.sweep import grid_points, parse_values, run_name, sweep  # noqa: E402


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
    sizes = {json.loads((tmp_path / m / "manifest.json").read_text())["data"]["sizes"]["train"] for m in saved["histories"]}
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
    rows = sweep(grid, out=tmp_path, workers=2, log=lambda *_: None, dataset="digits", model="tiny-mlp", epochs=1,
                 train_size=400)
    assert [r["run"] for r in rows] == ["lr=0.1,batch_size=64", "lr=0.02,batch_size=64"]
    assert all(r["status"] == "trained" and 0 < r["test_acc"] <= 1 for r in rows)
    assert all(run_is_complete(tmp_path / r["run"], 1) for r in rows)
    for name in ("sweep.json", "sweep.csv", "parallel.png", "sweep.html"):
        assert (tmp_path / name).stat().st_size > 200, name
    page = (tmp_path / "sweep.html").read_text()
    assert "data:image/png;base64," in page and "<th>lr</th>" in page and "addEventListener('click'" in page
    again = sweep(grid, out=tmp_path, workers=2, log=lambda *_: None, dataset="digits", model="tiny-mlp", epochs=1,
                  train_size=400)
    assert all(r["status"] == "skipped" for r in again)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]


def test_sweep_cli(tmp_path, capsys):
    assert main(["sweep", "--lr", "0.1,0.05", "--epochs", "1", "--train-size", "300", "--workers", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep: 2 runs" in out and "test acc" in out and "sweep.html" in out


def test_sweep_refuses_an_unknown_field(tmp_path):
    with pytest.raises(ValueError, match="cannot sweep over colour"):
        sweep({"colour": ["red"]}, out=tmp_path)
