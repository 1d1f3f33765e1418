"""Training and evaluation: the loop the CLI runs, with history, checkpoints, resume and a stop on
non-finite values. Data flows one way: batches -> model.forward -> loss -> loss.backward ->
model.backward -> optimizer.step.

A run directory holds ``best.safetensors`` (lowest validation loss), ``last.safetensors``,
``resume.safetensors`` (model, optimizer, scheduler, RNG state and position: all a resume needs, in
one atomic file), ``history.json``, ``history.csv`` (one row per epoch), ``steps.csv`` (one row per
step: see STEPS_FILE), ``curves.png`` and ``manifest.json``, and ``.lock``, which a run holds
(``fcntl.flock``) for as long as it writes there.

What a run promises: no two runs write one folder (the lock); a new run never mixes its files with
another run's (``--overwrite`` replaces that run, ``--resume`` continues it); a resumed run works in
the folder it is given and keeps its settings; no checkpoint ever holds a NaN or an infinity; Ctrl-C
and SIGTERM stop between two steps and save the state.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import _random, distributed, nn, optim
from .._grad_mode import no_grad
from ..errors import HandgradError
from ..files import atomic_write_text
from ..models import build_model, defaults_for
from ..serialization import load_tensors, save, save_tensors


class TrainingDiverged(HandgradError):
    """A loss, a gradient, a weight or the optimizer's state became NaN or infinite; the run stopped
    without saving them."""


class RunFolderBusy(HandgradError):
    """Another process is writing to the run folder (it holds the folder's lock)."""


class RunFolderTaken(HandgradError):
    """A new run was started in a folder that holds another run."""


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (``timeout``, job schedulers) stopped the run between two steps."""

    def __init__(self, signum: int, collective: bool = False):
        self.signum = int(signum)
        self.collective = collective  # every rank of a data-parallel run stops at this same step
        super().__init__(self.signum)  # the args rebuild it when a sweep worker sends it back

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means the model's default (see models.MODELS)."""

    dataset: str = "digits"
    model: str = "mlp"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None  # sgd | adam | adamw | rmsprop | adagrad
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None  # cosine | step | multistep | plateau | none
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    train_size: int | None = None
    val_fraction: float = 0.1
    hidden: list | None = None
    activation: str = "relu"
    layers: str | None = None  # a layer spec (models.parse_layer_spec)
    bias: bool = True  # False: no Linear or Conv2d has a bias
    init: str = "default"  # how their weights are drawn (models.INITS)
    loss: str | None = None  # cross_entropy | mse
    reduction: str | None = None  # how the loss sums its batch (REDUCTIONS); None: the loss's default
    grad_norm_every: int = 50  # record per-layer gradient norms every this many steps

    def resolved(self) -> TrainConfig:
        d = defaults_for(self.model if not (self.hidden or self.layers) else "custom")
        values = asdict(self)
        for f in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "loss"):
            if values[f] is None:
                values[f] = getattr(d, f)
        if values["out"] is None:
            values["out"] = str(Path("runs") / f"{self.dataset}-{self.model}")
        return TrainConfig(**values)


