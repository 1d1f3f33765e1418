"""Figures: static ones drawn with matplotlib, interactive ones as plotly.js figures for the HTML pages.
Both are imported here only, inside the functions that need them, so the core never needs them."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def step_positions(steps: dict):
    """Where each step sits on the epoch axis: step j (from 1) of the n steps of epoch e at
    e - 1 + j / n, so that epoch e's last step lands on e, under that epoch's point."""
    import numpy as np

    epoch = np.asarray(steps["epoch"])
    x = np.empty(len(epoch))
    for e in np.unique(epoch):
        where = np.flatnonzero(epoch == e)
        x[where] = e - 1 + np.arange(1, len(where) + 1) / len(where)
    return x


def plot_history(history: list, path, title: str = "", steps: dict | None = None) -> bytes | None:
    """Loss and accuracy per epoch (train, validation and test) side by side, over a faint trace of
    the training batches' loss and accuracy at every step when ``steps`` (training.read_steps)
    is given; whole epochs on the x axis, and the best epoch (lowest validation loss, the one
    best.safetensors holds) marked. With ``path`` None, the PNG's bytes are returned instead of
    written."""
    return _finish(history_figure(history, title, steps), path)


def history_figure(history: list, title: str = "", steps: dict | None = None):
    """The matplotlib figure ``plot_history`` saves: two axes, loss then accuracy."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if steps is not None and len(steps["step"]):
        x = step_positions(steps)
        ax_loss.plot(x, steps["loss"], "-", color="0.6", linewidth=0.6, alpha=0.6, label="train (each step)")
        ax_acc.plot(
            x, [100 * a for a in steps["acc"]], "-", color="0.6", linewidth=0.6, alpha=0.6, label="train (each step)"
        )
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "--")):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=split, markersize=3)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], style, label=split, markersize=3)
    if history and "val_loss" in history[0]:
        best = min(history, key=lambda r: r["val_loss"])
        for ax in (ax_loss, ax_acc):
            ax.axvline(
                best["epoch"], color="tab:green", linestyle=":", linewidth=1.2, label=f"best (epoch {best['epoch']})"
            )
        ax_loss.plot([best["epoch"]], [best["val_loss"]], "*", color="tab:green", markersize=11)
        ax_acc.plot([best["epoch"]], [100 * best["val_acc"]], "*", color="tab:green", markersize=11)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # whole epochs, even of 1
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _finish(fig, path):
    """Save to ``path``, or return the PNG's bytes when ``path`` is None (for inline HTML)."""
    if path is not None:
        save_figure(fig, path)
        return Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_compare(histories: dict, path=None, title: str = ""):
    """Several runs on one figure: loss and accuracy per epoch, one colour per run, train dashed
    and test solid. ``histories`` maps a run's name to its history rows."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, rows) in enumerate(histories.items()):
        color = colors[k % len(colors)]
        epochs = [r["epoch"] for r in rows]
        for split, style in (("train", "--"), ("test", "-o")):
            label = f"{name} ({split})"
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], style, color=color, label=label, markersize=3)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], style, color=color, label=label, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (train dashed, test solid)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (train dashed, test solid)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_class_distribution(train_labels, test_labels, classes, path=None, title: str = "class distribution"):
    """Images per class in the training and test sets, side by side."""
    import numpy as np

    plt = _pyplot()
    n = len(classes)
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * n + 2), 3.6))
    for offset, labels, name in ((-0.2, train_labels, "train"), (0.2, test_labels, "test")):
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n)
        ax.bar(x + offset, counts, width=0.4, label=f"{name} ({counts.sum():,})")
    ax.set_xticks(x, [str(c) for c in classes], rotation=30 if max(len(str(c)) for c in classes) > 3 else 0)
    ax.set(ylabel="images", title=title)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, path)


def plot_confusion_matrix(confusion, classes, path=None, title: str = "confusion matrix (test set)"):
    """Counts with rows = true class, columns = predicted class; each cell is written in."""
    import numpy as np

    plt = _pyplot()
    confusion = np.asarray(confusion)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.55 * n + 2))
    ax.imshow(confusion, cmap="Blues")
    threshold = confusion.max() / 2 if confusion.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(confusion[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if confusion[i, j] > threshold else "black",
            )
    ticks = [str(c) for c in classes]
    ax.set_xticks(range(n), ticks, rotation=45 if max(len(t) for t in ticks) > 3 else 0)
    ax.set_yticks(range(n), ticks)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _finish(fig, path)


def plot_image_grid(images, titles, path=None, columns: int = 8, title: str = ""):
    """Grayscale images (N, H, W) or (N, 1, H, W) in a grid, each with its caption."""
    import numpy as np

    plt = _pyplot()
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray")
            ax.set_title(titles[k], fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_first_layer(weight, input_shape=None, path=None, title: str = "", limit: int = 64):
    """What the first layer learned, as images: a Linear's rows reshaped to the input image
    (weight (out, C*H*W)), or a Conv2d's filters (weight (O, C, kH, kW), channels averaged).
    Each tile has its own symmetric colour scale: red positive, blue negative."""
    import numpy as np

    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim == 4:
        tiles = weight.mean(axis=1)
    elif weight.ndim == 2 and input_shape is not None:
        c, h, w = input_shape
        tiles = weight.reshape(len(weight), c, h, w).mean(axis=1)
    else:
        raise ValueError(
            f"expected a Conv2d weight (O, C, kH, kW) or a Linear weight with input_shape, got shape {weight.shape}"
        )
    tiles = tiles[:limit]
    plt = _pyplot()
    columns = min(8, len(tiles))
    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(tiles):
            scale = float(np.abs(tiles[k]).max()) or 1.0
            ax.imshow(tiles[k], cmap="RdBu_r", vmin=-scale, vmax=scale)
            ax.set_title(str(k), fontsize=7)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_grad_norms(grad_norm_log: list, path=None, title: str = "gradient norm per parameter"):
    """The per-parameter gradient norms the trainer recorded (``history.json["grad_norms"]``)
    against the step, log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    steps = [r["step"] for r in grad_norm_log]
    names = [k for k in (grad_norm_log[0] if grad_norm_log else {}) if k not in ("step", "epoch")]
    for name in names:
        ax.plot(steps, [r.get(name, float("nan")) for r in grad_norm_log], label=name, linewidth=1.2)
    ax.set(xlabel="step", ylabel="||grad||", title=title)
    if names:
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2 if len(names) > 6 else 1, loc="best")
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, path)


