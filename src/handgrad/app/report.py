"""One self-contained HTML page for one run or several: every figure a PNG inlined as a base64 data
URI and plotly.js inlined for the interactive views, no external file, so the page works offline
and can be mailed as it is.

For each run directory (as ``handgrad train`` writes it): the training curves; an interactive
parallel-coordinates view of its epochs with the table of epochs it filters; the class
distribution of its training and test sets; the confusion matrix of its best checkpoint on the
test set; the most confidently wrong test images; the first layer's weights (an MLP's rows as
images) or filters (a CNN's); and the per-parameter gradient norms the trainer recorded. With
several runs, a comparison figure and table come first.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import HandgradError
from ..files import atomic_write_text

if TYPE_CHECKING:
    from .training import Data


@dataclass
class Run:
    """What a report needs from one run directory."""

    path: Path
    config: dict
    manifest: dict
    history: list
    steps: dict | None  # the per-step history (training.read_steps); None for runs without one
    grad_norms: list
    model: object
    checkpoint: Path
    data: Data  # the run's own split, normalised as in training

    @property
    def name(self) -> str:
        return self.path.name


def load_run(run_dir, data_dir=None) -> Run:
    """Read a run directory: manifest, history, the best (else last) checkpoint, and the run's data
    split rebuilt from its configuration (same dataset, seed, split and training subset)."""
    from ..serialization import load
    from .training import TrainConfig, prepare_data, read_steps

    path = Path(run_dir)
    if not (path / "manifest.json").exists() or not (path / "history.json").exists():
        raise HandgradError(
            str(path), "not a run directory: expected manifest.json and history.json (written by handgrad train)"
        )
    manifest = json.loads((path / "manifest.json").read_text())
    history = json.loads((path / "history.json").read_text())
    checkpoint = next((path / f for f in ("best.safetensors", "last.safetensors") if (path / f).exists()), None)
    if checkpoint is None:
        raise HandgradError(str(path), "holds no checkpoint (best.safetensors or last.safetensors)")
    known = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in manifest["config"].items() if k in known}
    if data_dir is not None:
        config["data_dir"] = data_dir
    data = prepare_data(TrainConfig(**config))
    return Run(
        path,
        config,
        manifest,
        history["epochs"],
        read_steps(path),
        history.get("grad_norms", []),
        load(checkpoint),
        checkpoint,
        data,
    )


def _img(png: bytes | None, alt: str) -> str:
    assert png is not None  # plots return the PNG's bytes when given no path
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def confidently_wrong(logits, labels, count: int = 24, softmax: bool = True):
    """Indices of the misclassified samples with the highest predicted probability (or score),
    most confident first, and that probability."""
    from ..functional import softmax_forward

    scores = softmax_forward(logits.astype(np.float64), dim=1)[0] if softmax else logits.astype(np.float64)
    predicted = scores.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = scores[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:count]
    return order, scores[order, predicted[order]]


def first_layer(model):
    """The first Linear or Conv2d of the model, or None."""
    from .. import nn

    return next((layer for layer in model.modules() if isinstance(layer, (nn.Linear, nn.Conv2d))), None)


#: The interactive view's per-epoch axes, in this order; other numeric history keys follow them
#: (samples_per_s aside: it repeats seconds).
EPOCH_AXES = ("epoch", "lr", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "seconds")


def epoch_columns(history: list) -> list:
    """The history keys that hold a number in every epoch, EPOCH_AXES first."""
    numeric = [
        k
        for k in history[0]
        if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in history)
    ]
    return [k for k in EPOCH_AXES if k in numeric] + [
        k for k in numeric if k not in EPOCH_AXES and k != "samples_per_s"
    ]


def epochs_view(history: list, view_id: str) -> str:
    """An interactive parallel-coordinates view of one run's epochs (one line per epoch, coloured by
    validation accuracy) and the table of epochs that it filters. The epoch whose checkpoint is
    best.safetensors (lowest validation loss) is in bold."""
    from .plots import is_accuracy, parallel_view_html

    columns = epoch_columns(history)
    color_by = next((k for k in ("val_acc", "test_acc", "epoch") if k in columns), columns[0])
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) if "val_loss" in columns else None

    def cell(key, value):
        if is_accuracy(key):
            return f"{100 * value:.2f}%"
        if key.endswith("loss"):
            return f"{value:.4f}"
        return f"{value:.2f}" if key == "seconds" else f"{value:.4g}"  # epoch, lr and the rest

    table_id = f"{view_id}-table"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in columns)
    body = "".join(
        f'<tr data-index="{i}"'
        + (' class="best"' if i == best else "")
        + ">"
        + "".join(f"<td>{html.escape(cell(k, r[k]))}</td>" for k in columns)
        + "</tr>"
        for i, r in enumerate(history)
    )
    caption = (
        "<p class=hint>In bold: the epoch of best.safetensors (lowest validation loss).</p>" if best is not None else ""
    )
    return (
        parallel_view_html(view_id, history, columns, color_by, table_id, "epochs")
        + caption
        + f'<div class="table-box"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def top_k_row(labels, logits, checkpoint: str) -> list:
    """The report's line of top-k test accuracy (metrics.history_top_k), none for few classes."""
    from .. import metrics

    k = metrics.history_top_k(logits.shape[1])
    if k is None or not len(labels):
        return []
    return [(f"test top-{k} accuracy ({checkpoint})", f"{100 * metrics.top_k_accuracy(labels, logits, k):.2f}%")]