def make_optimizer(config: TrainConfig, params):
    assert config.lr is not None and config.momentum is not None and config.weight_decay is not None, "not resolved"
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adagrad":
        return optim.Adagrad(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; known: sgd, adam, adamw, rmsprop, adagrad")


def make_scheduler(config: TrainConfig, optimizer, last_epoch: int = -1):
    """The schedule laid over ``config.epochs``. ``last_epoch`` >= 0 starts it part-way, at its lr
    for epoch ``last_epoch + 1`` computed from the groups' ``initial_lr`` (which they must hold), as
    when a resumed run changes its length. ``plateau`` is stepped with the validation loss."""
    assert config.epochs is not None, "a resolved TrainConfig"
    if config.schedule in (None, "none"):
        return None
    if last_epoch >= 0:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
    scheduler: optim.LRScheduler
    if config.schedule == "cosine":
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.schedule == "step":
        scheduler = optim.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    elif config.schedule == "multistep":  # decay by 10 at half and three quarters of the run
        scheduler = optim.MultiStepLR(optimizer, milestones=[config.epochs // 2, config.epochs * 3 // 4], gamma=0.1)
    elif config.schedule == "plateau":  # its state does not depend on the run's length
        return optim.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; known: cosine, step, multistep, plateau, none")
    if last_epoch >= 0:
        scheduler._update_lr(last_epoch + 1)  # the closed form, as torch's step(epoch) but without its warning
    return scheduler


#: The reductions of each loss, its default first (see Objective).
REDUCTIONS = {"cross_entropy": ("mean", "sum"), "mse": ("batchmean", "mean", "sum")}


class Objective:
    """The loss a run minimises over a batch of N samples, and the targets it takes: class indices
    for cross-entropy, one-hot rows t_n for MSE (against the outputs y_n). The reduction says how
    the batch's losses combine (REDUCTIONS; the first is the default):

        cross_entropy  mean       1/N sum_n -log softmax(y_n)[label_n]
                       sum        sum_n -log softmax(y_n)[label_n]
        mse            batchmean  1/N sum_n ||y_n - t_n||^2      (summed over the classes: the
                                                                  quadratic cost, whose gradient
                                                                  does not shrink with the classes)
                       mean       1/(N C) sum_n ||y_n - t_n||^2  (torch's MSELoss default)
                       sum        sum_n ||y_n - t_n||^2

    With 'sum' the gradient grows with the batch size, so the learning rate must shrink with it.
    ``sample_mean`` turns a batch's loss into its mean per sample (what the history records)."""

    def __init__(self, kind: str, num_classes: int, reduction: str | None = None):
        if kind not in REDUCTIONS:
            raise ValueError(f"unknown loss {kind!r}; known: {', '.join(REDUCTIONS)}")
        if reduction is not None and reduction not in REDUCTIONS[kind]:
            raise HandgradError(option("reduction"), f"{kind} takes {' or '.join(REDUCTIONS[kind])}, got {reduction!r}")
        self.kind, self.num_classes = kind, num_classes
        self.reduction = reduction or REDUCTIONS[kind][0]
        inner = "sum" if self.reduction == "batchmean" else self.reduction  # divided by N here
        self.fn = nn.CrossEntropyLoss(reduction=inner) if kind == "cross_entropy" else nn.MSELoss(reduction=inner)
        self.scale = 1.0

    def targets(self, output, labels):
        """What the loss layer compares ``output`` with: the labels, or their one-hot rows."""
        return labels if self.kind == "cross_entropy" else np.eye(self.num_classes, dtype=output.dtype)[labels]

    def __call__(self, output, labels) -> float:
        self.scale = float(max(len(output), 1)) if self.reduction == "batchmean" else 1.0
        return self.fn(output, self.targets(output, labels)) / self.scale

    def backward(self):
        return self.fn.backward(1.0 / self.scale)

    def sample_mean(self, loss: float, n: int) -> float:
        """The mean per-sample loss of a batch of ``n`` whose loss (as reduced) is ``loss``."""
        return loss / max(n, 1) if self.reduction == "sum" else loss


@dataclass
class Data:
    """The arrays a run trains and evaluates on, already normalised with the training statistics."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list
    normalization: dict
    files: dict = field(default_factory=dict)
    source: str = ""


def validation_size(available: int, val_fraction: float, train_size: int | None = None, where: str = "") -> int:
    """How many of the ``available`` training-set images a run sets aside for validation: the
    fraction ``val_fraction`` of them; with ``train_size`` N, as many as keep the same proportion to
    N, round(N f / (1 - f)), so that validation is the fraction f of the images the run uses
    (N = 1,000 with f = 0.1: 111 validation images, not a tenth of all 60,000). At least 1."""
    if not train_size:
        return max(1, int(round(val_fraction * available)))
    val = max(1, int(round(train_size * val_fraction / (1 - val_fraction))))
    if train_size + val > available:
        largest = int(available * (1 - val_fraction)) + 1
        while largest + max(1, int(round(largest * val_fraction / (1 - val_fraction)))) > available:
            largest -= 1
        raise HandgradError(
            option("train_size"),
            f"{train_size} training images and their proportionate validation "
            f"set of {val} (--val-fraction {val_fraction:g}) need {train_size + val} "
            f"images; the {where} training set has {available}: give at most "
            f"{largest}",
        )
    return val


def prepare_data(config: TrainConfig) -> Data:
    """The run's arrays. Validation: see ``validation_size``; with ``train_size`` the validation
    set is drawn first (stratified), then the training subset from the rest (stratified)."""
    from ..data import Normalizer, load_dataset, stratified_subset, train_val_split

    ds = load_dataset(config.dataset, data_dir=config.data_dir)
    val_size = validation_size(len(ds.train_labels), config.val_fraction, config.train_size, ds.name)
    train_x, train_y, val_x, val_y = train_val_split(
        ds.train_images, ds.train_labels, val_size=val_size, seed=config.seed
    )
    if config.train_size:
        train_x, train_y = stratified_subset(train_x, train_y, config.train_size, seed=config.seed)
    norm = Normalizer.fit(train_x)  # training statistics only: never the validation or test set's
    return Data(
        norm(train_x),
        train_y,
        norm(val_x),
        val_y,
        norm(ds.test_images),
        ds.test_labels,
        list(ds.classes),
        norm.to_dict(),
        dict(ds.files),
        str(ds.source),
    )


def evaluate(model, x, y, objective: Objective | None = None, batch_size: int = 1000):
    """(mean loss, accuracy, logits) over the whole set, in eval mode and without caches."""
    from ..metrics import accuracy

    was_training = model.training
    model.eval()
    outputs, loss_sum = [], 0.0
    with no_grad():
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size])
            if objective is not None:
                loss_sum += objective.sample_mean(objective(out, y[start : start + batch_size]), len(out)) * len(out)
            outputs.append(out)
    model.train(was_training)
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    acc = accuracy(y, logits.argmax(axis=1)) if len(y) else float("nan")
    return (loss_sum / max(len(x), 1)), acc, logits


def find_nonfinite(model, x, y, objective) -> str:
    """Replay one batch layer by layer and name the first place a NaN or infinity appears."""
    h = x
    for i, layer in enumerate(model):
        h = layer(h)
        if not np.isfinite(h).all():
            return f"the forward of layer {i} ({layer!r})"
    loss = objective(h, y)
    if not np.isfinite(loss):
        return "the loss"
    g = objective.backward()
    for i in reversed(range(len(model))):
        layer = model[i]
        g = layer.backward(g)
        grads = [p.grad for p in layer.parameters() if p.grad is not None] + ([g] if g is not None else [])
        if not all(np.isfinite(a).all() for a in grads):
            return f"the backward of layer {i} ({layer!r})"
    return "no layer on replay (the values were finite again)"


def grad_norms(model) -> dict:
    return {name: float(np.linalg.norm(p.grad)) for name, p in model.named_parameters() if p.grad is not None}


def environment() -> dict:
    """Versions that decide the numbers a run produces."""
    from .. import __version__, get_num_threads

    env = {
        "handgrad": __version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "threads": get_num_threads(),
    }
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    except ImportError:
        env["blas"] = "threadpoolctl not installed"
    return env


# -- the run folder ------------------------------------------------------------------------------
#: What a run writes into its folder. A folder holding any of them holds a run; ``--overwrite``
#: removes exactly these (and their leftover temporary files), never anything else.
RUN_FILES = (
    "manifest.json",
    "resume.safetensors",
    "best.safetensors",
    "last.safetensors",
    "history.json",
    "history.csv",
    "steps.csv",
    "curves.png",
    "report.html",
)

#: The per-step history: a header, then one row per optimizer step, ``step,epoch,loss,acc`` (the
#: global step from 1, the epoch from 1, the batch's mean loss and accuracy). Rows are appended
#: once per epoch, in one write; the resume file records the file's length at each save, and a
#: resumed run cuts the file back to it first, so the rows of an epoch cut short by a crash are
#: never doubled, and the steps done before an interruption mid-epoch, kept in the resume file,
#: are appended with the rest of their epoch.
STEPS_FILE = "steps.csv"
STEPS_HEADER = "step,epoch,loss,acc\n"


def read_steps(run_dir) -> dict | None:
    """``run_dir``'s per-step history as arrays {"step", "epoch", "loss", "acc"} (one entry per
    step), or None when the run has none (runs written before it existed)."""
    path = Path(run_dir) / STEPS_FILE
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    if not lines or lines[0] != STEPS_HEADER.strip():
        raise HandgradError(str(path), f"not a per-step history: expected the header {STEPS_HEADER.strip()!r}")
    try:
        rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:] if line], dtype=np.float64)
    except ValueError as e:
        raise HandgradError(str(path), f"unreadable row ({e})") from None
    rows = rows.reshape(-1, 4)
    return {
        "step": rows[:, 0].astype(np.int64),
        "epoch": rows[:, 1].astype(np.int64),
        "loss": rows[:, 2],
        "acc": rows[:, 3],
    }


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run folder: ``fcntl.flock`` on ``.lock`` inside it, taken before the
    run reads or writes anything there and held to the end. The kernel drops it when the process
    ends, however it ends, so a killed run never leaves the folder locked. The holder writes its
    process id into the file, for the message the next one gets."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.fd = None

    def acquire(self) -> RunLock:
        """Take the lock; the folder must exist."""
        import fcntl

        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)  # never truncated unlocked
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"another handgrad run (process {holder})" if holder.isdigit() else "another handgrad run"
            raise RunFolderBusy(
                str(self.run_dir), f"{who} is writing to this folder; wait for it to end, or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the lock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_files(run_dir) -> list:
    """The names of RUN_FILES present in ``run_dir``."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def claim_run_folder(run_dir, overwrite: bool = False) -> None:
    """Make ``run_dir`` ready for a new run; call it holding the folder's lock. A folder that holds
    another run is refused, or with ``overwrite`` emptied of that run's files (files a run does not
    write are left alone)."""
    run_dir = Path(run_dir)
    present = run_files(run_dir)
    if not present:
        return
    if not overwrite:
        raise RunFolderTaken(
            str(run_dir),
            f"holds another run ({', '.join(present)}); continue it with "
            f"--resume {run_dir}, replace it with --overwrite, or choose another --out",
        )
    for name in present:
        (run_dir / name).unlink()
    for name in RUN_FILES:
        for leftover in run_dir.glob(f".{name}.*.tmp"):  # from a run killed mid-write
            leftover.unlink()


# -- settings ---------------------------------------------------------------------------------------
#: What a resumed run may change. The data folder changes no weight (the data files must be the
#: same ones; their MD5 is checked); a new number of epochs extends or shortens the run, its
#: schedule laid over the new total from the current epoch on.
RESUME_MAY_CHANGE = ("epochs", "data_dir")


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_differences(requested: dict, saved: dict, ignore=("out",)) -> list:
    """[(field, saved value, requested value)] for every field of ``requested`` (TrainConfig
    fields, JSON values) that differs from ``saved`` (a stored config), except ``ignore``."""
    requested = json.loads(json.dumps(requested))  # compare as stored: lists, not tuples
    return [(k, saved.get(k), v) for k, v in requested.items() if k not in ignore and saved.get(k) != v]


def read_resume_metadata(run_dir) -> dict:
    """The decoded metadata of ``run_dir/resume.safetensors`` (config, epoch, step_in_epoch, ...)."""
    from safetensors import safe_open

    path = Path(run_dir) / "resume.safetensors"
    if not path.is_file():
        raise HandgradError(
            str(run_dir), "holds no resume.safetensors: there is no run here to resume (start one with --out)"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception as e:  # safetensors' own errors for bad headers; json's for bad metadata
        raise HandgradError(str(path), f"not a readable resume file (truncated or corrupt?): {e}") from None


def resume_config(run_dir, changes: dict | None = None, log=print) -> TrainConfig:
    """The configuration that continues the run in ``run_dir``, in ``run_dir`` itself (wherever it
    was first written). ``changes``: the settings the user gave ({field: value}); those in
    RESUME_MAY_CHANGE are applied, the rest must equal the run's own or a HandgradError names each
    option with both values."""
    run_dir = Path(run_dir)
    meta = read_resume_metadata(run_dir)
    names = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in meta["config"].items() if k in names}
    changes = dict(changes or {})
    out = changes.pop("out", None)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise HandgradError(
            str(run_dir),
            f"--out {out}: --resume continues the run in {run_dir} itself; to continue "
            f"it elsewhere, copy the folder there and resume the copy",
        )
    conflicts = [(k, was, now) for k, was, now in config_differences(changes, saved) if k not in RESUME_MAY_CHANGE]
    if conflicts:
        given = ", ".join(f"{option(k)} {now}" for k, _, now in conflicts)
        kept = ", ".join(f"{k} {was}" for k, was, _ in conflicts)
        raise HandgradError(
            str(run_dir),
            f"{given} differ{'s' if len(conflicts) == 1 else ''} from the run being "
            f"resumed ({kept}); a resumed run keeps its settings (only "
            f"{', '.join(option(k) for k in RESUME_MAY_CHANGE)} may change): start a "
            f"new run to change them",
        )
    epochs = changes.get("epochs")
    if epochs is not None and epochs != saved["epochs"]:
        done = meta["epoch"] + (1 if meta["step_in_epoch"] else 0)
        if epochs < done:
            trained = (
                f"has trained into epoch {done}"
                if meta["step_in_epoch"]
                else f"has already trained {count(done, 'epoch')}"
            )
            raise HandgradError(str(run_dir), f"--epochs {epochs}: the run {trained}; give at least {done}")
        log(
            f"{run_dir}: {'extending' if epochs > saved['epochs'] else 'shortening'} the run from "
            f"{saved['epochs']} to {count(epochs, 'epoch')}"
            + (
                f"; its {saved['schedule']} schedule now spans {epochs} epochs from the current one on"
                if saved["schedule"] not in (None, "none")
                else ""
            )
        )
    saved.update({k: v for k, v in changes.items() if k in RESUME_MAY_CHANGE}, out=str(run_dir))
    return TrainConfig(**saved)


# -- guards -----------------------------------------------------------------------------------------
#: Steps between two full checks of the gradients and weights (the loss is checked at every step).
#: Checking both at every step cost 5-10% of a step (tiny-mlp, mlp, tiny-cnn, one thread); every
#: 10th step, less than the machine's noise (about 1%).
FINITE_CHECK_EVERY = 10


def step_stats_size(world_size: int) -> int:
    """Numbers a data-parallel step adds to its gradient allreduce: each rank's loss sum, each
    rank's weights checksum (two halves), the correct predictions, the samples, a pending signal."""
    return 3 * world_size + 3


def all_finite(arrays) -> bool:
    """No NaN or infinity in any of ``arrays`` (one pass per array: about 20 us per 200k float32)."""
    return all(np.isfinite(a).all() for a in arrays)


class StopSignals:
    """While active (in the main thread), SIGINT and SIGTERM only ask the run to stop: ``check()``,
    called between two steps, then raises Interrupted, so the state saved is never half an optimizer
    update. A second signal before that stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self.request)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous.clear()

    def request(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


#: Read by a BLAS library when it loads: the libraries loaded inside ``limited_threads`` (SciPy's
#: OpenBLAS, which the digits set brings in) take the limit from these.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def limited_threads(n: int | None):
    """Run the block with at most ``n`` threads: BLAS's (threadpoolctl for the libraries already
    loaded, BLAS_THREAD_VARIABLES for those loaded inside) and handgrad's own
    (``handgrad.set_num_threads``). All are put back afterwards, but a library first loaded inside
    keeps ``n``. ``None`` changes nothing."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise HandgradError(
            option("threads"), "limiting BLAS needs threadpoolctl (pip install threadpoolctl)"
        ) from None
    import handgrad

    previous = handgrad.get_num_threads()
    variables = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    handgrad.set_num_threads(n)
    os.environ.update({name: str(n) for name in BLAS_THREAD_VARIABLES})
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        handgrad.set_num_threads(previous)
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Trainer:
    """Runs ``config`` into ``config.out``; ``restore_state()`` continues from its resume file.

    ``fit()`` holds the folder's lock while it runs, unless the Trainer came from ``start_run``,
    which holds it from before the data loads; used as a context manager, the Trainer lets it go.

    With ``world`` (``handgrad.distributed.init()``) of N > 1 ranks, it is one of N Trainers that
    train one model data-parallel: each takes its part of every global batch (``batch_size``), the
    gradients are averaged over the whole batch (distributed.GradientReducer), evaluation is
    sharded and summed, and rank 0 alone takes the lock, prints and writes the run's files."""

    def __init__(
        self,
        config: TrainConfig,
        progress: bool = True,
        log=print,
        overwrite: bool = False,
        world: distributed.World | None = None,
    ):
        self.config = config.resolved()
        assert self.config.out is not None  # resolved() names the folder
        self.run_dir = Path(self.config.out)
        self.world = world if world is not None else distributed.World()
        self.distributed = self.world.size > 1
        if not self.world.is_main:
            progress, log = False, (lambda *args, **kwargs: None)
        self.progress, self.log, self.overwrite = progress, log, overwrite
        self.history: list[dict] = []
        self.grad_norm_log: list[dict] = []
        self.best_val_loss = float("inf")
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # "steps": [global step, loss, accuracy] of each step of the epoch, for STEPS_FILE
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "steps": []}
        self.steps_bytes = 0  # STEPS_FILE's length, as of the last epoch written to it
        self.lock: RunLock | None = None
        self.claimed = False  # the folder is this run's (claimed when new, or resumed)
        self.last_saved = None  # where last.safetensors stands, e.g. "end of epoch 2"
        self.best_epoch = None  # the epoch best.safetensors holds
        self.stop = StopSignals()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- setup -----------------------------------------------------------------------------------
    def setup(self):
        c = self.config
        _random.manual_seed(c.seed)
        self.data = prepare_data(c)
        self.input_shape = tuple(self.data.train_x.shape[1:])
        _random.manual_seed(c.seed)  # the initial weights depend on the seed alone
        self.model = build_model(
            c.model,
            self.input_shape,
            len(self.data.classes),
            hidden=c.hidden,
            activation=c.activation,
            layers=c.layers,
            bias=c.bias,
            init=c.init,
        )
        self.objective = Objective(c.loss, len(self.data.classes), c.reduction)
        if self.distributed and self.objective.reduction == "sum":
            # the ranks' gradients are averaged over the global batch, which a sum would not be
            raise HandgradError(
                option("reduction"),
                "a data-parallel run averages its gradients over the global "
                "batch; give --reduction mean (or batchmean for mse)",
            )
        self.optimizer = make_optimizer(c, self.model.parameters())
        self.scheduler = make_scheduler(c, self.optimizer)
        self.loader = self.make_loader()
        self.reducer = None  # made by fit(), for the model and its dtype as they are then
        self.fault = distributed.fault_hook(self.world)
        return self

    def make_loader(self):
        """The training batches: this rank's part of each global batch when distributed."""
        c = self.config
        if self.distributed:
            return distributed.ShardedLoader(
                self.data.train_x, self.data.train_y, batch_size=c.batch_size, shuffle=True, seed=c.seed, w=self.world
            )
        from ..data import DataLoader

        return DataLoader(self.data.train_x, self.data.train_y, batch_size=c.batch_size, shuffle=True, seed=c.seed)

    def checkpoint_metadata(self) -> dict:
        c = self.config
        return {
            "input_shape": list(self.input_shape),
            "normalization": self.data.normalization,
            "classes": self.data.classes,
            "dataset": c.dataset,
            "model": "custom" if c.hidden or c.layers else c.model,
            "loss": c.loss,
            "reduction": self.objective.reduction,
            "epoch": self.epoch,
            **({"layers": c.layers} if c.layers else {}),
        }

    # -- the loop --------------------------------------------------------------------------------
    def train_epoch(self):
        c, model, objective, opt = self.config, self.model, self.objective, self.optimizer
        params = list(model.parameters())
        self.loader.set_epoch(self.epoch)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=len(self.loader),
                initial=self.step_in_epoch,
                leave=False,
                dynamic_ncols=True,
                desc=f"epoch {self.epoch + 1}/{c.epochs}",
                file=sys.stderr,
            )
        started = time.perf_counter()
        p = self.partial
        try:
            for step, (x, y) in enumerate(self.loader):
                if step < self.step_in_epoch:
                    continue  # resumed mid-epoch: these batches were already trained on
                if self.fault is not None and self.global_step == self.fault[1]:
                    self.inject_fault()
                if self.distributed:
                    loss_sum, correct, seen, stop = self.distributed_gradients(x, y, params)
                else:
                    with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are checked below
                        out = model(x)
                        loss = objective(out, y)
                    if not np.isfinite(loss):
                        self.diverged(f"the loss became {loss}", x, y)
                    opt.zero_grad()
                    model.backward(objective.backward(), input_grad=False)
                    loss_sum = objective.sample_mean(loss, len(x)) * len(x)
                    correct, seen, stop = int((out.argmax(axis=1) == y).sum()), len(x), None
                # A non-finite weight shows in the next step's loss; the full check of gradients and
                # weights is the net for what the loss can miss (an infinite weight behind a ReLU, a
                # finite gradient times a huge lr on the last step). Every save checks again, exactly.
                full_check = (self.global_step + 1) % FINITE_CHECK_EVERY == 0
                if full_check and not all_finite(p_.grad for p_ in params if p_.grad is not None):
                    self.diverged("a gradient became non-finite", x, y)
                with np.errstate(over="ignore", invalid="ignore"):
                    opt.step()
                if full_check and not all_finite(p_.data for p_ in params):
                    self.diverged(
                        f"the weights {self.nonfinite_names()} are non-finite after the optimizer step "
                        f"(lr {opt.param_groups[0]['lr']:g})"
                    )
                p["loss_sum"] += loss_sum
                p["correct"] += correct
                p["seen"] += seen
                self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
                p.setdefault("steps", []).append([self.global_step, loss_sum / max(seen, 1), correct / max(seen, 1)])
                if c.grad_norm_every and self.global_step % c.grad_norm_every == 0:
                    self.grad_norm_log.append({"step": self.global_step, "epoch": self.epoch + 1, **grad_norms(model)})
                if bar is not None:
                    elapsed = p["seconds"] + time.perf_counter() - started
                    bar.update(1)
                    bar.set_postfix(loss=f"{p['loss_sum'] / p['seen']:.4f}", samples_s=f"{p['seen'] / elapsed:,.0f}")
                if stop:  # some rank was signalled: all stop at this same step boundary
                    raise Interrupted(self.stop.signum or signal.SIGTERM, collective=True)
                self.stop.check()  # a step boundary: the state is whole here
        finally:  # also when interrupted or diverged: the time spent counts, the bar goes
            if bar is not None:
                bar.close()
            p["seconds"] += time.perf_counter() - started

    def distributed_gradients(self, x, y, params):
        """This rank's forward and backward on its part (x, y) of the global batch, then one
        allreduce that turns the gradients into the global batch's and carries, summed over the
        ranks, each rank's loss, the correct predictions, the samples, a pending signal and, every
        CHECK_EVERY steps, each rank's weights checksum. Returns (loss sum, correct, samples,
        signal) of the global batch; stops every rank alike on a non-finite loss or differing weights."""
        w, n = self.world, len(x)
        stats = np.zeros(step_stats_size(w.size))
        self.optimizer.zero_grad()
        if n:  # a rank may hold no sample of a last batch smaller than the world
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are checked below
                out = self.model(x)
                loss = self.objective(out, y)
                self.model.backward(self.objective.backward(), input_grad=False)
            stats[w.rank] = self.objective.sample_mean(loss, n) * n
            stats[3 * w.size] = (out.argmax(axis=1) == y).sum()
        check = (self.global_step + 1) % distributed.CHECK_EVERY == 0
        if check:  # two 16-bit halves: exact in a float32 bucket
            crc = distributed.weights_checksum(params)
            stats[w.size + 2 * w.rank : w.size + 2 * w.rank + 2] = crc >> 16, crc & 0xFFFF
        stats[3 * w.size + 1] = n
        stats[3 * w.size + 2] = self.stop.signum or 0
        total = self.reducer.allreduce(n, stats)
        losses, seen = total[: w.size], int(total[3 * w.size + 1])
        if not np.isfinite(losses).all():
            bad = np.flatnonzero(~np.isfinite(losses))
            self.diverged(
                f"the loss became {losses.sum() / max(seen, 1)} (on the part of rank"
                f"{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))})",
                x,
                y,
            )
        if check:
            sums = [int(total[w.size + 2 * r]) << 16 | int(total[w.size + 2 * r + 1]) for r in range(w.size)]
            if len(set(sums)) > 1:
                raise distributed.out_of_sync(sums, f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}")
        return float(losses.sum()), int(total[3 * w.size]), seen, int(total[3 * w.size + 2])

    def inject_fault(self):
        """The test hook (distributed.FAULT_VARIABLE): fail this rank here, or change its weights."""
        kind, step = self.fault
        if kind == "raise":
            raise RuntimeError(f"fault injected by {distributed.FAULT_VARIABLE} at step {step}")
        first = next(iter(self.model.parameters()))
        first.data.reshape(-1)[0] += 1

    def evaluate(self, x, y):
        """(mean loss, accuracy, top-k accuracy) over (x, y), the top-k None unless the history
        records it (metrics.history_top_k); when distributed, each rank takes its shard and the
        sums are reduced."""
        from ..metrics import accuracy, history_top_k, top_k_accuracy

        k = history_top_k(len(self.data.classes))
        if not self.distributed:
            loss, acc, logits = evaluate(self.model, x, y, self.objective)
            return loss, acc, (top_k_accuracy(y, logits, k) if k and len(y) else None)
        part = distributed.shard(len(x), self.world.rank, self.world.size)
        sums = np.zeros(3)
        if len(x[part]):
            loss, _, logits = evaluate(self.model, x[part], y[part], self.objective)
            n = len(logits)
            sums[:] = (
                loss * n,
                accuracy(y[part], logits.argmax(axis=1)) * n,
                (top_k_accuracy(y[part], logits, k) * n if k else 0.0),
            )
        sums = self.world.allreduce(sums)
        if not len(x):
            return sums[0], float("nan"), None
        # each rank's counts were computed as fractions: round them back to whole samples
        return sums[0] / len(x), round(sums[1]) / len(x), (round(sums[2]) / len(x) if k else None)

    def check_stop(self):
        """Stop here if a signal came (to any rank, when distributed: all stop together)."""
        if not self.distributed:
            self.stop.check()
        elif self.world.allreduce(float(self.stop.signum or 0), op="max"):
            raise Interrupted(self.stop.signum or signal.SIGTERM, collective=True)

    def nonfinite_names(self) -> str:
        names = [name for name, p_ in self.model.named_parameters() if not np.isfinite(p_.data).all()]
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

    def diverged(self, what, x=None, y=None, at=None):
        """Stop: nothing from this point is saved. With the batch (x, y), replay it to name the first
        layer where a non-finite value appears. ``at``: where it happened (default: the step being taken)."""
        where = ""
        if x is not None and self.distributed:  # every rank is here (the values checked are reduced)
            with np.errstate(all="ignore"):
                local = find_nonfinite(self.model, x, y, self.objective) if len(x) else ""
            found = [
                (r, text) for r, text in enumerate(self.world.allgather(local)) if text and not text.startswith("no ")
            ]  # "no layer on replay": not this rank's part
            if found:
                where = f": first non-finite value in {found[0][1]} on rank {found[0][0]}"
        elif x is not None:
            with np.errstate(all="ignore"):
                where = f": first non-finite value in {find_nonfinite(self.model, x, y, self.objective)}"
        error = TrainingDiverged(
            at or f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}",
            f"{what}{where}; nothing from this point was saved, and {self.last_good()}. "
            "Try a lower --lr (--overwrite starts this run again).",
        )
        error.collective = self.distributed
        raise error

    def last_good(self) -> str:
        """Which checkpoints of this run hold good weights (every one written was checked)."""
        if self.last_saved is None:
            return f"no checkpoint was written to {self.run_dir} yet"
        text = f"the last good checkpoint is {self.run_dir / 'last.safetensors'} ({self.last_saved})"
        if self.best_epoch is not None:
            text += f", the best {self.run_dir / 'best.safetensors'} (epoch {self.best_epoch})"
        return text

    def end_epoch(self):
        d, p = self.data, self.partial
        if self.distributed:
            # rank 0 saves its weights for all: they must be every rank's
            distributed.check_in_sync(self.model, self.world, f"end of epoch {self.epoch + 1}")
            # and rank 0's BatchNorm statistics, the ones it saves, evaluate on every rank
            distributed.broadcast_buffers(self.model, w=self.world)
        with np.errstate(all="ignore"):  # checked below
            val_loss, val_acc, val_top_k = self.evaluate(d.val_x, d.val_y)
            test_loss, test_acc, test_top_k = self.evaluate(d.test_x, d.test_y)
        for name, value in (("validation", val_loss), ("test", test_loss)):
            if not np.isfinite(value):
                self.diverged(f"the {name} loss is {value}", at=f"end of epoch {self.epoch + 1}")
        row = {
            "epoch": self.epoch + 1,
            "train_loss": p["loss_sum"] / max(p["seen"], 1),
            "train_acc": p["correct"] / max(p["seen"], 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": p["seconds"],
            "samples_per_s": p["seen"] / max(p["seconds"], 1e-9),
        }
        if val_top_k is not None:
            from ..metrics import history_top_k

            k = history_top_k(len(d.classes))
            row[f"val_top{k}_acc"], row[f"test_top{k}_acc"] = val_top_k, test_top_k
        self.history.append(row)
        if isinstance(self.scheduler, optim.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        steps = p.get("steps", [])
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "steps": []}
        self.log(format_epoch(row, self.config.epochs))
        if val_loss < self.best_val_loss:
            self.check_finite_state()
            self.best_val_loss = val_loss
            if self.world.is_main:
                save(self.model, self.run_dir / "best.safetensors", **self.checkpoint_metadata())
            self.best_epoch = self.epoch
        if self.world.is_main:
            self.append_steps(steps, self.epoch)
        self.save_state()
        if self.world.is_main:
            self.write_history()

    def fit(self):
        """Train to ``config.epochs``. Ctrl-C or SIGTERM stops between two steps, saves the state and
        raises Interrupted (a KeyboardInterrupt)."""
        owns_lock = self.lock is None and self.world.is_main  # rank 0 alone writes, so it alone locks
        if owns_lock:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.lock = RunLock(self.run_dir).acquire()
        try:
            if not self.claimed and self.world.is_main:
                claim_run_folder(self.run_dir, self.overwrite)
                self.claimed = True
            if self.distributed:  # the same start everywhere: rank 0's weights (collectives wait for fit: setup
                distributed.broadcast_parameters(self.model, w=self.world)  # may fail on one rank alone)
                self.reducer = distributed.GradientReducer(
                    self.model.parameters(), self.world, extra=step_stats_size(self.world.size)
                )
            if self.world.is_main:
                self.write_manifest()
            if self.epoch >= self.config.epochs and not self.step_in_epoch:
                self.log(
                    f"{self.run_dir}: the run already holds {'its' if self.config.epochs == 1 else 'all'} "
                    f"{count(self.config.epochs, 'epoch')} "
                    f"(a larger --epochs extends it)"
                )
            with self.stop:
                try:
                    self.check_stop()
                    while self.epoch < self.config.epochs:
                        self.train_epoch()
                        self.end_epoch()
                        self.check_stop()
                except KeyboardInterrupt as e:
                    if self.distributed and not getattr(e, "collective", False):
                        raise  # this rank alone, mid-step: the others are not here to agree on a state
                    self.save_state()
                    self.log(
                        f"interrupted at epoch {self.epoch + 1}, step {self.step_in_epoch}; state saved. "
                        f"Continue with: handgrad train --resume {self.run_dir}"
                    )
                    raise
        finally:
            if owns_lock:
                self.lock.release()
                self.lock = None
        return self

    # -- files -----------------------------------------------------------------------------------
    def check_finite_state(self):
        """Refuse to save weights or optimizer state holding a NaN or an infinity."""
        opt_arrays = [
            v
            for state in self.optimizer.state_dict()["state"].values()
            for v in state.values()
            if isinstance(v, np.ndarray)
        ]
        at = describe_position(self.epoch, self.step_in_epoch)
        if not all_finite(p_.data for p_ in self.model.parameters()):
            self.diverged(f"the weights {self.nonfinite_names()} are non-finite", at=at)
        if not all_finite(opt_arrays):
            self.diverged("the optimizer's state (momentum or moment estimates) is non-finite", at=at)

    def save_state(self):
        """last.safetensors for users; resume.safetensors with everything needed to continue. Both
        only after checking that the weights and the optimizer's state are finite."""
        self.check_finite_state()
        if not self.world.is_main:
            self.last_saved = describe_position(self.epoch, self.step_in_epoch)
            return
        save(self.model, self.run_dir / "last.safetensors", **self.checkpoint_metadata())
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_state = self.optimizer.state_dict()
        scalar_state = {}
        for index, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    tensors[f"optimizer.{index}.{key}"] = value
                else:
                    scalar_state.setdefault(str(index), {})[key] = float(np.asarray(value))
        meta = {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "partial": self.partial,
            "best_val_loss": self.best_val_loss,
            "steps_bytes": self.steps_bytes,
            "history": self.history,
            "grad_norms": self.grad_norm_log,
            "param_groups": opt_state["param_groups"],
            "optimizer_scalars": scalar_state,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": _random.get_state(),
        }
        save_tensors(self.run_dir / "resume.safetensors", tensors, {k: json.dumps(v) for k, v in meta.items()})
        self.last_saved = describe_position(self.epoch, self.step_in_epoch)

    def restore_state(self):
        """Continue from ``run_dir/resume.safetensors``. When the configuration asks for another
        number of epochs than the saved one, the schedule is laid over the new total from the
        saved epoch on (the epochs done keep the learning rates they had)."""
        tensors, raw = load_tensors(self.run_dir / "resume.safetensors")
        meta = {k: json.loads(v) for k, v in raw.items()}
        self.check_same_data()
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in meta["optimizer_scalars"].items():
            for name, value in scalars.items():
                state.setdefault(int(index), {})[name] = (
                    np.asarray(value, dtype=np.float64) if name == "step" else value
                )
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if self.scheduler is not None:
            if meta["config"]["epochs"] == self.config.epochs or isinstance(self.scheduler, optim.ReduceLROnPlateau):
                self.scheduler.load_state_dict(meta["scheduler"])
            else:
                self.scheduler = make_scheduler(
                    self.config, self.optimizer, last_epoch=meta["scheduler"]["last_epoch"] - 1
                )
        _random.set_state(meta["rng"])
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step, self.partial = meta["global_step"], meta["partial"]
        self.best_val_loss, self.history, self.grad_norm_log = (
            meta["best_val_loss"],
            meta["history"],
            meta["grad_norms"],
        )
        steps_path = self.run_dir / STEPS_FILE
        # a run saved before STEPS_FILE existed records no length: its file (if any) is kept whole
        self.steps_bytes = meta.get("steps_bytes", steps_path.stat().st_size if steps_path.exists() else 0)
        self.claimed = True  # the folder holds this very run
        self.last_saved = describe_position(self.epoch, self.step_in_epoch)
        if self.history and (self.run_dir / "best.safetensors").exists():
            self.best_epoch = min(self.history, key=lambda r: r["val_loss"])["epoch"]
        return self

    def check_same_data(self):
        """A resumed run must read the very data files it started on (its manifest has their MD5)."""
        try:
            recorded = json.loads((self.run_dir / "manifest.json").read_text())["data"]["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # no manifest to compare with: the run never got past its start
        now = {name: f["md5"] for name, f in self.data.files.items()}
        changed = [name for name, f in recorded.items() if now.get(name) != f.get("md5")]
        if changed:
            raise HandgradError(
                str(self.run_dir),
                f"the data files found now ({self.data.source}) are not the ones "
                f"the run started on: {', '.join(changed)} differ (MD5); point "
                "--data-dir at the original files",
            )

    def append_steps(self, steps: list, epoch: int):
        """Append one epoch's rows ([global step, loss, accuracy] each) to STEPS_FILE in one write,
        after cutting off whatever follows the length the last save recorded (an epoch written
        by a run that was killed before it saved its state, and is being done again now)."""
        path = self.run_dir / STEPS_FILE
        if path.exists() and path.stat().st_size > self.steps_bytes:
            os.truncate(path, self.steps_bytes)
        text = "".join(f"{step},{epoch},{loss:.7g},{acc:.7g}\n" for step, loss, acc in steps)
        with open(path, "ab") as f:  # opened at its end
            f.write(((STEPS_HEADER if f.tell() == 0 else "") + text).encode())
            f.flush()
            os.fsync(f.fileno())
            self.steps_bytes = f.tell()

    def write_history(self):
        atomic_write_text(
            self.run_dir / "history.json",
            json.dumps({"epochs": self.history, "grad_norms": self.grad_norm_log}, indent=1),
        )
        buf = io.StringIO()
        if self.history:
            writer = csv.DictWriter(buf, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
        atomic_write_text(self.run_dir / "history.csv", buf.getvalue())
        try:
            from .plots import plot_history

            plot_history(
                self.history,
                self.run_dir / "curves.png",
                title=f"{self.config.model} on {self.config.dataset}",
                steps=read_steps(self.run_dir),
            )
        except ImportError:
            pass  # matplotlib is optional; the numbers are in history.csv

    def write_manifest(self):
        manifest = {
            "config": asdict(self.config),
            "seed": self.config.seed,
            "environment": environment(),
            "data": {
                "dataset": self.config.dataset,
                "source": self.data.source,
                "files": self.data.files,
                "normalization": self.data.normalization,
                "sizes": {"train": len(self.data.train_y), "val": len(self.data.val_y), "test": len(self.data.test_y)},
            },
            "model": {"parameters": self.model.num_parameters(), "repr": repr(self.model)},
            "distributed": {"world_size": self.world.size, "threads_per_rank": environment()["threads"]},
        }
        atomic_write_text(self.run_dir / "manifest.json", json.dumps(manifest, indent=1, default=str))


def count(n: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def describe_schedule(schedule: str | None) -> str:
    """How a header names the learning-rate schedule: ``cosine schedule``, ``constant lr``."""
    return "constant lr" if schedule in (None, "none") else f"{schedule} schedule"


def describe_position(epoch: int, step_in_epoch: int) -> str:
    """Where a run stands: ``end of epoch 2`` or ``epoch 3, step 17``."""
    if step_in_epoch:
        return f"epoch {epoch + 1}, step {step_in_epoch}"
    return f"end of epoch {epoch}" if epoch else "before the first step"


def format_epoch(row: dict, epochs: int) -> str:
    width = len(str(epochs))
    return (
        f"epoch {row['epoch']:>{width}}/{epochs}"
        f"  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%"
        f"  |  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:6.2f}%"
        f"  |  test acc {100 * row['test_acc']:6.2f}%  |  {row['seconds']:.1f} s"
    )


def start_run(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    changes: dict | None = None,
    progress: bool = True,
    log=print,
    world: distributed.World | None = None,
) -> Trainer:
    """Lock ``config.out`` and either continue the run in it (``resume``: its own settings, but
    ``changes`` as ``resume_config`` allows) or claim it for a new run (``overwrite``: replacing the
    run there). Returns the Trainer, set up, ready for ``fit()`` and holding the lock until it is
    closed (use it in a ``with`` block). A new run loads its data and builds its model before it
    creates the folder, so a bad setting leaves nothing behind.

    ``world``: one rank of a data-parallel run (see Trainer); rank 0 alone locks and claims the
    folder, and every rank reads a resumed run's files (the folder must be on a file system they
    all see). No collective is called here, so that a failure on one rank can be agreed on."""
    out = config.resolved().out
    assert out is not None  # resolved() names the folder
    run_dir = Path(out)
    main = world is None or world.is_main
    if resume:
        if not run_dir.is_dir():
            raise HandgradError(str(run_dir), "no such run folder to resume")
        lock = RunLock(run_dir).acquire() if main else None
        try:
            trainer = Trainer(
                resume_config(run_dir, changes, log if main else (lambda *a: None)),
                progress=progress,
                log=log,
                world=world,
            )
            trainer.lock = lock
            return trainer.setup().restore_state()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    if run_files(run_dir) and not overwrite:
        claim_run_folder(run_dir)  # refuses at once, before the data loads; checked again under the lock
    trainer = Trainer(config, progress=progress, log=log, world=world).setup()
    if not main:
        trainer.claimed = True  # rank 0 claims the folder, for every rank
        return trainer
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    try:
        claim_run_folder(run_dir, overwrite)
    except BaseException:
        lock.release()
        raise
    trainer.lock, trainer.claimed = lock, True
    return trainer


def train(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    changes: dict | None = None,
    progress: bool = True,
    log=print,
    world: distributed.World | None = None,
) -> Trainer:
    """Train as ``config`` says into ``config.out`` (``resume``: continue the run there; see
    ``start_run``; ``world``: as one rank of a data-parallel run) and return the Trainer."""
    if world is not None and world.size > 1:

        def start():
            return start_run(
                config, resume=resume, overwrite=overwrite, changes=changes, progress=progress, log=log, world=world
            )

        run = world.agree(start, "setting up the run", cleanup=lambda trainer: trainer.__exit__())
    else:
        run = start_run(config, resume=resume, overwrite=overwrite, changes=changes, progress=progress, log=log)
    with run as trainer:
        return trainer.fit()