# -- parallel coordinates: one model of the axes, drawn as a PNG or as an interactive plotly.js view --

#: Drawn on a log scale whenever every value is positive: their effect is multiplicative.
LOG_AXES = ("lr", "weight_decay")
#: Short axis labels, so that neighbouring axes' labels never meet; other keys read with spaces.
AXIS_NAMES = {
    "batch_size": "batch size",
    "weight_decay": "weight decay",
    "seconds_per_epoch": "s / epoch",
    "seconds": "s / epoch",
    "samples_per_s": "samples / s",
    "train_size": "train size",
}


def is_accuracy(key: str) -> bool:
    """An accuracy (a fraction in the history), shown in percent everywhere."""
    return key == "acc" or key.endswith("_acc") or key.endswith("accuracy")


@dataclass
class Axis:
    """One parallel axis. ``values`` are as plotted: log10 of the value on a log axis, percent for an
    accuracy, the level's index for text; a value that is not finite sits just above ``range``'s
    finite part, at the tick "not finite". ``ticks`` are (position, text) pairs in the same units."""

    key: str
    label: str
    values: list
    range: tuple
    ticks: list
    log: bool = False
    percent: bool = False


def parallel_axes(rows: list, columns: list) -> list:
    """The axes of a parallel-coordinates view of ``rows`` (dicts), one per key in ``columns``:
    numbers on a linear axis (log for LOG_AXES when positive, percent for accuracies), anything else
    (optimizer, schedule) as evenly spaced levels in sorted order."""
    return [_axis(key, [r.get(key) for r in rows]) for key in columns]


def _axis(key: str, raw: list) -> Axis:
    name = AXIS_NAMES.get(key, key.replace("_", " "))
    if not raw or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        levels = sorted({str(v) for v in raw})
        index = {level: float(k) for k, level in enumerate(levels)}
        ticks = [(index[level], level) for level in levels]
        return Axis(key, name, [index[str(v)] for v in raw], *_span(0.0, float(max(len(levels) - 1, 0)), ticks, 0.5))
    percent = is_accuracy(key)
    values = [100.0 * float(v) if percent else float(v) for v in raw]
    finite = sorted({v for v in values if math.isfinite(v)})
    log = key in LOG_AXES and bool(finite) and finite[0] > 0
    to_axis = math.log10 if log else float
    plotted = [to_axis(v) if math.isfinite(v) else v for v in values]
    lo, hi = (to_axis(finite[0]), to_axis(finite[-1])) if finite else (0.0, 1.0)
    spaced = all(to_axis(b) - to_axis(a) >= 0.04 * (hi - lo) for a, b in zip(finite, finite[1:]))
    if 0 < len(finite) <= 8 and spaced and all(float(f"{v:.3g}") == v for v in finite):
        ticks = [(to_axis(v), f"{v:g}") for v in finite]  # a grid's few round values: label each one
    elif log:
        ticks = _log_ticks(lo, hi)
    else:
        ticks = _nice_ticks(lo, hi, integer=all(isinstance(v, int) for v in raw))
    pad = 0.5 if log else (abs(lo) * 0.1 or 1.0)  # around a single value: half a decade, or 10%
    ends = (10.0**lo, 10.0**hi) if log else (lo, hi)
    (lo, hi), ticks = _span(lo, hi, ticks, pad, *ends)
    if any(not math.isfinite(v) for v in values):
        # beyond the finite range, so that a diverged run stays visible rather than breaking the axis
        above = hi + 0.1 * (hi - lo)
        plotted = [v if math.isfinite(v) else above for v in plotted]
        ticks, hi = ticks + [(above, "not finite")], above
    label = name + (" (log)" if log else " (%)" if percent else "")
    return Axis(key, label, plotted, (lo, hi), ticks, log=log, percent=percent)


