"""A grid search over hyperparameters, run in parallel worker processes and resumable.

``sweep({"lr": [0.1, 0.01], "optimizer": ["sgd", "adam"]}, out="runs/sweep", dataset="digits",
epochs=2)`` trains every combination into its own folder ``out/<name>/`` (e.g.
``lr=0.1,optimizer=sgd``), up to ``workers`` at a time (default: the number of cores), each worker
with its share of the threads (cores // workers, at least 1). A finished run with the same settings
is skipped; one interrupted part-way continues from its resume file; one with other settings (the
fixed ones are not in the folder's name) is trained again. Then it writes ``sweep.json``,
``sweep.csv``, ``parallel.png`` (a parallel-coordinates view: one line per run across the
hyperparameters and the final metrics) and ``sweep.html`` (the same view, interactive, and a table
that it filters and that sorts by clicking a column's head).
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import os
from dataclasses import fields, replace
from pathlib import Path

from ..files import atomic_write_bytes, atomic_write_text

#: The hyperparameters a grid may vary (TrainConfig fields) and how their values are parsed.
GRID_FIELDS = {
    "lr": float,
    "batch_size": int,
    "optimizer": str,
    "momentum": float,
    "weight_decay": float,
    "schedule": str,
    "model": str,
    "epochs": int,
    "seed": int,
    "train_size": int,
    "loss": str,
    "activation": str,
    "init": str,
}
#: The final metrics each run reports.
METRICS = ("test_acc", "best_test_acc", "val_acc", "test_loss", "train_loss", "seconds_per_epoch")


def parse_values(field: str, text: str) -> list:
    """``"0.1,0.01"`` -> [0.1, 0.01] as the field's type."""
    kind = GRID_FIELDS[field]
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--{field.replace('_', '-')}: expected comma-separated {kind.__name__} values, got {text!r}"
        ) from None


