"""How a handgrad training step should share the cores: Numba's threading layer, and the split of
the thread budget between Numba's kernels and OpenBLAS's products.

    python -m benchmarks threads [--models mlp,lenet5] [--repeats 5] [--max-steps 150] [--out benchmarks/THREADS.md]

Each configuration (threading layer, Numba threads, BLAS threads) trains in a fresh process, with the
configurations interleaved inside each repeat after a warm-up; tables give samples/s as the median
with the min-max. 'tbb' runs where the tbb wheel's library is in the environment (it loads only with
that folder on LD_LIBRARY_PATH, which the child gets). handgrad's default is the first row
(``handgrad.kernels`` loads the wheel's library itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: (threading layer, Numba threads, BLAS threads); the first is handgrad's default.
CONFIGS = [
    ("tbb", 2, 2),
    ("tbb", 1, 2),
    ("tbb", 2, 1),
    ("workqueue", 2, 2),
    ("workqueue", 1, 2),
    ("omp", 2, 2),
]
JOBS = {"mlp": 64, "tiny-cnn": 64, "lenet5": 64}


def _tbb_lib() -> Path | None:
    lib = Path(sys.prefix) / "lib"
    return lib if any(lib.glob("libtbb.so*")) else None


def job(layer, numba_threads, blas_threads, name, batch, steps, data_dir) -> None:
    """In the child: warm up (the kernels load and take the whole budget), then give Numba and BLAS
    their own counts and time ``steps`` steps."""
    sys.path.insert(0, str(ROOT / "src"))
    from benchmarks.__main__ import batches, handgrad_trainer, load_mnist, sgemm_probe

    import numba
    from threadpoolctl import threadpool_limits

    x, y, _, _ = load_mnist(data_dir)
    run = handgrad_trainer(name, x, y)
    run(batches(len(x), batch, 20, seed=1))
    numba.set_num_threads(numba_threads)
    with threadpool_limits(blas_threads, user_api="blas"):
        run(batches(len(x), batch, 10, seed=2))
        before = sgemm_probe()
        start = time.perf_counter()
        run(batches(len(x), batch, steps))
        seconds = time.perf_counter() - start
    result = {"samples_per_s": batch * steps / seconds, "layer": numba.threading_layer(), "probe": before}
    print(json.dumps(result))


def launch(config, name, batch, steps, data_dir) -> dict | None:
    layer, numba_threads, blas_threads = config
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, HANDGRAD_KERNELS="kernels")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "HANDGRAD_NUM_THREADS"):
        env[var] = "2"
    if layer == "tbb":
        lib = _tbb_lib()
        if lib is None:
            return None
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    cmd = [sys.executable, "-m", "benchmarks", "threads", "--job", layer, str(numba_threads), str(blas_threads)]
    cmd += [name, str(batch), str(steps)] + (["--data-dir", data_dir] if data_dir else [])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"threads job {config} {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["layer"] != layer:  # Numba falls back silently where a layer does not load
        raise RuntimeError(f"asked Numba for the {layer!r} threading layer and got {result['layer']!r}")
    return result


def report(results, args, seconds) -> str:
    label = lambda c: f"{c[0]}, Numba {c[1]} / BLAS {c[2]}"  # noqa: E731
    lines = [
        "# Threads: Numba's threading layer and the Numba/BLAS split",
        "",
        f"Command: `python -m benchmarks threads --repeats {args.repeats} --max-steps {args.max_steps}` "
        f"({seconds / 60:.1f} min). Training samples/s at batch 64, float32, 2 cores; each cell the median "
        "(min-max) of interleaved repeats, each in a fresh process; the ratio is over the default (first row).",
        "",
        "| configuration | " + " | ".join(args.models) + " |",
        "|---|" + "---:|" * len(args.models),
    ]
    default = CONFIGS[0]
    for config in CONFIGS:
        cells = []
        for name in args.models:
            runs = results.get((config, name))
            if not runs:
                cells.append("not available")
                continue
            rates = [r["samples_per_s"] for r in runs]
            base = statistics.median(r["samples_per_s"] for r in results[(default, name)])
            med = statistics.median(rates)
            cells.append(f"{med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}), {med / base:.2f}x")
        lines.append(f"| {label(config)} | " + " | ".join(cells) + " |")
    best = {
        name: max((c for c in CONFIGS if results.get((c, name))), key=lambda c: _median(results, c, name))
        for name in args.models
    }
    lines += ["", "Fastest per model: " + "; ".join(f"{n}: {label(c)}" for n, c in best.items()) + "."]
    raw = {f"{label(c)} | {n}": [r["samples_per_s"] for r in runs] for (c, n), runs in results.items()}
    lines += ["", "```json", json.dumps(raw, indent=1), "```", ""]
    return "\n".join(lines)


def _median(results, config, name) -> float:
    return statistics.median(r["samples_per_s"] for r in results[(config, name)])


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST's four IDX files (default: $HANDGRAD_DATA_DIR/mnist)")
    parser.add_argument("--models", default="mlp,tiny-cnn,lenet5")
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "THREADS.md"))
    parser.add_argument("--job", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        layer, numba_threads, blas_threads, name, batch, steps = args.job
        job(layer, int(numba_threads), int(blas_threads), name, int(batch), int(steps), args.data_dir)
        return
    args.models = args.models.split(",")
    started, results = time.perf_counter(), {}
    for r in range(args.repeats):
        order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]  # who goes first rotates
        for name in args.models:
            for config in order:
                res = launch(config, name, JOBS[name], args.max_steps, args.data_dir)
                if res is None:
                    continue
                results.setdefault((config, name), []).append(res)
                print(f"repeat {r + 1}: {name} {config}: {res['samples_per_s']:,.0f} samples/s", file=sys.stderr)
    text = report(results, args, time.perf_counter() - started)
    Path(args.out).write_text(text)
    print(text)
