"""Figures, drawn with matplotlib (imported here only, so the core never needs it)."""
from __future__ import annotations

import io
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


def plot_history(history: list, path, title: str = ""):
    """Loss and accuracy per epoch (train, validation and test) side by side; with ``path`` None,
    the PNG's bytes are returned instead of written."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "--")):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=split, markersize=3)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], style, label=split, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


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
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], style, color=color, label=label,
                        markersize=3)
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
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > threshold else "black")
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
        raise ValueError(f"expected a Conv2d weight (O, C, kH, kW) or a Linear weight with input_shape, "
                         f"got shape {weight.shape}")
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


def plot_parallel_coordinates(rows: list, columns: list, color_by: str, path=None, title: str = ""):
    """One line per run across parallel axes (hyperparameters, then metrics), coloured by
    ``color_by``. Numeric axes are scaled to their range (log when they span over a decade and are
    positive); text axes (optimizer) place their values evenly."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(columns)), 4.5))
    scaled, ticks = [], []
    for col in columns:
        values = [r[col] for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            v = np.asarray(values, dtype=np.float64)
            use_log = v.min() > 0 and v.max() / v.min() > 10
            t = np.log10(v) if use_log else v
            lo, hi = float(t.min()), float(t.max())
            scaled.append((t - lo) / (hi - lo) if hi > lo else np.full(len(v), 0.5))
            shown = sorted(set(values))
            places = ([((np.log10(s) if use_log else s) - lo) / (hi - lo) if hi > lo else 0.5 for s in shown]
                      if len(shown) <= 6 else [0.0, 1.0])
            ticks.append(list(zip(places, [f"{s:g}" for s in shown] if len(shown) <= 6 else
                                  [f"{v.min():.4g}", f"{v.max():.4g}"])))
        else:
            levels = sorted(set(str(v) for v in values))
            pos = {lev: (k / (len(levels) - 1) if len(levels) > 1 else 0.5) for k, lev in enumerate(levels)}
            scaled.append(np.array([pos[str(v)] for v in values]))
            ticks.append([(pos[lev], lev) for lev in levels])
    data = np.stack(scaled, axis=1) if scaled else np.zeros((len(rows), 0))
    color_values = np.asarray([r[color_by] for r in rows], dtype=np.float64)
    cmap = plt.get_cmap("viridis")
    lo, hi = (float(color_values.min()), float(color_values.max())) if len(rows) else (0.0, 1.0)
    for k in np.argsort(color_values):
        ax.plot(range(len(columns)), data[k], color=cmap((color_values[k] - lo) / (hi - lo) if hi > lo else 0.5),
                alpha=0.85, linewidth=1.6, marker="o", markersize=3)
    for j, col_ticks in enumerate(ticks):
        ax.axvline(j, color="black", linewidth=0.8)
        for y, text in col_ticks:
            ax.text(j + 0.03, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(mappable, ax=ax, label=color_by, fraction=0.04)
    if title:
        ax.set_title(title)
    return _finish(fig, path)
