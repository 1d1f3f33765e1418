"""Train several models on the same data, split and seed, and put their curves on one figure.

``compare(["tiny-mlp", "tiny-cnn"], dataset="digits", epochs=2, out="runs/compare")`` trains each
model (a name, or a layer spec such as ``"conv8-pool-fc32"``) into ``out/<model>/`` (a finished run
there with the same settings is read back, not retrained; one with other settings is trained
again), then writes
``out/compare.png`` (train and test loss and accuracy per epoch, all models), ``out/compare.json``
and ``out/compare.md`` (parameters, seconds per epoch, and the best epoch, chosen as ``train`` chooses
``best.safetensors``, by the lowest validation loss, with its test accuracy).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_write_text

if TYPE_CHECKING:
    from .training import TrainConfig

#: The default line-up: the matched pair (about 12k parameters each) and two larger models.
DEFAULT_MODELS = ("tiny-mlp", "tiny-cnn", "mlp", "lenet5")


def read_history(run_dir) -> dict | None:
    """``history.json`` of a run directory (``{"epochs": [...], "grad_norms": [...]}``), or None."""
    path = Path(run_dir) / "history.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def run_is_complete(run_dir, epochs: int) -> bool:
    """True when the run's history holds all ``epochs`` epochs (a finished run to skip)."""
    history = read_history(run_dir)
    if not history:
        return False
    return len(history["epochs"]) >= epochs and (Path(run_dir) / "manifest.json").exists()


def reuse_problem(run_dir, config) -> str | None:
    """Why the run in ``run_dir`` cannot stand for ``config`` (resolved), or None when it can: its
    stored configuration must equal ``config`` in every field but the folder (lr, optimizer, epochs,
    train size, model, seed, batch size, data, ...). A finished run is judged by its manifest, an
    unfinished one by its resume file."""
    from .training import config_differences, read_resume_metadata

    run_dir = Path(run_dir)
    try:
        if run_is_complete(run_dir, config.epochs):
            saved = json.loads((run_dir / "manifest.json").read_text())["config"]
        else:
            saved = read_resume_metadata(run_dir)["config"]
    except (ValueError, KeyError, TypeError, OSError) as e:  # HandgradError is a ValueError
        return f"its files cannot be read back ({e})"
    differences = config_differences(asdict(config), saved)
    if differences:
        return "it was trained with " + ", ".join(f"{k} {was} (now {now})" for k, was, now in differences)
    return None


def with_model(config) -> TrainConfig:
    """``config`` with a model given as a layer spec (``model="conv8-pool-fc32"``) moved to its
    ``layers`` field, as ``train --layers`` sets it; a named model, or a config with layers, as is."""
    from ..models import MODELS

    if config.layers or config.model in MODELS:
        return config
    return replace(config, model="custom", layers=config.model)


def check_specs(models, dataset, data_dir=None) -> None:
    """Build each layer spec among ``models`` for the dataset's input shape and classes, so that a
    spec that does not fit the data is refused before any run trains (and none is half done)."""
    from ..models import MODELS, parse_layer_spec

    specs = [m for m in models if m not in MODELS]
    if not specs:
        return
    from ..data import load_dataset

    ds = load_dataset(dataset, data_dir=data_dir)
    for spec in specs:
        try:
            parse_layer_spec(spec, ds.train_images.shape[1:], ds.num_classes)
        except ValueError as e:
            raise ValueError(
                f"model {spec!r} is not a named model (known: {', '.join(MODELS)}), and as a layer "
                f"spec for {ds.name}: {e}"
            ) from None


def run_config(config, log=lambda *_: None) -> tuple[list, dict, str]:
    """Train ``config`` into ``config.out``: skip it when finished with these very settings,
    continue it when an interrupted run with these settings is there, train it again (replacing
    the run) when the run there has other settings, else start it. Returns (history rows, manifest
    dict, "trained" | "resumed" | "skipped" | "retrained")."""
    from .training import run_files, train

    config = config.resolved()
    out = Path(config.out)
    problem = reuse_problem(out, config) if run_files(out) else "there is no run"
    if problem is None and run_is_complete(out, config.epochs):
        status = "skipped"
    elif problem is None:
        train(config, resume=True, progress=False, log=log)
        status = "resumed"
    elif run_files(out):
        log(f"{out}: training again, as the run there cannot be reused: {problem}")
        train(config, overwrite=True, progress=False, log=log)
        status = "retrained"
    else:
        train(config, progress=False, log=log)
        status = "trained"
    manifest = json.loads((out / "manifest.json").read_text())
    history = read_history(out)
    assert history is not None  # the run just written or read back has its history
    return history["epochs"][: config.epochs], manifest, status


@dataclass
class CompareRow:
    """One model's line of the comparison table. ``best_epoch`` is the epoch of lowest validation
    loss (the one best.safetensors holds; the test set never chooses it), ``best_test_acc`` its test
    accuracy."""

    model: str
    parameters: int
    seconds_per_epoch: float
    best_test_acc: float
    best_epoch: int
    final_test_acc: float
    final_test_loss: float
    epochs: int

    @classmethod
    def from_history(cls, model, parameters, rows) -> CompareRow:
        best = min(rows, key=lambda r: r["val_loss"])
        return cls(
            model,
            int(parameters),
            sum(r["seconds"] for r in rows) / len(rows),
            best["test_acc"],
            best["epoch"],
            rows[-1]["test_acc"],
            rows[-1]["test_loss"],
            len(rows),
        )


def format_table(rows: list) -> str:
    """The comparison as a Markdown table (it reads as plain text too)."""
    lines = [
        "| model | parameters | seconds / epoch | test acc at best val | best epoch | final test acc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.parameters:,} | {r.seconds_per_epoch:.2f} | {100 * r.best_test_acc:.2f}% "
            f"| {r.best_epoch}/{r.epochs} | {100 * r.final_test_acc:.2f}% |"
        )
    return "\n".join(lines)


def compare(models=DEFAULT_MODELS, out="runs/compare", log=print, **config_fields) -> list:
    """Train every model in ``models`` with the same ``config_fields`` (dataset, epochs, seed,
    train_size, batch_size, lr, ...; see TrainConfig) and write the figure and tables into ``out``.
    Returns the list of CompareRow, in the order of ``models``."""
    from .plots import plot_compare
    from .training import TrainConfig

    if not models:
        raise ValueError("compare needs at least one model")
    base = TrainConfig(**config_fields)
    check_specs(models, base.dataset, base.data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    histories, rows = {}, []
    for name in models:
        config = with_model(replace(base, model=name, out=str(out / name)))
        log(f"{name}: training into {config.out}")
        history, manifest, status = run_config(config, log=log)
        if status == "skipped":
            log(f"{name}: already finished with these settings, read back")
        histories[name] = history
        rows.append(CompareRow.from_history(name, manifest["model"]["parameters"], history))
        log(
            f"{name}: best epoch (lowest validation loss) {rows[-1].best_epoch}, test acc "
            f"{100 * rows[-1].best_test_acc:.2f}%, "
            f"{rows[-1].seconds_per_epoch:.2f} s/epoch"
        )
    c = base.resolved()
    size = f", {c.train_size} training images" if c.train_size else ""
    plot_compare(histories, out / "compare.png", title=f"{c.dataset}{size}, seed {c.seed}")
    table = format_table(rows)
    atomic_write_text(out / "compare.md", table + "\n")
    atomic_write_text(
        out / "compare.json",
        json.dumps(
            {
                "config": {k: v for k, v in config_fields.items()},
                "models": [asdict(r) for r in rows],
                "histories": histories,
            },
            indent=1,
        ),
    )
    return rows