def per_class_table(labels, predicted, classes) -> str:
    """One row per class: test images, precision and recall (metrics' conventions: a class never
    predicted has precision 0)."""
    from .. import metrics

    n = len(classes)
    counts = np.bincount(labels, minlength=n)
    rows = zip(classes, counts, metrics.precision(labels, predicted, n), metrics.recall(labels, predicted, n))
    return (
        "<table><tr><th>class</th><th>test images</th><th>precision</th><th>recall</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(str(c))}</td><td>{k:,}</td><td>{100 * p:.1f}%</td><td>{100 * r:.1f}%</td></tr>"
            for c, k, p, r in rows
        )
        + "</table>"
    )


def run_section(run: Run, index: int = 0) -> str:
    """The HTML of one run's section; ``index`` (its place on the page) names its elements."""
    from .. import metrics, nn
    from . import plots
    from .training import describe_schedule, evaluate

    d, c = run.data, run.config
    classes = d.classes
    last = run.history[-1] if run.history else {}
    _, accuracy, logits = evaluate(run.model, d.test_x, d.test_y)
    predicted = logits.argmax(axis=1)
    parts = [
        f'<section id="{html.escape(run.name)}"><h2>{html.escape(run.name)}</h2>',
        "<table class=kv>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in (
                ("model", c["model"]),
                ("dataset", c["dataset"]),
                ("images (train / val / test)", f"{len(d.train_y):,} / {len(d.val_y):,} / {len(d.test_y):,}"),
                ("parameters", f"{run.manifest['model']['parameters']:,}"),
                (
                    "optimizer",
                    f"{c['optimizer']} lr {c['lr']} momentum {c['momentum']} "
                    f"weight decay {c['weight_decay']}, {describe_schedule(c['schedule'])}",
                ),
                ("batch size / epochs / seed", f"{c['batch_size']} / {len(run.history)} / {c['seed']}"),
                ("checkpoint", run.checkpoint.name),
                (f"test accuracy ({run.checkpoint.stem})", f"{100 * accuracy:.2f}%"),
                *top_k_row(d.test_y, logits, run.checkpoint.stem),
                ("final test accuracy", f"{100 * last['test_acc']:.2f}%" if last else "-"),
            )
        )
        + "</table>",
    ]
    if run.history:
        trace = (
            f"<p class=hint>Grey: the training batch's loss and accuracy at each of the "
            f"{len(run.steps['step']):,} steps; points: each epoch's mean.</p>"
            if run.steps is not None
            else ""
        )
        parts += [
            "<h3>Training curves</h3>",
            _img(plots.plot_history(run.history, None, steps=run.steps), "training curves"),
            trace,
            "<h3>Epochs, interactive</h3>",
            epochs_view(run.history, f"epochs-{index}"),
        ]
    parts += [
        "<h3>Class distribution</h3>",
        _img(plots.plot_class_distribution(d.train_y, d.test_y, classes), "class distribution"),
    ]
    parts += [
        "<h3>Confusion matrix</h3>",
        _img(
            plots.plot_confusion_matrix(metrics.confusion_matrix(d.test_y, predicted, len(classes)), classes),
            "confusion matrix",
        ),
        "<h3>Precision and recall per class</h3>",
        per_class_table(d.test_y, predicted, classes),
    ]
    wrong, confidence = confidently_wrong(logits, d.test_y, softmax=c.get("loss") != "mse")
    parts.append("<h3>Most confidently wrong test images</h3>")
    if len(wrong):
        # an MSE model's outputs are scores, not probabilities: shown as they are
        shown = (lambda p: f"{p:.2f}") if c.get("loss") == "mse" else (lambda p: f"{100 * p:.0f}%")
        titles = [
            f"true {classes[d.test_y[i]]}\npred {classes[predicted[i]]} {shown(p)}" for i, p in zip(wrong, confidence)
        ]
        parts.append(_img(plots.plot_image_grid(d.test_x[wrong], titles), "confidently wrong test images"))
    else:
        parts.append("<p>Every test image is classified correctly.</p>")
    layer = first_layer(run.model)
    if layer is not None:
        is_conv = isinstance(layer, nn.Conv2d)
        shape = tuple(d.test_x.shape[1:])
        if is_conv or layer.in_features == int(np.prod(shape)):
            what = "filters" if is_conv else "weights (one image per hidden unit)"
            parts += [
                f"<h3>First-layer {what}</h3>",
                _img(plots.plot_first_layer(layer.weight.data, shape, title=repr(layer)), f"first-layer {what}"),
            ]
    parts.append("<h3>Gradient norms during training</h3>")
    if run.grad_norms:
        every = run.grad_norms[1]["step"] - run.grad_norms[0]["step"] if len(run.grad_norms) > 1 else None
        parts += [
            f"<p>Recorded every {every} steps.</p>" if every else "",
            _img(plots.plot_grad_norms(run.grad_norms), "gradient norms"),
        ]
    else:
        parts.append("<p>None recorded (the run was shorter than the recording interval).</p>")
    return "\n".join(parts) + "</section>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
