"""Throughput of handgrad (compiled kernels, and its NumPy references) against PyTorch eager,
scikit-learn (MLP) and the C++ twin, in one run.

    python -m benchmarks --data-dir ../shared/data/mnist        (or HANDGRAD_DATA_DIR; `make bench`)
    python -m benchmarks --quick                                 (a minute or two: 2 repeats, 40 steps)
    python -m benchmarks --models mlp,lenet5 --repeats 3         (some models only)

Implementations: ``handgrad`` (the compiled kernels, the default), ``handgrad-ref``
(HANDGRAD_KERNELS=reference: the plain NumPy references of ``handgrad.functional``), ``torch``,
``sklearn`` (MLP) and ``cpp``. Besides throughput it reports, per model, where a step's time goes
(each layer's forward and backward, the loss, the optimizer step; kernels against references), the
first-call compile time (an empty Numba cache) and the start-up of a second process with the cache
filled (import to the end of the first training step), and ``import handgrad``.

Every timing is repeated (``--repeats``, default 5) with the implementations interleaved inside each
repeat, after a warm-up, each timing in a fresh child process (so no other library's thread pool is
left spinning on the cores); tables give the median and the min-max. Each implementation gets the same
initial weights, the same batches, float32 and the same thread count (``--threads``, default 2).
A short sgemm probe runs before and after every job, so a slow window of a shared machine shows.

Training is timed over ``--max-steps`` optimizer steps (default 300) rather than whole epochs;
seconds per epoch are extrapolated from that rate (60,000 / samples per second).

The machine's limit: the FLOPs of every matrix product of a step (forward, dL/dx, dL/dW; no dL/dx
for the first layer, as neither library computes it), each divided by the sgemm throughput measured
at that same shape with NumPy's BLAS; an implementation's "% of limit" is that time over its own.
"""

from __future__ import annotations

import os
import sys


def _early_threads(argv) -> int:
    """--threads must reach the BLAS and OpenMP runtimes before NumPy or torch load them."""
    threads = 2
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
        elif a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    return threads


if __name__ == "__main__":
    _early_threads(sys.argv[1:])

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import handgrad  # noqa: E402  (before NumPy, as the CLI does: it sets OPENBLAS_THREAD_TIMEOUT)
import numpy as np  # noqa: E402
from handgrad import kernels, nn, optim  # noqa: E402
from handgrad.models import architecture, build_model  # noqa: E402
from handgrad.nn.container import layer_backward  # noqa: E402

LR, MOMENTUM = 0.05, 0.9
TRAIN_JOBS = [("mlp", 64), ("mlp", 128), ("tiny-cnn", 64), ("lenet5", 64)]
INFER_MODELS = ["mlp", "tiny-cnn", "lenet5"]
INFER_BATCH = 1000
CPP = ROOT / "cpp" / "build" / "handgrad-cpp"  # the C++ twin, when `make cpp` has built it
TRAIN_TARGETS = {"mlp": 1.5, "lenet5": 1.5, "tiny-cnn": 1.2}  # training throughput over PyTorch's, at least
INFER_TARGET = 1.2  # inference at batch 1000 over PyTorch's, at least
CPP_TRAIN_TARGETS = {"mlp": 1.0, "lenet5": 1.5, "tiny-cnn": 1.5}  # the C++ twin's training over PyTorch's
CPP_INFER_TARGET = 1.0  # the C++ twin's inference at batch 1000 over PyTorch's
HANDGRAD_IMPLS = {"handgrad": "kernels", "handgrad-ref": "reference"}  # impl -> HANDGRAD_KERNELS
NAMES = {
    "handgrad": "handgrad",
    "handgrad-ref": "handgrad reference",
    "torch": "PyTorch",
    "sklearn": "scikit-learn",
    "cpp": "C++",
}


# -- data ------------------------------------------------------------------------------------------
def load_mnist(data_dir):
    from handgrad.data import Normalizer, load_dataset

    ds = load_dataset("mnist", data_dir=data_dir)
    norm = Normalizer.fit(ds.train_images)
    return norm(ds.train_images), ds.train_labels, norm(ds.test_images), ds.test_labels


