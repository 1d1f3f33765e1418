"""The figures: each plot function writes a PNG of a sane size from a small synthetic history."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from handgrad.app import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_history(epochs=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        loss = 2.0 / e + 0.05 * rng.random()
        rows.append({"epoch": e, "train_loss": loss, "train_acc": 1 - loss / 3, "val_loss": loss * 1.1,
                     "val_acc": 1 - loss / 2.8, "test_loss": loss * 1.15, "test_acc": 1 - loss / 2.7,
                     "lr": 0.05, "seconds": 1.0 + rng.random(), "samples_per_s": 1000.0})
    return rows


def assert_png(path, min_bytes=5_000, max_bytes=2_000_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert min_bytes < len(data) < max_bytes, len(data)


def test_plot_history_writes_a_png(tmp_path):
    plots.plot_history(synthetic_history(), tmp_path / "curves.png", title="synthetic")
    assert_png(tmp_path / "curves.png")


def test_plot_history_returns_bytes_without_a_path():
    assert plots.plot_history(synthetic_history(), None)[:8] == PNG_MAGIC


def test_plot_compare(tmp_path):
    histories = {"a": synthetic_history(3, 0), "b": synthetic_history(3, 1), "c": synthetic_history(5, 2)}
    assert plots.plot_compare(histories, tmp_path / "compare.png", title="three runs") == tmp_path / "compare.png"
    assert_png(tmp_path / "compare.png")


def test_plot_class_distribution(tmp_path, rng):
    plots.plot_class_distribution(rng.integers(0, 10, 500), rng.integers(0, 10, 100), [str(i) for i in range(10)],
                                  tmp_path / "classes.png")
    assert_png(tmp_path / "classes.png")


def test_plot_confusion_matrix(tmp_path, rng):
    plots.plot_confusion_matrix(rng.integers(0, 50, (10, 10)), [str(i) for i in range(10)], tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")


def test_plot_image_grid(tmp_path, rng):
    plots.plot_image_grid(rng.random((10, 1, 8, 8)), [f"true {i}\npred {9 - i}" for i in range(10)],
                          tmp_path / "grid.png")
    assert_png(tmp_path / "grid.png")


@pytest.mark.parametrize("shape, input_shape", [
    pytest.param((16, 64), (1, 8, 8), id="linear-rows"),
    pytest.param((8, 3, 5, 5), None, id="conv-filters"),
])
def test_plot_first_layer(tmp_path, rng, shape, input_shape):
    plots.plot_first_layer(rng.standard_normal(shape), input_shape, tmp_path / "w.png")
    assert_png(tmp_path / "w.png", min_bytes=3_000)


def test_plot_first_layer_refuses_an_unknown_shape(rng):
    with pytest.raises(ValueError, match="expected a Conv2d weight"):
        plots.plot_first_layer(rng.standard_normal((4, 5, 6)), None, None)


def test_plot_grad_norms(tmp_path, rng):
    log = [{"step": 10 * k, "epoch": 1 + k // 5, "0.weight": float(rng.random()), "0.bias": float(rng.random())}
           for k in range(1, 12)]
    plots.plot_grad_norms(log, tmp_path / "g.png")
    assert_png(tmp_path / "g.png")


def test_plot_parallel_coordinates(tmp_path, rng):
    rows = [{"lr": lr, "batch_size": bs, "optimizer": opt, "test_acc": float(rng.random()),
             "test_loss": float(rng.random())}
            for lr in (0.1, 0.01, 0.001) for bs in (64, 128) for opt in ("sgd", "adam")]
    plots.plot_parallel_coordinates(rows, ["lr", "batch_size", "optimizer", "test_acc", "test_loss"], "test_acc",
                                    tmp_path / "p.png")
    assert_png(tmp_path / "p.png")
