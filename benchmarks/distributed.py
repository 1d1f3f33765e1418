"""Data-parallel training on this machine: 1 rank x 2 threads against 2 ranks x 1 thread.

    python -m benchmarks distributed [--max-steps 200] [--repeats 3] [--out benchmarks/DISTRIBUTED.md]

For mlp and lenet5 on MNIST at the same global batch, each configuration in its own ``mpiexec -n R``
launch (the implementations interleaved over the repeats), it times ``--max-steps`` optimizer steps
of the very step the Trainer takes (forward and backward on this rank's part of the batch, the
bucketed gradient allreduce, the SGD update) and, inside it, the allreduce alone: its seconds and
bytes per step. It also times the allreduce of each model's gradients split into buckets of several
sizes (the measurement behind distributed.BUCKET_BYTES) and the latency and bandwidth of this
machine's MPI, the two numbers docs/DISTRIBUTED.md's scaling model takes from here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import handgrad  # noqa: E402  (before NumPy, as the CLI does: it sets OPENBLAS_THREAD_TIMEOUT)

JOBS = [("mlp", 64), ("mlp", 256), ("lenet5", 64), ("lenet5", 256)]
CONFIGS = [(1, 2), (2, 1)]  # (ranks, threads per rank): the machine's two cores either way
BUCKETS = [16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
LR, MOMENTUM = 0.05, 0.9
#: The scaling model's networks: (name, bandwidth in Gbit/s, latency per message in seconds). The
#: latencies are typical, not measured here: TCP over 1 and 10 Gbit Ethernet, InfiniBand at 100.
NETWORKS = [("1 Gbit/s Ethernet", 1, 50e-6), ("10 Gbit/s Ethernet", 10, 20e-6), ("100 Gbit/s InfiniBand", 100, 2e-6)]
RANKS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not found:
        raise SystemExit("python -m benchmarks distributed: no mpiexec found (pip install 'handgrad[mpi]')")
    return found


# -- inside one launch (every rank runs this) --------------------------------------------------------
def step_timings(name: str, batch: int, steps: int, data_dir) -> dict | None:
    from handgrad import distributed, nn, optim
    from handgrad.data import Normalizer, load_dataset
    from handgrad.models import build_model

    world = distributed.init()
    ds = load_dataset("mnist", data_dir=data_dir)
    x = Normalizer.fit(ds.train_images)(ds.train_images)
    y = ds.train_labels
    handgrad.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10)
    distributed.broadcast_parameters(model, w=world)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    reducer = distributed.GradientReducer(model.parameters(), world) if world.size > 1 else None
    loader = distributed.ShardedLoader(x, y, batch_size=batch, shuffle=True, seed=0, drop_last=True, w=world)
    batches = iter(loader)

    def step(timed):
        xb, yb = next(batches)
        started = time.perf_counter()
        loss_fn(model(xb), yb)
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        reduce_started = time.perf_counter()
        if reducer is not None:
            reducer.allreduce(len(xb))
        reduced = time.perf_counter()
        opt.step()
        if timed is not None:
            timed["compute"] += reduce_started - started + time.perf_counter() - reduced
            timed["allreduce"] += reduced - reduce_started

    for _ in range(10):  # warm-up: caches, thread pools, MPI's shared-memory channels
        step(None)
    world.barrier()
    timed = {"compute": 0.0, "allreduce": 0.0}
    started = time.perf_counter()
    for _ in range(steps):
        step(timed)
    world.barrier()
    wall = time.perf_counter() - started
    # the slowest rank sets the pace; its compute and allreduce shares are the ones reported
    shares = world.allgather((timed["compute"], timed["allreduce"]))
    compute, allreduce = max(shares, key=lambda s: s[0])
    if not world.is_main:
        return None
    return {
        "model": name,
        "batch": batch,
        "ranks": world.size,
        "threads": handgrad.get_num_threads(),
        "steps": steps,
        "samples_per_s": steps * batch / wall,
        "ms_per_step": 1e3 * wall / steps,
        "compute_ms_per_step": 1e3 * compute / steps,
        "allreduce_ms_per_step": 1e3 * allreduce / steps,
        "allreduce_bytes_per_step": reducer.bytes if reducer else 0,
        "parameters": sum(p.size for p in model.parameters()),
    }


def bucket_timings(repeats: int = 200) -> dict | None:
    """Allreduce of each model's gradient bytes (float32) in buckets of BUCKETS bytes; and the
    latency (8 bytes) and bandwidth (16 MB) of a plain Allreduce between the ranks."""
    import numpy as np
    from mpi4py import MPI

    from handgrad import distributed
    from handgrad.models import build_model

    world = distributed.init()
    comm = world.comm
    out = {"buckets": {}}

    def timed_allreduce(buffers, n):
        for b in buffers:
            comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
        comm.Barrier()
        started = time.perf_counter()
        for _ in range(n):
            for b in buffers:
                comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
        comm.Barrier()
        return (time.perf_counter() - started) / n

    for name in ("mlp", "lenet5"):
        size = sum(p.size for p in build_model(name, (1, 28, 28), 10).parameters())
        row = {}
        for bucket in BUCKETS + [size * 4]:
            per = max(1, bucket // 4)
            buffers = [np.ones(min(per, size - s), np.float32) for s in range(0, size, per)]
            row[str(bucket)] = 1e3 * timed_allreduce(buffers, repeats)
        out["buckets"][name] = {"bytes": size * 4, "ms": row}
    out["latency_us"] = 1e6 * timed_allreduce([np.ones(2, np.float32)], 2000)
    big = np.ones(4 << 20, np.float32)
    seconds = timed_allreduce([big], 20)
    # a ring allreduce moves 2(N-1)/N of the buffer through each link
    n = world.size
    out["bandwidth_gbit_s"] = 8 * big.nbytes * 2 * (n - 1) / n / seconds / 1e9
    out["allreduce_16mb_ms"] = 1e3 * seconds
    return out if world.is_main else None


def job_main(argv) -> None:
    """Entry point of every rank of a launch: ``--job MODEL BATCH`` or ``--buckets``; rank 0 prints JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", nargs=2)
    parser.add_argument("--buckets", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    result = (
        bucket_timings() if args.buckets else step_timings(args.job[0], int(args.job[1]), args.steps, args.data_dir)
    )
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


# -- the driver -------------------------------------------------------------------------------------
def launch(ranks: int, threads: int, job_args: list) -> dict:
    env = {
        **os.environ,
        "HANDGRAD_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT / "src"),
    }
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "benchmarks.distributed", *job_args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST's four IDX files (default: $HANDGRAD_DATA_DIR/mnist)")
    parser.add_argument("--max-steps", type=int, default=200, help="steps timed per launch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "DISTRIBUTED.md"), help="the tables, then the raw numbers as JSON")
    args = parser.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    extra = ["--data-dir", args.data_dir] if args.data_dir else []
    started = time.perf_counter()
    results = {}
    for r in range(args.repeats):
        for name, batch in JOBS:
            order = CONFIGS[r % 2 :] + CONFIGS[: r % 2]  # who goes first alternates
            for ranks, threads in order:
                res = launch(ranks, threads, ["--job", name, str(batch), "--steps", str(args.max_steps)] + extra)
                results.setdefault(f"{name} {batch} {ranks}x{threads}", []).append(res)
                log(
                    f"repeat {r + 1}: {name} batch {batch}, {ranks} rank(s) x {threads} thread(s): "
                    f"{res['samples_per_s']:,.0f} samples/s, allreduce {res['allreduce_ms_per_step']:.3f} ms/step"
                )
    buckets = launch(2, 1, ["--buckets"])
    log(f"allreduce latency {buckets['latency_us']:.1f} us, bandwidth {buckets['bandwidth_gbit_s']:.1f} Gbit/s")
    summary = {}
    for key, runs in results.items():
        med = lambda field: statistics.median(x[field] for x in runs)  # noqa: E731
        summary[key] = {
            field: med(field)
            for field in ("samples_per_s", "ms_per_step", "compute_ms_per_step", "allreduce_ms_per_step")
        }
        summary[key].update(
            min_samples_per_s=min(x["samples_per_s"] for x in runs),
            max_samples_per_s=max(x["samples_per_s"] for x in runs),
            allreduce_bytes_per_step=runs[0]["allreduce_bytes_per_step"],
            parameters=runs[0]["parameters"],
        )
    report = {
        "command": "python -m benchmarks distributed " + " ".join(argv or sys.argv[2:]),
        "minutes": (time.perf_counter() - started) / 60,
        "steps": args.max_steps,
        "repeats": args.repeats,
        "jobs": summary,
        "mpi": buckets,
        "load_average": os.getloadavg(),
    }
    text = format_report(report)
    Path(args.out).write_text(
        f"# Data-parallel training on this machine\n\n{text}\n\n```json\n{json.dumps(report, indent=1)}\n```\n"
    )
    print(text)
    return report


# -- the scaling model --------------------------------------------------------------------------------
def compute_fit(report: dict, name: str) -> tuple:
    """(c0, c1): one rank's compute per step, c0 + c1 * b seconds for b samples on one thread, fitted
    through the two per-rank batches measured with 2 ranks x 1 thread (global 64 and 256)."""
    (b1, t1), (b2, t2) = sorted(
        (batch // 2, report["jobs"][f"{name} {batch} 2x1"]["compute_ms_per_step"] / 1e3)
        for m, batch in JOBS
        if m == name
    )
    c1 = (t2 - t1) / (b2 - b1)
    c0 = t1 - c1 * b1
    if c0 < 0:  # a noisy pair of timings: no fixed cost, the larger batch's time per sample
        c0, c1 = 0.0, t2 / b2
    return c0, c1


def ring_seconds(nbytes: float, ranks: int, gbit_s: float, latency: float) -> float:
    """Ring allreduce: each of the 2(N-1) steps sends 1/N of the buffer and pays one latency."""
    return 2 * (ranks - 1) / ranks * nbytes * 8 / (gbit_s * 1e9) + 2 * (ranks - 1) * latency


def efficiency(c0, c1, nbytes, batch, ranks, gbit_s, latency) -> float:
    """Speed-up over one rank at the same global batch, divided by the ranks (no overlap)."""
    one = c0 + c1 * batch
    return one / (ranks * (c0 + c1 * batch / ranks + ring_seconds(nbytes, ranks, gbit_s, latency)))


def min_batch(c0, c1, nbytes, ranks, gbit_s, latency, target=0.8) -> float:
    """The smallest global batch whose efficiency on ``ranks`` reaches ``target``."""
    a = ring_seconds(nbytes, ranks, gbit_s, latency)
    return max(ranks, (target * ranks * (c0 + a) - c0) / ((1 - target) * c1))


def format_scaling(report: dict) -> str:
    lines = [
        "| model | network | compute/step at batch 256 (1 rank) | allreduce at N=8 | last N >= 80% at batch 256 "
        "| best N at batch 256 (speed-up) | global batch for 80% at N=8 / 64 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("mlp", "lenet5"):
        c0, c1 = compute_fit(report, name)
        nbytes = report["jobs"][f"{name} 64 2x1"]["parameters"] * 4
        for net, gbit, lat in NETWORKS:
            eff = {n: efficiency(c0, c1, nbytes, 256, n, gbit, lat) for n in RANKS}
            good = [n for n in RANKS if eff[n] >= 0.8]
            best = max(RANKS, key=lambda n: n * eff[n])
            peak = f"{best} ({best * eff[best]:.1f}x)" if best * eff[best] > 1 else "1 (no N is faster)"
            lines.append(
                f"| {name} | {net} | {1e3 * (c0 + 256 * c1):.1f} ms | "
                f"{1e3 * ring_seconds(nbytes, 8, gbit, lat):.2f} ms | {max(good) if good else 'none'} | "
                f"{peak} | {min_batch(c0, c1, nbytes, 8, gbit, lat):,.0f} / "
                f"{min_batch(c0, c1, nbytes, 64, gbit, lat):,.0f} |"
            )
    return "\n".join(lines)


def format_report(report: dict) -> str:
    lines = [
        f"`{report['command'].strip()}`: {report['repeats']} repeats of {report['steps']} steps, medians "
        f"(load average at the end {report['load_average'][0]:.1f})",
        "",
        "| model | global batch | 1 rank x 2 threads | 2 ranks x 1 thread | 2 ranks / 1 rank | compute ms/step "
        "(2 ranks) | allreduce ms/step | allreduce bytes/step | communication share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, batch in JOBS:
        one, two = report["jobs"][f"{name} {batch} 1x2"], report["jobs"][f"{name} {batch} 2x1"]
        lines.append(
            f"| {name} | {batch} | {one['samples_per_s']:,.0f}/s | {two['samples_per_s']:,.0f}/s | "
            f"{two['samples_per_s'] / one['samples_per_s']:.2f}x | {two['compute_ms_per_step']:.2f} | "
            f"{two['allreduce_ms_per_step']:.3f} | {two['allreduce_bytes_per_step']:,} | "
            f"{100 * two['allreduce_ms_per_step'] / two['ms_per_step']:.0f}% |"
        )
    mpi = report["mpi"]
    lines += [
        "",
        f"MPI between the two ranks: latency {mpi['latency_us']:.1f} us (8-byte allreduce), "
        f"{mpi['bandwidth_gbit_s']:.1f} Gbit/s (16 MB allreduce in {mpi['allreduce_16mb_ms']:.2f} ms).",
        "",
        "| model | gradient bytes | "
        + " | ".join(f"{int(b) // 1024} KiB buckets" for b in BUCKETS)
        + " | one bucket |",
        "|---|---:|" + "---:|" * (len(BUCKETS) + 1),
    ]
    for name, row in mpi["buckets"].items():
        lines.append(f"| {name} | {row['bytes']:,} | " + " | ".join(f"{v:.3f} ms" for v in row["ms"].values()) + " |")
    fits = {name: compute_fit(report, name) for name in ("mlp", "lenet5")}
    lines += [
        "",
        "Scaling model (docs/DISTRIBUTED.md): one rank's compute per step on one thread, fitted as c0 + c1 * b "
        "on the per-rank batches measured: "
        + "; ".join(f"{name} {1e3 * c0:.2f} ms + {1e6 * c1:.1f} us/sample" for name, (c0, c1) in fits.items())
        + ".",
        "",
        format_scaling(report),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    job_main(sys.argv[1:])