def grid_points(grid: dict) -> list:
    """Every combination of the grid's values, as dicts in the grid's key order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def run_name(point: dict) -> str:
    """The run's folder name: ``lr=0.1,batch_size=64,optimizer=sgd``."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def _train_point(config_fields: dict, threads: int) -> dict:
    """Worker: train one configuration with ``threads`` threads (BLAS's and handgrad's), its share
    of the cores, so that the workers do not fight over them."""
    from .compare import run_config
    from .training import TrainConfig, limited_threads

    with limited_threads(threads):
        history, manifest, status = run_config(TrainConfig(**config_fields))
    last = history[-1]
    return {
        "status": status,
        "parameters": manifest["model"]["parameters"],
        "test_acc": last["test_acc"],
        "best_test_acc": max(r["test_acc"] for r in history),
        "val_acc": last["val_acc"],
        "test_loss": last["test_loss"],
        "train_loss": last["train_loss"],
        "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history),
        "epochs_done": len(history),
    }


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def sweep(
    grid: dict,
    out="runs/sweep",
    workers: int | None = None,
    threads: int | None = None,
    log=print,
    world=None,
    **config_fields,
) -> list:
    """Train every point of ``grid`` ({field: [values]}) with the other ``config_fields`` fixed, in
    up to ``workers`` processes (capped at the core count), which share ``threads`` threads
    (default: the cores) evenly, at least one each. Returns one dict per run: its hyperparameters,
    name, status (trained | resumed | skipped | retrained) and final metrics.

    ``world`` (handgrad.distributed, several ranks under mpiexec or srun): the ranks take the runs
    in turn (run i on rank i mod N), one at a time with ``threads`` threads each, instead of
    worker processes; every rank returns all the rows, and rank 0 alone writes the results."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ..plugins import LOADED, load_plugins
    from .compare import check_specs, with_model
    from .training import TrainConfig

    unknown = [k for k in grid if k not in GRID_FIELDS]
    if unknown:
        raise ValueError(f"cannot sweep over {', '.join(unknown)}; known: {', '.join(GRID_FIELDS)}")
    if not grid or any(not values for values in grid.values()):
        raise ValueError("the grid is empty: give at least one value for each swept option")
    base = TrainConfig(**config_fields)
    check_specs(grid.get("model", [base.model]), base.dataset, base.data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid)
    jobs = {}
    for point in points:
        name = run_name(point)
        config = with_model(replace(base, **point, out=str(out / name)))
        jobs[name] = (point, {f.name: getattr(config, f.name) for f in fields(TrainConfig)})
    if world is not None and world.size > 1:
        return _sweep_on_ranks(jobs, list(grid), out, world, threads or 1, log)
    cores = available_cores()
    budget = threads or cores
    workers = max(1, min(workers or budget, cores, len(jobs)))
    per_worker = max(1, budget // workers)
    log(
        f"sweep: {len(jobs)} runs in {out}, {workers} worker process{'es' if workers > 1 else ''}, "
        f"{per_worker} thread{'s' if per_worker > 1 else ''} each"
    )
    results = {}
    # spawn: a fresh interpreter per worker, safe whatever threads the parent has started
    # ... so each worker imports the parent's plug-ins again, before it unpickles a job
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=load_plugins,
        initargs=(list(LOADED.values()),),
    ) as pool:
        futures = {pool.submit(_train_point, config, per_worker): name for name, (_, config) in jobs.items()}
        for future in as_completed(futures):
            name = futures[future]
            results[name] = {**jobs[name][0], "run": name, **future.result()}
            r = results[name]
            log(f"  {r['status']:<8} {name}: test acc {100 * r['test_acc']:.2f}%")
    rows = [results[name] for name in jobs]
    write_results(rows, list(grid), out)
    return rows


def _sweep_on_ranks(jobs: dict, params: list, out: Path, world, threads: int, log) -> list:
    """``sweep`` across the ranks of ``world``: rank r trains jobs r, r + N, ... in turn; the
    rows are gathered on every rank (one message at the end) and rank 0 writes the table."""
    if not world.is_main:
        log = lambda *args: None  # noqa: E731
    names = list(jobs)
    log(f"sweep: {len(jobs)} runs in {out}, on {world.size} ranks, {threads} thread{'s' if threads > 1 else ''} each")
    mine = {}
    for name in names[world.rank :: world.size]:
        mine[name] = {**jobs[name][0], "run": name, **_train_point(jobs[name][1], threads), "rank": world.rank}
    results = {}
    for part in world.allgather(mine):
        results.update(part)
    rows = [results[name] for name in names]
    for r in rows:
        log(f"  {r['status']:<8} {r['run']} (rank {r['rank']}): test acc {100 * r['test_acc']:.2f}%")
    if world.is_main:
        write_results(rows, params, out)
    world.barrier()  # the files are there when any rank returns
    return rows


def write_results(rows: list, params: list, out) -> None:
    """sweep.json, sweep.csv, parallel.png and sweep.html in ``out``."""
    from .plots import plot_parallel_coordinates

    out = Path(out)
    atomic_write_text(out / "sweep.json", json.dumps({"params": params, "runs": rows}, indent=1))
    columns = ["run"] + params + ["parameters", *METRICS, "status"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    axes = parallel_columns(rows, params)
    png = plot_parallel_coordinates(rows, axes, "test_acc", title=f"{len(rows)} runs, coloured by final test accuracy")
    atomic_write_bytes(out / "parallel.png", png)
    atomic_write_text(out / "sweep.html", sweep_html(rows, columns, axes, png))


def parallel_columns(rows: list, params: list) -> list:
    """The parallel axes of a sweep: the hyperparameters that vary (all of them if none does), then
    the final metrics."""
    varied = [p for p in params if len({str(r[p]) for r in rows}) > 1] or params
    return varied + ["val_acc", "test_acc", "test_loss", "seconds_per_epoch"]


def format_table(rows: list, params: list, sort_by: str = "test_acc") -> str:
    """The runs as text, best first by ``sort_by`` (losses and seconds ascending, the rest descending)."""
    ascending = sort_by.endswith("loss") or sort_by.startswith("seconds")
    ordered = sorted(rows, key=lambda r: r[sort_by], reverse=not ascending)
    head = params + ["test acc", "best test acc", "test loss", "s/epoch"]
    body = [
        [f"{r[p]:g}" if isinstance(r[p], float) else str(r[p]) for p in params]
        + [
            f"{100 * r['test_acc']:.2f}%",
            f"{100 * r['best_test_acc']:.2f}%",
            f"{r['test_loss']:.4f}",
            f"{r['seconds_per_epoch']:.2f}",
        ]
        for r in ordered
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(f"{x:>{w}}" for x, w in zip(line, widths)) for line in [head] + body]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


_SORT_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
.parallel-box,.table-box{max-width:100%;overflow:auto}.table-box{max-height:32em;border:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;
white-space:nowrap}th{cursor:pointer;background:#f0f0f0;position:sticky;top:0}.hint{color:#555;font-size:14px}
img{max-width:100%}"""


def sweep_html(rows: list, columns: list, axes: list, png: bytes) -> str:
    """A self-contained page (plotly.js inline, nothing fetched): the interactive parallel-coordinates
    view over ``axes``, the table of ``columns`` it filters (sorted by clicking a column's head;
    accuracies in percent) and the static figure ``png``."""
    import base64

    from .plots import interactive_scripts, is_accuracy, parallel_view_html

    def cell(column, value):
        if isinstance(value, float):
            shown = f"{100 * value:.2f}%" if is_accuracy(column) else f"{value:.4g}"
        else:
            shown = str(value)
        return f'<td data-v="{html.escape(str(value))}">{html.escape(shown)}</td>'

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        f'<tr data-index="{i}">' + "".join(cell(c, r.get(c, "")) for c in columns) + "</tr>" for i, r in enumerate(rows)
    )
    image = base64.b64encode(png).decode()
    view = parallel_view_html("parallel", rows, axes, "test_acc", "runs", "runs")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>handgrad sweep</title>
<style>{_STYLE}</style>
{interactive_scripts()}</head>
<body><h1>Sweep: {len(rows)} runs</h1>
{view}
<p class="hint">Click a column's head to sort by it; the table shows the runs the view keeps.</p>
<div class="table-box"><table id="runs"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
<details><summary>Static figure (parallel.png)</summary>
<img alt="parallel coordinates" src="data:image/png;base64,{image}"></details>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""
