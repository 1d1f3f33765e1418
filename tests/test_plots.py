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
        rows.append(
            {
                "epoch": e,
                "train_loss": loss,
                "train_acc": 1 - loss / 3,
                "val_loss": loss * 1.1,
                "val_acc": 1 - loss / 2.8,
                "test_loss": loss * 1.15,
                "test_acc": 1 - loss / 2.7,
                "lr": 0.05,
                "seconds": 1.0 + rng.random(),
                "samples_per_s": 1000.0,
            }
        )
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
    plots.plot_class_distribution(
        rng.integers(0, 10, 500), rng.integers(0, 10, 100), [str(i) for i in range(10)], tmp_path / "classes.png"
    )
    assert_png(tmp_path / "classes.png")


def test_plot_confusion_matrix(tmp_path, rng):
    plots.plot_confusion_matrix(rng.integers(0, 50, (10, 10)), [str(i) for i in range(10)], tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")


def test_plot_image_grid(tmp_path, rng):
    plots.plot_image_grid(
        rng.random((10, 1, 8, 8)), [f"true {i}\npred {9 - i}" for i in range(10)], tmp_path / "grid.png"
    )
    assert_png(tmp_path / "grid.png")


@pytest.mark.parametrize(
    "shape, input_shape",
    [
        pytest.param((16, 64), (1, 8, 8), id="linear-rows"),
        pytest.param((8, 3, 5, 5), None, id="conv-filters"),
    ],
)
def test_plot_first_layer(tmp_path, rng, shape, input_shape):
    plots.plot_first_layer(rng.standard_normal(shape), input_shape, tmp_path / "w.png")
    assert_png(tmp_path / "w.png", min_bytes=3_000)


def test_plot_first_layer_refuses_an_unknown_shape(rng):
    with pytest.raises(ValueError, match="expected a Conv2d weight"):
        plots.plot_first_layer(rng.standard_normal((4, 5, 6)), None, None)


def test_plot_grad_norms(tmp_path, rng):
    log = [
        {"step": 10 * k, "epoch": 1 + k // 5, "0.weight": float(rng.random()), "0.bias": float(rng.random())}
        for k in range(1, 12)
    ]
    plots.plot_grad_norms(log, tmp_path / "g.png")
    assert_png(tmp_path / "g.png")


def test_plot_parallel_coordinates(tmp_path, rng):
    rows = [
        {
            "lr": lr,
            "batch_size": bs,
            "optimizer": opt,
            "test_acc": float(rng.random()),
            "test_loss": float(rng.random()),
        }
        for lr in (0.1, 0.01, 0.001)
        for bs in (64, 128)
        for opt in ("sgd", "adam")
    ]
    plots.plot_parallel_coordinates(
        rows, ["lr", "batch_size", "optimizer", "test_acc", "test_loss"], "test_acc", tmp_path / "p.png"
    )
    assert_png(tmp_path / "p.png")


def grid_rows(rng):
    return [
        {
            "lr": lr,
            "batch_size": bs,
            "optimizer": opt,
            "weight_decay": 0.0,
            "test_acc": float(rng.random()),
            "test_loss": float(rng.random()),
            "seconds_per_epoch": float(rng.uniform(0.5, 3)),
        }
        for lr in (0.1, 0.01, 0.001)
        for bs in (64, 128)
        for opt in ("sgd", "adam")
    ]


def test_parallel_axes_put_lr_on_a_log_scale(rng):
    (lr,) = plots.parallel_axes(grid_rows(rng), ["lr"])
    assert lr.log and lr.label == "lr (log)"
    assert lr.values[:2] == [pytest.approx(-1.0)] * 2 and lr.range == pytest.approx((-3.0, -1.0))
    assert [text for _, text in lr.ticks] == ["0.001", "0.01", "0.1"]
    assert [t for t, _ in lr.ticks] == pytest.approx([-3.0, -2.0, -1.0])


@pytest.mark.parametrize(
    "key, label",
    [
        pytest.param("test_acc", "test acc (%)", id="test"),
        pytest.param("best_test_acc", "best test acc (%)", id="best"),
        pytest.param("top5_acc", "top5 acc (%)", id="top-k"),
    ],
)
def test_parallel_axes_show_accuracy_in_percent(key, label):
    (axis,) = plots.parallel_axes([{key: 0.5}, {key: 0.925}, {key: 0.7}], [key])
    assert axis.percent and axis.label == label
    assert axis.values == pytest.approx([50.0, 92.5, 70.0]) and axis.range == pytest.approx((50.0, 92.5))


@pytest.mark.parametrize(
    "values, expected_range, expected_ticks",
    [
        pytest.param(["sgd", "adam", "sgd"], (0.0, 1.0), [(0.0, "adam"), (1.0, "sgd")], id="text-levels-sorted"),
        pytest.param(["sgd", "sgd"], (-0.5, 0.5), [(-0.5, ""), (0.0, "sgd"), (0.5, "")], id="one-level-padded"),
        pytest.param([0.0, 0.0], (-1.0, 1.0), [(-1.0, ""), (0.0, "0"), (1.0, "")], id="one-number-padded"),
        pytest.param(
            list(range(1, 12)),
            (1.0, 11.0),
            [(1.0, "1"), (5.0, "5"), (10.0, "10"), (11.0, "11")],
            id="whole-numbers-whole-ticks",
        ),  # fractional numbers over that span get steps of 2.5
        pytest.param(
            [1.0, 11.0, 4.2345],
            (1.0, 11.0),
            [(1.0, "1"), (2.5, "2.5"), (5.0, "5"), (7.5, "7.5"), (10.0, "10"), (11.0, "11")],
            id="measured-numbers-round-ticks",
        ),
        pytest.param(
            [0.25, 0.5, 0.75],
            (0.25, 0.75),
            [(0.25, "0.25"), (0.5, "0.5"), (0.75, "0.75")],
            id="a-grid's-values-each-labelled",
        ),
    ],
)
def test_parallel_axes_ranges_and_ticks(values, expected_range, expected_ticks):
    (axis,) = plots.parallel_axes([{"x": v} for v in values], ["x"])
    assert axis.range == pytest.approx(expected_range)
    assert [(pytest.approx(t), text) for t, text in axis.ticks] == expected_ticks


def test_parallel_axes_keep_a_diverged_run_above_the_range():
    (axis,) = plots.parallel_axes([{"test_loss": 0.5}, {"test_loss": float("nan")}, {"test_loss": 1.5}], ["test_loss"])
    assert axis.values[1] > 1.5 and axis.range[1] == axis.values[1]
    assert axis.ticks[-1] == (axis.values[1], "not finite")
    assert all(np.isfinite(axis.values))


def test_parallel_axes_leave_a_zero_weight_decay_linear(rng):
    (axis,) = plots.parallel_axes(grid_rows(rng), ["weight_decay"])
    assert not axis.log and axis.values[0] == 0.0


def test_parallel_png_labels_do_not_overlap(rng):
    columns = [
        "lr",
        "batch_size",
        "optimizer",
        "val_acc",
        "test_acc",
        "best_test_acc",
        "test_loss",
        "train_loss",
        "seconds_per_epoch",
    ]
    fig = plots.parallel_coordinates_figure(
        [{**r, "val_acc": 0.9, "best_test_acc": 0.95, "train_loss": 0.2} for r in grid_rows(rng)], columns, "test_acc"
    )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in fig.axes[0].get_xticklabels()]
    assert len(boxes) == len(columns)
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, (left, right)
    assert fig.axes[1].get_ylabel() == "test acc (%)"  # the colour bar, in percent too
    plots._pyplot().close(fig)


def test_parallel_plotly_figure_matches_the_axes(rng):
    rows = grid_rows(rng)
    figure = plots.parallel_plotly_figure(rows, ["lr", "optimizer", "test_acc"], "test_acc")
    (trace,) = figure["data"]
    lr, optimizer, acc = trace["dimensions"]
    assert lr["label"] == "lr (log)" and lr["values"] == pytest.approx([np.log10(r["lr"]) for r in rows])
    assert lr["ticktext"] == ["0.001", "0.01", "0.1"]
    assert optimizer["ticktext"] == ["adam", "sgd"]
    assert acc["values"] == pytest.approx([100 * r["test_acc"] for r in rows])
    assert trace["line"]["color"] == acc["values"]
    assert figure["config"]["showSendToCloud"] is False  # no button that uploads the data


def test_parallel_view_html_cannot_end_its_script_early():
    rows = [
        {"optimizer": "</script><script>alert(1)</script>", "test_acc": 0.5},
        {"optimizer": "sgd", "test_acc": float("nan")},
    ]
    fragment = plots.parallel_view_html("view", rows, ["optimizer", "test_acc"], "test_acc", "table", "runs")
    assert fragment.count("</script>") == 1 and "<\\/script>" in fragment
    assert "NaN" not in fragment


def test_plotly_js_is_the_whole_library():
    pytest.importorskip("plotly")
    js = plots.plotly_js()
    assert len(js) > 1_000_000 and "parcoords" in js


def test_plotly_js_without_plotly_says_what_to_install(monkeypatch):
    import sys

    from handgrad.errors import HandgradError

    monkeypatch.setitem(sys.modules, "plotly.offline", None)  # makes the import fail
    with pytest.raises(HandgradError, match=r"needs the plotly package.*pip install 'handgrad\[cli\]'"):
        plots.plotly_js()


def synthetic_steps(epochs=4, per_epoch=30, seed=0):
    rng = np.random.default_rng(seed)
    n = epochs * per_epoch
    return {
        "step": np.arange(1, n + 1),
        "epoch": np.repeat(np.arange(1, epochs + 1), per_epoch),
        "loss": 2.0 / np.sqrt(np.arange(1, n + 1)) + 0.1 * rng.random(n),
        "acc": rng.random(n),
    }


@pytest.mark.parametrize("epochs, per_epoch", [(1, 5), (4, 30), (7, 3)])
def test_steps_sit_between_the_epochs_the_last_on_its_epoch(epochs, per_epoch):
    x = plots.step_positions(synthetic_steps(epochs, per_epoch))
    assert len(x) == epochs * per_epoch and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(x[per_epoch - 1 :: per_epoch], np.arange(1, epochs + 1))
    assert x[0] == pytest.approx(1 / per_epoch)


def test_history_figure_draws_each_step_under_the_epochs():
    steps = synthetic_steps(4, 30)
    fig = plots.history_figure(synthetic_history(4), steps=steps)
    ax_loss, ax_acc = fig.axes
    trace = [line for line in ax_loss.lines if line.get_label() == "train (each step)"]
    assert len(trace) == 1 and len(trace[0].get_xdata()) == 120
    np.testing.assert_allclose(trace[0].get_ydata(), steps["loss"])
    assert ax_loss.lines.index(trace[0]) == 0  # drawn first: under the per-epoch points
    plots._pyplot().close(fig)


@pytest.mark.parametrize("epochs", [1, 3, 12])
def test_history_figure_has_whole_epoch_ticks(epochs):
    fig = plots.history_figure(synthetic_history(epochs), steps=synthetic_steps(epochs, 10))
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plots._pyplot().close(fig)


@pytest.mark.parametrize("val_losses, best", [([0.9, 0.5, 0.7], 2), ([0.3, 0.5, 0.7], 1), ([0.9, 0.8, 0.7], 3)])
def test_history_figure_marks_the_best_epoch(val_losses, best):
    history = [dict(row, val_loss=v) for row, v in zip(synthetic_history(3), val_losses)]
    fig = plots.history_figure(history)
    for ax in fig.axes:
        marks = [line for line in ax.lines if line.get_label() == f"best (epoch {best})"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [best, best]
    plots._pyplot().close(fig)