def _span(lo: float, hi: float, ticks: list, pad: float, lo_value=None, hi_value=None):
    """The axis's range and its ticks with a tick at each end (a plotter draws the axis line only
    between its outer ticks): the end's value (``lo_value``, ``hi_value``) where none sits there,
    blank on a range padded around a single value, and no other tick crowding an end."""
    if hi == lo:
        return (lo - pad, hi + pad), [(lo - pad, "")] + ticks + [(hi + pad, "")]
    near = 0.08 * (hi - lo)
    ends = [
        (at, _short(value))
        for at, value in ((lo, lo_value), (hi, hi_value))
        if value is not None and all(abs(t - at) > 1e-9 * (hi - lo) for t, _ in ticks)
    ]
    kept = [(t, text) for t, text in ticks if all(abs(t - at) >= near for at, _ in ends)]
    return (lo, hi), sorted(kept + ends)


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _nice_ticks(lo: float, hi: float, integer: bool = False) -> list:
    """About five ticks at round multiples (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi];
    whole numbers only when ``integer`` (epochs, batch sizes)."""
    if hi <= lo:
        return []
    raw_step = (hi - lo) / 4
    power = 10.0 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)) if m * power >= raw_step)
    if integer:
        step = max(step, 1.0)
    first = math.ceil(lo / step - 1e-9)
    ticks = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [(t, _short(round(t, 12))) for t in ticks]


def _log_ticks(lo: float, hi: float) -> list:
    """Ticks at 1, 2 and 5 times each power of ten inside [10**lo, 10**hi] (decades alone if many)."""
    if hi <= lo:
        return []
    candidates = [m * 10.0**e for e in range(math.floor(lo) - 1, math.ceil(hi) + 2) for m in (1, 2, 5)]
    inside = [c for c in candidates if lo - 1e-9 <= math.log10(c) <= hi + 1e-9]
    if len(inside) > 9:
        inside = [c for c in inside if f"{c:e}".startswith("1")]
    return [(math.log10(c), f"{c:.3g}") for c in inside]


def plot_parallel_coordinates(rows: list, columns: list, color_by: str, path=None, title: str = ""):
    """One line per row (a run) across parallel axes (hyperparameters, then metrics), coloured by
    ``color_by``; the axes are parallel_axes' (lr on a log scale, accuracies in percent)."""
    return _finish(parallel_coordinates_figure(rows, columns, color_by, title), path)


def parallel_coordinates_figure(rows: list, columns: list, color_by: str, title: str = ""):
    """The matplotlib figure that plot_parallel_coordinates saves."""
    import textwrap

    import numpy as np

    plt = _pyplot()
    axes = parallel_axes(rows, columns)
    color = parallel_axes(rows, [color_by])[0]

    def unit(axis, v):
        lo, hi = axis.range
        return (v - lo) / (hi - lo)

    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(axes) + 1.5), 4.8))
    data = np.array([[unit(a, a.values[i]) for a in axes] for i in range(len(rows))]).reshape(len(rows), len(axes))
    cmap = plt.get_cmap("viridis")
    shade = np.clip([unit(color, v) for v in color.values], 0, 1)
    for k in np.argsort(shade, kind="stable"):
        ax.plot(range(len(axes)), data[k], color=cmap(shade[k]), alpha=0.85, linewidth=1.6, marker="o", markersize=3)
    for j, a in enumerate(axes):
        ax.axvline(j, color="black", linewidth=0.8)
        for y, text in a.ticks:
            ax.text(j + 0.04, unit(a, y), text, fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), [textwrap.fill(a.label, 12) for a in axes], fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(*color.range))
    fig.colorbar(mappable, ax=ax, label=color.label, fraction=0.04)
    if title:
        ax.set_title(title)
    return fig