img{max-width:100%;display:block;margin:.5em 0}section{border-top:2px solid #ddd;margin-top:2em}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f5f5f5}.parallel-box,.table-box{max-width:100%;overflow:auto}.table-box{max-height:24em}
.table-box th{position:sticky;top:0}.table-box td,.table-box th{text-align:right;white-space:nowrap}
tr.best td{font-weight:bold}
.hint{color:#555;font-size:14px}"""


def build_report(run_dirs, out=None, data_dir=None, title: str | None = None) -> Path:
    """Write the page for ``run_dirs`` and return its path: ``RUN_DIR/report.html`` for one run,
    ``report.html`` beside the runs for several, unless ``out`` says where."""
    from . import plots
    from .compare import CompareRow, format_table

    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("report needs at least one run directory")
    runs = [load_run(p, data_dir) for p in run_dirs]
    if out is None:
        out = run_dirs[0] / "report.html" if len(run_dirs) == 1 else run_dirs[0].parent / "report.html"
    out = Path(out)
    title = title or ("handgrad report: " + ", ".join(r.name for r in runs))
    body = [f"<h1>{html.escape(title)}</h1>"]
    if len(runs) > 1:
        with_history = [r for r in runs if r.history]
        rows = [CompareRow.from_history(r.name, r.manifest["model"]["parameters"], r.history) for r in with_history]
        body += [
            "<h2>All runs</h2>",
            _img(plots.plot_compare({r.name: r.history for r in with_history}), "comparison of the runs"),
            _markdown_table_html(format_table(rows)),
        ]
    body += [run_section(r, k) for k, r in enumerate(runs)]
    scripts = plots.interactive_scripts() if any(r.history for r in runs) else ""
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{scripts}</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


def _markdown_table_html(table: str) -> str:
    lines = [line.strip("|").split("|") for line in table.splitlines()]
    head, rows = lines[0], lines[2:]
    return (
        "<table><tr>"
        + "".join(f"<th>{html.escape(h.strip())}</th>" for h in head)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(v.strip())}</td>" for v in r) + "</tr>" for r in rows)
        + "</table>"
    )