def batches(n_train, batch, steps, seed=0):
    """The sample indices of ``steps`` batches: one fixed shuffled order, shared by every implementation."""
    order = np.random.default_rng(seed).permutation(n_train)
    reps = -(-steps * batch // n_train)
    order = np.concatenate([order] * reps)
    return [order[i * batch : (i + 1) * batch] for i in range(steps)]


# -- the three implementations ---------------------------------------------------------------------
def handgrad_model(name):
    handgrad.manual_seed(0)
    return build_model(name, (1, 28, 28), 10)


def torch_model(name):
    """torch.nn twin of the handgrad model, with the same initial weights (state_dict keys agree)."""
    import torch

    tnn = torch.nn
    model = handgrad_model(name)
    layers = []
    for spec in architecture(model):
        kind = spec["type"]
        if kind == "Linear":
            layers.append(tnn.Linear(spec["in_features"], spec["out_features"]))
        elif kind == "Conv2d":
            layers.append(
                tnn.Conv2d(
                    spec["in_channels"],
                    spec["out_channels"],
                    tuple(spec["kernel_size"]),
                    tuple(spec["stride"]),
                    tuple(spec["padding"]),
                )
            )
        elif kind == "MaxPool2d":
            layers.append(tnn.MaxPool2d(tuple(spec["kernel_size"]), tuple(spec["stride"]), tuple(spec["padding"])))
        elif kind == "ReLU":
            layers.append(tnn.ReLU())
        elif kind == "Flatten":
            layers.append(tnn.Flatten())
        else:
            raise ValueError(f"no torch twin for {kind}")
    twin = tnn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def handgrad_trainer(name, x, y):
    model = handgrad_model(name)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def run(index_batches):
        for idx in index_batches:
            out = model(x[idx])
            loss_fn(out, y[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

    return run


def torch_trainer(name, x, y):
    import torch

    model = torch_model(name)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def run(index_batches):
        for idx in index_batches:
            i = torch.from_numpy(idx)
            out = model(tx[i])
            loss = loss_fn(out, ty[i])
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def sklearn_trainer(name, x, y, batch):
    """MLPClassifier with the MLP's layers, SGD with the same lr and momentum; one ``partial_fit``
    is one epoch over the samples it is given (here: the same batches, in order)."""
    from sklearn.neural_network import MLPClassifier

    assert name == "mlp"
    clf = MLPClassifier(
        hidden_layer_sizes=(250, 250),
        activation="relu",
        solver="sgd",
        alpha=0.0,
        batch_size=batch,
        learning_rate_init=LR,
        momentum=MOMENTUM,
        nesterovs_momentum=False,
        shuffle=False,
    )
    flat = x.reshape(len(x), -1)
    clf.partial_fit(flat[:batch], y[:batch], classes=np.arange(10))  # allocates the weights

    def run(index_batches):
        idx = np.concatenate(index_batches)
        clf.partial_fit(flat[idx], y[idx])

    return run


def handgrad_inference(name, x):
    model = handgrad_model(name).eval()

    def run():
        with handgrad.no_grad():
            for s in range(0, len(x), INFER_BATCH):
                model(x[s : s + INFER_BATCH])

    return run


def torch_inference(name, x):
    import torch

    model = torch_model(name).eval()
    tx = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            for s in range(0, len(x), INFER_BATCH):
                model(tx[s : s + INFER_BATCH])

    return run


# -- the machine's limit ---------------------------------------------------------------------------
def gemm_shapes(name, batch, training=True):
    """(M, K, N) of every matrix product of one step: forward; and, training, dL/dW and dL/dx
    (dL/dx skipped for the first layer with parameters). A conv counts as one product over all
    output pixels: (O, C*kH*kW) @ (C*kH*kW, batch*Ho*Wo)."""
    model = handgrad_model(name)
    shapes, first = [], True
    h = np.zeros((1, 1, 28, 28), np.float32)
    with handgrad.no_grad():
        for layer in model:
            x_shape = h.shape
            h = layer(h)
            if isinstance(layer, nn.Linear):
                m, k, n = batch, layer.in_features, layer.out_features
                shapes.append((m, k, n))  # y = x @ W.T
                if training:
                    shapes.append((n, m, k))  # dW = G.T @ x
                    if not first:
                        shapes.append((m, n, k))  # dx = G @ W
                first = False
            elif isinstance(layer, nn.Conv2d):
                o, c, kh, kw = layer.weight.shape
                p = batch * h.shape[2] * h.shape[3]
                shapes.append((o, c * kh * kw, p))  # Y = W @ cols
                if training:
                    shapes.append((o, p, c * kh * kw))  # dW = G @ cols.T
                    if not first:
                        shapes.append((c * kh * kw, o, p))  # dcols = W.T @ G
                first = False
    return shapes


def best_seconds(fn, min_time=0.05):
    """Best time of one call of ``fn``: 5 loops of enough calls to last ``min_time`` each."""
    fn()
    reps = max(1, int(min_time / max(timed(fn), 1e-7)))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def _product(m, k, n, rng):
    """A float32 (M, K) @ (K, N) into a preallocated output, as a no-argument call."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    return lambda: np.matmul(a, b, out=out)


def sgemm_seconds(m, k, n, min_time=0.05):
    """Best time of one float32 (M, K) @ (K, N) with NumPy's BLAS."""
    return best_seconds(_product(m, k, n, np.random.default_rng(0)), min_time)


def limit(name, batch, training=True):
    shapes = gemm_shapes(name, batch, training)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    seconds = sum(sgemm_seconds(*s) for s in shapes)
    return {
        "flops_per_step": flops,
        "limit_s_per_step": seconds,
        "gflops": flops / seconds / 1e9,
        "limit_samples_per_s": batch / seconds,
        "shapes": shapes,
    }


def step_floor(name, batch):
    """A floor for a NumPy training step: its matrix products run back to back (the limit's shapes,
    nothing between them) plus handgrad's SGD update alone (lr and momentum as timed)."""
    rng = np.random.default_rng(0)
    products = [_product(m, k, n, rng) for m, k, n in gemm_shapes(name, batch)]
    model = handgrad_model(name)
    for p in model.parameters():
        p.grad = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(1e-3)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    opt.step()  # the momentum buffers now exist, as in every later step
    seq = best_seconds(lambda: [run() for run in products])
    return {"products_s": seq, "update_s": best_seconds(opt.step)}


def sgemm_probe():
    """GFLOP/s of a fixed 256^3 sgemm: a before/after marker of how fast the machine is right now."""
    s = sgemm_seconds(256, 256, 256, min_time=0.02)
    return 2 * 256**3 / s / 1e9


# -- timing ----------------------------------------------------------------------------------------
def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def clean_repeats(res, impls, slow=0.7):
    """Indices of the repeats in which every implementation's sgemm probes (before and after) stayed
    within ``slow`` of the fastest probe of the run: the others ran in a slow window."""
    best = res["best_probe"]
    probes = res["probe"]  # per repeat, per implementation in run order: [before, after]
    per_repeat = len(impls) * 2
    return [r for r in range(len(res[impls[0]])) if min(probes[r * per_repeat : (r + 1) * per_repeat]) >= slow * best]


def fmt_rate(s):
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


# -- memory and import time (child processes) -------------------------------------------------------
def _status_mib(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024


def reset_peak_rss():
    """Start VmHWM afresh from the current RSS (Linux: write 5 to clear_refs), so loading the data
    does not hide the training's own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_job(impl, name, batch, steps, data_dir):
    """Run in a child: peak RSS after loading the data, and after ``steps`` training steps."""
    x, y, _, _ = load_mnist(data_dir)
    if impl == "torch":
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    base = _status_mib("VmRSS")
    reset_peak_rss()
    trainer = {"handgrad": handgrad_trainer, "torch": torch_trainer}[impl](name, x, y)
    trainer(batches(len(x), batch, steps))
    print(json.dumps({"base_mib": base, "peak_mib": _status_mib("VmHWM")}))


def time_job(impl, kind, name, batch, steps, data_dir):
    """Run in a child: warm up, then time one implementation on one job; print samples/s and the
    sgemm probe before and after. One process per timing, so no thread pool of another library
    (torch's OpenMP, a second OpenBLAS) is left spinning on the cores while this one runs."""
    if impl == "cpp":  # the C++ binary times its own steps (after a warm-up) on batches of MNIST's shape
        before = sgemm_probe()
        # inference: 10 batches of 1000, as many images as MNIST's test set
        res = cpp_bench(name, batch, 10 if kind == "inference" else steps, kind == "inference")
        print(
            json.dumps(
                {
                    "samples_per_s": res["samples_per_s"],
                    "probe": [before, sgemm_probe()],
                    "build": {k: res[k] for k in ("flags", "eigen_threads", "openmp", "gemm") if k in res},
                }
            )
        )
        return
    x, y, tx, _ = load_mnist(data_dir)
    if impl == "torch":
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        torch.set_num_interop_threads(1)
    if kind == "train":
        make = {
            "handgrad": handgrad_trainer,
            "handgrad-ref": handgrad_trainer,
            "torch": torch_trainer,
            "sklearn": lambda n, a, b: sklearn_trainer(n, a, b, batch),
        }[impl]
        run = make(name, x, y)
        run(batches(len(x), batch, 20, seed=1))  # warm-up
        work, samples = batches(len(x), batch, steps), batch * steps
    else:
        run = {"handgrad": handgrad_inference, "handgrad-ref": handgrad_inference, "torch": torch_inference}[impl](
            name, tx
        )
        run()
        work, samples = None, len(tx)
    before = sgemm_probe()
    seconds = timed(run, work) if work is not None else timed(run)
    print(json.dumps({"samples_per_s": samples / seconds, "probe": [before, sgemm_probe()]}))


def cpp_bench(name, batch, steps, inference=False, profile=False):
    """``handgrad-cpp bench --json`` on synthetic batches of MNIST's shape, after a warm-up of 20
    steps (2 for inference); with profile, also each layer's forward and backward, the loss and the
    optimizer step in ms (``"profile"``)."""
    cmd = [str(CPP), "bench", "--model", name, "--batch-size", str(batch), "--steps", str(steps), "--json"]
    cmd += ["--warmup", "2", "--inference"] if inference else ["--warmup", "20"]
    cmd += ["--profile"] if profile else []
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def cpp_profile_table(name, runs):
    """Markdown rows of where a C++ training step's time goes: ``runs`` are the ``"profile"`` lists
    of repeated ``cpp_bench(..., profile=True)`` calls, each a list of ``{"layer", "forward_ms",
    "backward_ms"}``. A cell is the median (min-max) over the runs; 'share' is the piece's part of
    the sum of the medians."""
    labels = [piece["layer"] for piece in runs[0]]
    cells = {
        (j, key): [run[j][key] for run in runs] for j in range(len(labels)) for key in ("forward_ms", "backward_ms")
    }
    total = sum(statistics.median(v) for v in cells.values())
    rows = [f"### {name} (C++)", "", "| piece | forward ms | backward ms | share |", "|---|---|---|---|"]
    for j, label in enumerate(labels):
        fwd, bwd = cells[(j, "forward_ms")], cells[(j, "backward_ms")]
        share = (statistics.median(fwd) + statistics.median(bwd)) / max(total, 1e-12)
        show = lambda v: _ms(v) if max(v) > 0 else "-"  # noqa: E731  (the loss has no backward row of its own)
        rows.append(f"| {label} | {show(fwd)} | {show(bwd)} | {100 * share:.0f}% |")
    rows.append(f"| **sum** | | | {total:.3f} ms |")
    return rows + [""]


def child(args, extra, impl=None):
    """Run ``python -m benchmarks <extra>`` in a fresh process; its last line of output is JSON.
    A handgrad implementation gets its HANDGRAD_KERNELS (kernels or the references)."""
    cmd = [sys.executable, "-m", "benchmarks"] + extra
    env = dict(os.environ)
    if impl in HANDGRAD_IMPLS:
        env["HANDGRAD_KERNELS"] = HANDGRAD_IMPLS[impl]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_seconds(module, repeats=5):
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
        for _ in range(repeats)
    ]
    return summary(times)


# -- where a step's time goes: each layer, the loss and the optimizer, kernels against references --
def op_times(name, batch, x, y, repeats, steps=20):
    """Run in a child: per piece of a training step (each layer's forward and backward, the loss,
    SGD's step), the mean ms over ``steps`` steps, once with the kernels and once with the
    references, alternating which goes first, ``repeats`` times. One model serves both (a step
    runs wholly on one side, as a kernel's cache is for its own backward). A run of layers that
    Sequential fuses (Linear -> ReLU, Conv2d -> ReLU -> MaxPool2d) is one piece, timed as a
    Sequential of its layers: one fused op with the kernels, the layers one by one with the references."""
    model = handgrad_model(name)
    with kernels.use_kernels():
        runs = model._fusable(list(model))
    pieces, names, i = [], [], 0  # a fused run (as a Sequential) or a layer alone
    while i < len(model):
        size = runs.get(i, 1)
        part = model[i : i + size]
        pieces.append(part if size > 1 else part[0])
        names.append(f"{i}-{i + size - 1} " if size > 1 else f"{i} ")
        names[-1] += "+".join(type(layer).__name__ for layer in part)
        i += size
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    # as Sequential.backward: the first layer with parameters needs no input gradient, and nothing
    # below it is run backward
    first = next(i for i, piece in enumerate(pieces) if any(True for _ in piece.parameters()))
    labels = (
        [f"{names[i]} forward" for i in range(len(pieces))]
        + ["CrossEntropyLoss forward", "CrossEntropyLoss backward"]
        + [f"{names[i]} backward" for i in reversed(range(first, len(pieces)))]
        + ["SGD step"]
    )

    def step(idx, clock):
        h = x[idx]
        for piece in pieces:
            h = clock(piece, h)
        clock(loss_fn, h, y[idx])
        g = clock(loss_fn.backward)
        opt.zero_grad()
        for i in reversed(range(first, len(pieces))):
            g = clock(layer_backward, pieces[i], g, i > first)
        clock(opt.step)

    def run(index_batches):
        totals = [0.0] * len(labels)

        def clock(fn, *a):
            t = time.perf_counter()
            out = fn(*a)
            totals[clock.k] += time.perf_counter() - t
            clock.k += 1
            return out

        for idx in index_batches:
            clock.k = 0
            step(idx, clock)
        return [1e3 * t / len(index_batches) for t in totals]

    sides = {"kernels": kernels.use_kernels, "reference": kernels.reference}
    for side in sides.values():  # warm-up: compile (or load) every kernel, touch every buffer
        with side():
            run(batches(len(x), batch, 3, seed=2))
    result = {side: [] for side in sides}
    for r in range(repeats):
        for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            with sides[side]():
                result[side].append(run(batches(len(x), batch, steps, seed=3 + r)))
    return {"labels": labels, **result}


# -- start-up: compiling the kernels, and a second process that finds them cached ----------------------
STARTUP_CODE = """
import time
t0 = time.perf_counter()
import handgrad
t_import = time.perf_counter()
import numpy as np
from handgrad import nn, optim
from handgrad.models import build_model
handgrad.manual_seed(0)
model = build_model({name!r}, (1, 28, 28), 10)
loss_fn = nn.CrossEntropyLoss()
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
rng = np.random.default_rng(0)
x = rng.standard_normal(({batch}, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, {batch})
def step():
    loss_fn(model(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward(), input_grad=False)
    opt.step()
step()
t_first = time.perf_counter()
step()
t_second = time.perf_counter()
import json
print(json.dumps({{"import_s": t_import - t0, "first_step_s": t_first - t_import, "to_first_step_s": t_first - t0,
                  "second_step_s": t_second - t_first}}))
"""


def startup_seconds(name, batch=64, cached_repeats=3):
    """Fresh interpreters on a fresh Numba cache folder: the first compiles every kernel the model
    uses (and fills the cache); the next ``cached_repeats`` load them. Each reports import, the first
    training step (compiling included) and the time from the start of ``import handgrad`` to the end
    of the first step; the references' start-up is timed the same way for comparison."""
    code = STARTUP_CODE.format(name=name, batch=batch)
    runs = {"empty cache": [], "cached": [], "references": []}
    with tempfile.TemporaryDirectory(prefix="handgrad-numba-cache-") as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NUMBA_CACHE_DIR=cache, HANDGRAD_KERNELS="kernels")
        for kind in ["empty cache"] + ["cached"] * cached_repeats + ["references"]:
            run_env = dict(env, HANDGRAD_KERNELS="reference") if kind == "references" else env
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, cwd=ROOT)
            if out.returncode != 0:
                raise RuntimeError(f"start-up run of {name} failed:\n{out.stderr[-3000:]}")
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        kind: {
            key: summary([r[key] for r in rs])
            for key in ("import_s", "first_step_s", "to_first_step_s", "second_step_s")
        }
        for kind, rs in runs.items()
    }


def numba_imported_by_import_handgrad() -> bool:
    code = "import sys, handgrad; print('numba' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.strip()
        == "True"
    )