def plotly_js() -> str:
    """plotly.js as the ``plotly`` package ships it (plotly.min.js), to inline in a page: the page
    then draws its interactive views with nothing fetched."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        from ..errors import HandgradError

        raise HandgradError(
            "interactive view", "needs the plotly package, which ships plotly.js: pip install 'handgrad[cli]'"
        ) from None
    return get_plotlyjs()


def parallel_plotly_figure(rows: list, columns: list, color_by: str) -> dict:
    """The plotly.js figure ({data, layout, config}) of the interactive parallel-coordinates view:
    the same axes as the PNG; drag along an axis to filter, drag its title to reorder."""
    axes = parallel_axes(rows, columns)
    color = parallel_axes(rows, [color_by])[0]
    dimensions = [
        {
            "label": a.label,
            "values": a.values,
            "range": list(a.range),
            "tickvals": [t for t, _ in a.ticks],
            "ticktext": [text for _, text in a.ticks],
        }
        for a in axes
    ]
    trace = {
        "type": "parcoords",
        "dimensions": dimensions,
        "labelangle": 0,
        "labelside": "top",
        "line": {
            "color": color.values,
            "colorscale": "Viridis",
            "cmin": color.range[0],
            "cmax": color.range[1],
            "showscale": True,
            "colorbar": {"title": {"text": color.label, "side": "right"}, "thickness": 14},
        },
        "unselected": {"line": {"color": "#d0d0d0", "opacity": 0.35}},
    }
    layout = {
        "height": 420,
        "margin": {"l": 60, "r": 40, "t": 60, "b": 30},
        "font": {"size": 12},
        "paper_bgcolor": "white",
    }
    # no "share" button: it would upload the data; the PNG download stays, drawn in the browser
    config = {"displaylogo": False, "responsive": True, "showSendToCloud": False}
    return {"data": [trace], "layout": layout, "config": config}


#: Draws a view and keeps a table in step with it: ``handgradParallel(viewId, figure, tableId, noun)``.
#: The table's body rows carry ``data-index``, the row's place in the figure's values; a row stays
#: shown while its value lies inside every axis's selected range(s). ``VIEW-shown`` holds the count.
PARALLEL_JS = """
window.handgradParallel = function (viewId, figure, tableId, noun) {
  function inside(value, range) {
    if (!range) return true;
    var ranges = Array.isArray(range[0]) ? range : [range];
    return ranges.some(function (r) { return value >= r[0] && value <= r[1]; });
  }
  function draw() {
    var view = document.getElementById(viewId), table = document.getElementById(tableId);
    var shown = document.getElementById(viewId + '-shown');
    function filter() {
      var dimensions = view.data[0].dimensions, rows = table.tBodies[0].rows, count = 0;
      for (var k = 0; k < rows.length; k++) {
        var i = Number(rows[k].dataset.index);
        var keep = dimensions.every(function (d) { return inside(d.values[i], d.constraintrange); });
        rows[k].hidden = !keep;
        if (keep) count++;
      }
      shown.textContent = count + ' of ' + rows.length + ' ' + noun + ' shown.';
      shown.dataset.count = count;
    }
    Plotly.newPlot(view, figure.data, figure.layout, figure.config).then(function () {
      view.on('plotly_restyle', filter);
      filter();
      view.dataset.ready = 'true';
    });
  }
  // the table comes after the view in the page
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', draw);
  else draw();
};
"""

#: A page's hint under each view.
PARALLEL_HINT = (
    "Drag along an axis to keep only the lines inside that range (several ranges per axis "
    "are allowed; click the axis outside them to clear); drag an axis's title to move it."
)


def interactive_scripts() -> str:
    """The scripts a page with interactive views needs once, in its head: plotly.js and PARALLEL_JS."""
    return f"<script>{plotly_js()}</script>\n<script>{PARALLEL_JS}</script>"


def parallel_view_html(view_id: str, rows: list, columns: list, color_by: str, table_id: str, noun: str) -> str:
    """The HTML of one interactive view, drawn from ``rows`` once the page has loaded, filtering the
    table ``table_id`` (whose rows carry ``data-index``) and counting what stays shown."""
    # "</" would end the script element early; "<\/" reads the same to JavaScript
    figure = json.dumps(parallel_plotly_figure(rows, columns, color_by), allow_nan=False).replace("</", "<\\/")
    # an axis needs about 100 px for its label and ticks; narrower pages scroll the view sideways
    width = 100 * len(columns) + 160
    return (
        f'<div class="parallel-box"><div class="parallel" id="{view_id}" style="min-width:{width}px"></div></div>\n'
        f'<p class="hint">{PARALLEL_HINT} <b id="{view_id}-shown"></b></p>\n'
        f"<script>handgradParallel({json.dumps(view_id)}, {figure}, "
        f"{json.dumps(table_id)}, {json.dumps(noun)});</script>"
    )
