"""Figures, drawn with matplotlib (imported here only, so the core never needs it)."""
from __future__ import annotations

import io
from pathlib import Path

from .serialization import atomic_write_bytes


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


def plot_history(history: list, path, title: str = "") -> None:
    """Loss and accuracy per epoch (train, validation and test) side by side."""
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
    save_figure(fig, path)