# -- accuracy: kernels vs references ----------------------------------------------------------------
def one_epoch_accuracy(name, x, y, tx, ty, batch=64):
    model = handgrad_model(name)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    t = time.perf_counter()
    for idx in batches(len(x), batch, len(x) // batch):
        loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    seconds = time.perf_counter() - t
    model.eval()
    with handgrad.no_grad():
        pred = np.concatenate([model(tx[s : s + 1000]).argmax(1) for s in range(0, len(tx), 1000)])
    return float((pred == ty).mean()), seconds


# -- the report ------------------------------------------------------------------------------------
def environment(threads):
    from threadpoolctl import threadpool_info

    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "handgrad": handgrad.__version__,
        "platform": platform.platform(),
        "threads": threads,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "(unset)"),
        "handgrad threads": handgrad.get_num_threads(),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
    }
    try:
        env["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    for mod, dist in (("numba", "numba"), ("torch", "torch"), ("sklearn", "scikit-learn")):
        try:  # the installed version, without importing torch into this process
            env[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[mod] = "not installed"
    env["HANDGRAD_KERNELS"] = os.environ.get("HANDGRAD_KERNELS", "(unset: kernels)")
    env["blas"] = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} threads) "
        f"{Path(i.get('filepath', '')).name}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="folder holding MNIST's four IDX files (default: $HANDGRAD_DATA_DIR/mnist)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; 2 with --quick)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="training steps timed per repeat (default 200; 40 with --quick)"
    )
    parser.add_argument(
        "--models",
        default=",".join(INFER_MODELS),
        help=f"comma-separated subset of {','.join(INFER_MODELS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for development: 2 repeats of 40 steps, no accuracy or memory runs, one cached "
        "start-up run; writes benchmarks/RESULTS-quick.md unless --out is given",
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the one-epoch accuracy check")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--no-startup", action="store_true", help="skip the compile and start-up runs")
    parser.add_argument("--out", default=None, help="the report (default benchmarks/RESULTS.md)")
    parser.add_argument("--rss-job", nargs=3, metavar=("IMPL", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--time-job", nargs=4, metavar=("IMPL", "KIND", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--ops-job", nargs=3, metavar=("MODEL", "BATCH", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.max_steps is None:
        args.max_steps = 40 if args.quick else 200
    if args.out is None:
        args.out = str(HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    if args.quick:
        args.no_accuracy = args.no_memory = True

    if args.time_job:
        impl, kind, name, batch = args.time_job
        time_job(impl, kind, name, int(batch), args.max_steps, args.data_dir)
        return
    if args.rss_job:
        rss_job(args.rss_job[0], args.rss_job[1], int(args.rss_job[2]), args.max_steps, args.data_dir)
        return
    if args.ops_job:
        x, y, _, _ = load_mnist(args.data_dir)
        name, batch, repeats = args.ops_job
        print(json.dumps(op_times(name, int(batch), x, y, int(repeats), steps=5 if args.quick else 20)))
        return

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(INFER_MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(INFER_MODELS)}")
    train_jobs = [job for job in TRAIN_JOBS if job[0] in models]
    infer_models = [m for m in INFER_MODELS if m in models]

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    started = time.perf_counter()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    x, y, tx, ty = load_mnist(args.data_dir)
    log(f"MNIST: train {x.shape}, test {tx.shape}")

    common = (
        ["--threads", str(args.threads), "--max-steps", str(args.max_steps)]
        + (["--data-dir", args.data_dir] if args.data_dir else [])
        + (["--quick"] if args.quick else [])
    )

    limits_before = {job: limit(*job) for job in train_jobs}
    floors_before = {job: step_floor(*job) for job in train_jobs}
    infer_before = {m: limit(m, INFER_BATCH, training=False) for m in infer_models}

    # training and inference: every timing in a fresh child process, implementations interleaved
    train, infer, cpp_build = {}, {}, {}
    cpp = ["cpp"] if CPP.exists() else []
    jobs = [
        ("train", name, batch, ["handgrad", "handgrad-ref", "torch"] + (["sklearn"] if name == "mlp" else []) + cpp)
        for name, batch in train_jobs
    ] + [("inference", m, INFER_BATCH, ["handgrad", "handgrad-ref", "torch"] + cpp) for m in infer_models]
    for r in range(args.repeats):
        for kind, name, batch, impls in jobs:
            table = train.setdefault((name, batch), {}) if kind == "train" else infer.setdefault(name, {})
            order = impls[r % len(impls) :] + impls[: r % len(impls)]  # rotate who goes first
            for impl in order:
                res = child(args, common + ["--time-job", impl, kind, name, str(batch)], impl)
                table.setdefault(impl, []).append(res["samples_per_s"])
                if "build" in res:
                    cpp_build.update(res["build"])
                table.setdefault("probe", []).extend(res["probe"])
            log(
                f"repeat {r + 1}: {kind} {name} batch {batch}: "
                + ", ".join(f"{k} {table[k][-1]:,.0f}/s" for k in order)
            )

    # where each model's step goes, kernels against references (handgrad only in that process)
    ops = {}
    for name in models:
        ops[name] = child(args, common + ["--ops-job", name, "64", str(args.repeats)])
        log(f"per-op times measured: {name}")
    # and the C++ twin's, one piece at a time (`handgrad-cpp bench --profile`), models interleaved
    cpp_ops = {}
    for _ in range(args.repeats if cpp else 0):
        for name in models:
            cpp_ops.setdefault(name, []).append(cpp_bench(name, 64, args.max_steps, profile=True)["profile"])

    startup = {}
    if not args.no_startup:
        for name in models:
            startup[name] = startup_seconds(name, cached_repeats=1 if args.quick else 3)
            s = startup[name]
            log(
                f"start-up {name}: empty cache {s['empty cache']['to_first_step_s']['median']:.2f} s, "
                f"cached {s['cached']['to_first_step_s']['median']:.2f} s"
            )

    # limits
    # the limit is the machine at its fastest: the better of a measurement before and after the timings
    faster = lambda a, b: a if a["limit_s_per_step"] <= b["limit_s_per_step"] else b  # noqa: E731
    limits = {job: faster(limits_before[job], limit(*job)) for job in train_jobs}
    infer_limits = {m: faster(infer_before[m], limit(m, INFER_BATCH, training=False)) for m in infer_models}
    floors = {}
    for job in train_jobs:
        after = step_floor(*job)
        floors[job] = min(floors_before[job], after, key=lambda f: f["products_s"] + f["update_s"])
    log("limits measured")

    memory = {}
    if not args.no_memory:
        for name in models:
            for impl in ("handgrad", "torch"):
                memory[(name, 64, impl)] = child(args, common + ["--rss-job", impl, name, "64"], impl)
        log("memory measured")
    imports = {"handgrad": import_seconds("handgrad"), "torch": import_seconds("torch")}
    imports["numba imported by import handgrad"] = numba_imported_by_import_handgrad()

    accuracy = {}
    if not args.no_accuracy:
        for name in models:
            with kernels.use_kernels():
                fast = one_epoch_accuracy(name, x, y, tx, ty)
            with kernels.reference():
                ref = one_epoch_accuracy(name, x, y, tx, ty)
            accuracy[name] = (fast, ref)
            log(f"accuracy {name}: kernels {fast[0]:.4f} ({fast[1]:.1f} s), reference {ref[0]:.4f} ({ref[1]:.1f} s)")

    env = environment(args.threads)
    if cpp_build:
        env["handgrad-cpp"] = cpp_build
    text = report(
        args,
        argv,
        env,
        train,
        infer,
        limits,
        infer_limits,
        floors,
        memory,
        imports,
        accuracy,
        ops,
        startup,
        time.perf_counter() - started,
        cpp_ops,
    )
    Path(args.out).write_text(text)
    print(text)


def _cpp_build_text(env) -> str:
    b = env.get("handgrad-cpp")
    if not b:
        return "not built in this run"
    products = (
        f"products in {b['gemm']} (1 thread per chunk of the batch)"
        if "gemm" in b
        else f"Eigen on {b['eigen_threads']} thread(s)"
    )
    return f"built with {b['flags']}, {products}, OpenMP {'on' if b['openmp'] else 'off'}"


def _ratios(res, a, b, keep):
    ratios = [res[a][r] / res[b][r] for r in keep]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})", statistics.median(ratios)


def _cpp_ratio(res, keep, cpp_headline, job):
    """The 'C++ / PyTorch' cell of a row, '-' when the C++ twin was not timed; a timed one also goes
    into cpp_headline as (*job[:3], median ratio, target) for the targets table."""
    if "cpp" not in res:
        return "-"
    text, ratio = _ratios(res, "cpp", "torch", keep)
    cpp_headline.append((*job[:3], ratio, job[3]))
    return text


def _ms(values):
    s = summary(values)
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def report(
    args, argv, env, train, infer, limits, infer_limits, floors, memory, imports, accuracy, ops, startup, total, cpp_ops
):
    cmd = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    L = [
        "# handgrad benchmarks",
        "",
        f"Command: `{cmd.strip()}` ({total / 60:.1f} min). MNIST, float32, {args.threads} threads for every "
        f"implementation, {args.repeats} repeats interleaved across implementations after a warm-up, each timing "
        "in a fresh child process (torch's OpenMP and NumPy's OpenBLAS threads spin after work, and Numba binds "
        "to torch's libgomp when torch is imported first, so no two libraries share a timed process); each cell "
        "is the median with the min-max in brackets.",
        "",
        "'handgrad' runs the compiled kernels (`handgrad.kernels`, Numba), 'handgrad reference' the same models "
        "on the plain NumPy references of `handgrad.functional` (`HANDGRAD_KERNELS=reference`).",
        "",
        f"Training is timed over {args.max_steps} SGD steps (lr {LR}, momentum {MOMENTUM}, cross-entropy) per "
        "repeat, not whole epochs: s/epoch = 60,000 / (samples/s). All implementations start from the same "
        "weights and see the same batches.",
        "",
    ]
    headline, cpp_headline = [], []
    if train or infer:
        best_probe = max(p for res in list(train.values()) + list(infer.values()) for p in res["probe"])
        for res in list(train.values()) + list(infer.values()):
            res["best_probe"] = best_probe
    if train:
        L += [
            "## Training throughput (samples/s)",
            "",
            "'clean' counts the repeats whose sgemm probes (before and after every implementation's timing) all "
            "stayed within 70% of the run's fastest probe; only those enter the table (all of them if none is "
            "clean). A ratio is the median (min-max) of the per-repeat ratios.",
            "",
            "The C++ column is `handgrad-cpp bench` (the C++ twin in `cpp/`, " + _cpp_build_text(env) + "), "
            "timed in the same run, interleaved like the others, on batches of MNIST's shape.",
            "",
            "| model | batch | clean | handgrad | handgrad reference | PyTorch | scikit-learn | C++ "
            "| kernels / reference | handgrad / PyTorch | C++ / PyTorch | handgrad % of limit | PyTorch % of limit "
            "| handgrad s/epoch | PyTorch s/epoch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for (name, batch), res in train.items():
        impls = [k for k in ("handgrad", "handgrad-ref", "torch", "sklearn", "cpp") if k in res]
        keep = clean_repeats(res, impls) or list(range(len(res["handgrad"])))
        res["kept"] = keep
        cell = {k: fmt_rate(summary([res[k][r] for r in keep])) if k in res else "-" for k in NAMES}
        hg, pt = summary([res["handgrad"][r] for r in keep]), summary([res["torch"][r] for r in keep])
        lim = limits[(name, batch)]["limit_samples_per_s"]
        vs_ref, _ = _ratios(res, "handgrad", "handgrad-ref", keep)
        vs_torch, ratio = _ratios(res, "handgrad", "torch", keep)
        cpp_vs_torch = _cpp_ratio(res, keep, cpp_headline, (name, "train", batch, CPP_TRAIN_TARGETS[name]))
        L.append(
            f"| {name} | {batch} | {len(keep)}/{len(res['handgrad'])} | {cell['handgrad']} | {cell['handgrad-ref']} "
            f"| {cell['torch']} | {cell['sklearn']} | {cell['cpp']} | {vs_ref} | {vs_torch} | {cpp_vs_torch} "
            f"| {100 * hg['median'] / lim:.0f}% | {100 * pt['median'] / lim:.0f}% "
            f"| {60000 / hg['median']:.1f} | {60000 / pt['median']:.1f} |"
        )
        headline.append((name, "train", batch, ratio))
    if infer:
        L += [
            "",
            f"## Inference throughput (samples/s, batch {INFER_BATCH}, the 10,000 test images)",
            "",
            "| model | clean | handgrad | handgrad reference | PyTorch | C++ | kernels / reference "
            "| handgrad / PyTorch | C++ / PyTorch | handgrad % of limit | PyTorch % of limit |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for m, res in infer.items():
        impls = [k for k in ("handgrad", "handgrad-ref", "torch", "cpp") if k in res]
        keep = clean_repeats(res, impls) or list(range(len(res["handgrad"])))
        hg, ref, pt = (summary([res[k][r] for r in keep]) for k in impls[:3])
        cpp_cell = fmt_rate(summary([res["cpp"][r] for r in keep])) if "cpp" in res else "-"
        vs_ref, _ = _ratios(res, "handgrad", "handgrad-ref", keep)
        vs_torch, ratio = _ratios(res, "handgrad", "torch", keep)
        cpp_vs_torch = _cpp_ratio(res, keep, cpp_headline, (m, "inference", INFER_BATCH, CPP_INFER_TARGET))
        lim = infer_limits[m]["limit_samples_per_s"]
        L.append(
            f"| {m} | {len(keep)}/{len(res['handgrad'])} | {fmt_rate(hg)} | {fmt_rate(ref)} | {fmt_rate(pt)} "
            f"| {cpp_cell} | {vs_ref} | {vs_torch} | {cpp_vs_torch} | {100 * hg['median'] / lim:.0f}% "
            f"| {100 * pt['median'] / lim:.0f}% |"
        )
        headline.append((m, "inference", INFER_BATCH, ratio))

    if ops:
        L += [
            "",
            "## Where a training step's time goes (ms per step, batch 64)",
            "",
            "Measured in a child process of its own (handgrad alone), one model and one SGD optimizer: each layer's "
            "forward and backward (a run that Sequential fuses, such as 1-2 Linear+ReLU, as one: its fused kernel "
            "against the layers' references one by one), the loss and the optimizer step, timed around each call; "
            "the kernels and the "
            f"references alternate on the same model, {args.repeats} repeats of "
            f"{5 if args.quick else 20} steps each. A layer's time includes its products (OpenBLAS, the same on "
            "both sides). 'share' is that op's part of the kernels' step.",
            "",
        ]
    for name, res in ops.items():
        kern, ref = np.array(res["kernels"]), np.array(res["reference"])  # (repeats, ops)
        kern_total = float(np.median(kern.sum(axis=1)))
        L += [
            f"### {name}",
            "",
            "| op | kernels ms | reference ms | reference / kernels | share |",
            "|---|---|---|---|---|",
        ]
        for j, label in enumerate(res["labels"]):
            k, r = kern[:, j], ref[:, j]
            L.append(
                f"| {label} | {_ms(k)} | {_ms(r)} | {np.median(r) / max(np.median(k), 1e-9):.2f}x "
                f"| {100 * np.median(k) / kern_total:.0f}% |"
            )
        L.append(
            f"| **step** | {_ms(kern.sum(axis=1))} | {_ms(ref.sum(axis=1))} | "
            f"{np.median(ref.sum(axis=1)) / kern_total:.2f}x | 100% |"
        )
        L.append("")

    if cpp_ops:
        L += [
            "## Where a C++ training step's time goes (ms per step, batch 64)",
            "",
            "`handgrad-cpp bench --profile` (2 threads, synthetic batches of MNIST's shape, SGD): each layer's "
            "forward and backward, the loss (forward and backward together) and the optimizer step, timed one "
            f"piece at a time after the timed run, {args.repeats} runs of {args.max_steps} steps interleaved "
            "across models. A run of layers the C++ fuses (Conv2d+ReLU+MaxPool2d, Linear+ReLU) is one piece; a "
            "convolution's time includes its unfold/fold (or its direct loops) and its matrix products.",
            "",
        ]
        for name, runs in cpp_ops.items():
            L += cpp_profile_table(name, runs)

    if startup:
        L += [
            "## Compiling and start-up (s)",
            "",
            "Fresh interpreters on a fresh Numba cache folder (`NUMBA_CACHE_DIR`, a temporary directory), a "
            "synthetic batch of 64: 'empty cache' compiles every kernel the model uses (and fills the cache); "
            "'cached' is a second process that loads them; 'references' runs `HANDGRAD_KERNELS=reference`, "
            "nothing compiled. 'to first step' counts from the start of `import handgrad` to the end of the "
            "first training step (data loading excluded).",
            "",
            "| model | run | import | first step | to first step | second step (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for name, kinds in startup.items():
            for kind, t in kinds.items():
                L.append(
                    f"| {name} | {kind} | {t['import_s']['median']:.3f} | {t['first_step_s']['median']:.3f} "
                    f"| {t['to_first_step_s']['median']:.3f} ({t['to_first_step_s']['min']:.3f}-"
                    f"{t['to_first_step_s']['max']:.3f}) | {1e3 * t['second_step_s']['median']:.1f} |"
                )
        L.append("")

    if limits or infer_limits:
        L += [
            "## The machine's limit",
            "",
            "FLOPs of every matrix product (forward, dL/dW, dL/dx except the first layer's), each divided by "
            "NumPy's sgemm throughput measured at that shape (M, K, N; a conv as one product over all output pixels).",
            "",
            "| job | GFLOP per step | GFLOP per epoch | sgemm GFLOP/s at these shapes | limit samples/s | limit s/epoch |",
            "|---|---|---|---|---|---|",
        ]
    for (name, batch), lim in limits.items():
        L.append(
            f"| {name} train, batch {batch} | {lim['flops_per_step'] / 1e9:.4f} | "
            f"{lim['flops_per_step'] * 60000 / batch / 1e9:.1f} | {lim['gflops']:.1f} | "
            f"{lim['limit_samples_per_s']:,.0f} | {60000 / lim['limit_samples_per_s']:.2f} |"
        )
    for m, lim in infer_limits.items():
        L.append(
            f"| {m} inference, batch {INFER_BATCH} | {lim['flops_per_step'] / 1e9:.4f} | "
            f"{lim['flops_per_step'] * 10 / 1e9:.2f} (10k test) | {lim['gflops']:.1f} | "
            f"{lim['limit_samples_per_s']:,.0f} | - |"
        )
    if floors:
        L += [
            "",
            "## What the training targets leave room for",
            "",
            "A step's floor: its matrix products back to back (the shapes above, nothing between them) plus "
            "handgrad's SGD update alone (the compiled one-pass update). The last columns set that floor against "
            "PyTorch's median step in this run and what the target ratio (1.5x for mlp and lenet5, 1.2x for "
            "tiny-cnn) allows per step.",
            "",
            "| job | limit ms/step | products back to back | SGD update | floor ms/step | floor % of limit "
            "| PyTorch ms/step | target ratio allows |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for (name, batch), f in floors.items():
        lim_ms = 1e3 * limits[(name, batch)]["limit_s_per_step"]
        floor_ms = 1e3 * (f["products_s"] + f["update_s"])
        res = train[(name, batch)]
        torch_ms = 1e3 * batch / statistics.median([res["torch"][r] for r in res["kept"]])
        target = TRAIN_TARGETS[name]
        L.append(
            f"| {name} train, batch {batch} | {lim_ms:.3f} | {1e3 * f['products_s']:.3f} | {1e3 * f['update_s']:.3f} "
            f"| {floor_ms:.3f} | {100 * lim_ms / floor_ms:.0f}% | {torch_ms:.3f} | "
            f"{torch_ms / target:.3f} ({target}x) |"
        )
    if train or infer:
        probes = [p for res in list(train.values()) + list(infer.values()) for p in res["probe"]]
        L += [
            "",
            f"sgemm probe (256^3, before and after every job): {min(probes):.0f}-{max(probes):.0f} GFLOP/s, "
            f"median {statistics.median(probes):.0f}: the spread says how steady the machine was during the run.",
            "",
        ]
    if memory:
        L += [
            "## Peak memory (RSS) of training",
            "",
            f"Child processes, one per implementation, {args.max_steps} steps; 'data' is the RSS after "
            "imports and loading MNIST (float32), 'peak' after training.",
            "",
            "| model | batch | handgrad data / peak (MiB) | PyTorch data / peak (MiB) | handgrad growth | PyTorch growth |",
            "|---|---|---|---|---|---|",
        ]
        for name, batch in sorted({(n, b) for n, b, _ in memory}, key=lambda k: INFER_MODELS.index(k[0])):
            h, p = memory[(name, batch, "handgrad")], memory[(name, batch, "torch")]
            L.append(
                f"| {name} | {batch} | {h['base_mib']:.0f} / {h['peak_mib']:.0f} | {p['base_mib']:.0f} / "
                f"{p['peak_mib']:.0f} | {h['peak_mib'] - h['base_mib']:.0f} MiB | {p['peak_mib'] - p['base_mib']:.0f} MiB |"
            )
        L.append("")
    L += ["## Import time (s, fresh interpreter, 5 runs)", "", "| module | median | min-max |", "|---|---|---|"]
    for k in ("handgrad", "torch"):
        s = imports[k]
        L.append(f"| `import {k}` | {s['median']:.3f} | {s['min']:.3f}-{s['max']:.3f} |")
    L += [
        "",
        f"`import handgrad` imports Numba: {'yes' if imports['numba imported by import handgrad'] else 'no'} "
        "(it is imported on the first kernel call).",
        "",
    ]
    if accuracy:
        L += [
            "## Accuracy after one epoch: kernels vs references",
            "",
            "One epoch (937 steps, batch 64, same weights and batches), test accuracy, in the parent process: "
            "`kernels.use_kernels()` against `kernels.reference()`.",
            "",
            "Both run in float32 with different summation orders, so the two SGD trajectories drift apart by "
            "rounding; a few tenths of a percent either way is that drift, not a change in the math (the "
            "tests/test_kernels_*.py files hold every kernel equal to its reference).",
            "",
            "| model | kernels | reference | kernels s/epoch | reference s/epoch |",
            "|---|---|---|---|---|",
        ]
        for name, ((fa, fs), (ra, rs)) in accuracy.items():
            L.append(f"| {name} | {100 * fa:.2f}% | {100 * ra:.2f}% | {fs:.1f} | {rs:.1f} |")
        L.append("")
    L += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, kind, batch, ratio in headline:
        target = TRAIN_TARGETS[name] if kind == "train" else INFER_TARGET
        L.append(
            f"| {name} {kind}, batch {batch}: >= {target}x PyTorch | {ratio:.2f}x | {'yes' if ratio >= target else 'no'} |"
        )
    for name, kind, batch, ratio, target in cpp_headline:
        L.append(
            f"| C++ {name} {kind}, batch {batch}: >= {target}x PyTorch | {ratio:.2f}x "
            f"| {'yes' if ratio >= target else 'no'} |"
        )
    L.append(
        f"| `import handgrad` < 0.3 s | {imports['handgrad']['median']:.3f} s | "
        f"{'yes' if imports['handgrad']['median'] < 0.3 else 'no'} |"
    )
    for name, kinds in startup.items():
        t = kinds["cached"]["to_first_step_s"]["median"]
        L.append(
            f"| {name}: a cached second process trains within 1 s | {t:.2f} s to the first step "
            f"| {'yes' if t < 1 else 'no'} |"
        )
    distributed = HERE / "DISTRIBUTED.md"  # `python -m benchmarks distributed`, run before this by `make bench`
    if distributed.exists():
        tables = distributed.read_text().split("```json")[0].strip().splitlines()[1:]  # its tables, not its JSON
        L += ["", "## Beyond one machine: data-parallel training under mpiexec (from DISTRIBUTED.md)", ""] + tables
    threads = HERE / "THREADS.md"  # `python -m benchmarks threads`, run before this by `make bench`
    if threads.exists():
        tables = threads.read_text().split("```json")[0].strip().splitlines()[1:]
        L += ["", "## Threads: the threading layer and the Numba/BLAS split (from THREADS.md)", ""] + tables
    L += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()] + [""]
    return "\n".join(L)


if __name__ == "__main__":
    if sys.argv[1:2] == ["distributed"]:  # data-parallel training under mpiexec: benchmarks/distributed.py
        from benchmarks.distributed import run

        run(sys.argv[2:])
    elif sys.argv[1:2] == ["threads"]:  # the threading layer and the Numba/BLAS split: benchmarks/threads.py
        from benchmarks.threads import run as run_threads

        run_threads(sys.argv[2:])
    else:
        main()
