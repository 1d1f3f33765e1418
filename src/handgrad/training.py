"""Training and evaluation: the loop the CLI runs, with history, checkpoints, resume and a stop on
non-finite values. Data flows one way: batches -> model.forward -> loss -> loss.backward ->
model.backward -> optimizer.step.

A run directory holds ``best.safetensors`` (lowest validation loss), ``last.safetensors``,
``resume.safetensors`` (model, optimizer, scheduler, RNG state and position: all a resume needs, in
one atomic file), ``history.json``, ``history.csv``, ``curves.png`` and ``manifest.json``.
"""
from __future__ import annotations

import csv
import io
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import _random, nn, optim
from ._grad_mode import no_grad
from .errors import HandgradError
from .models import build_model, defaults_for
from .serialization import atomic_write_text, load_tensors, save, save_tensors


class TrainingDiverged(HandgradError):
    """The loss or a gradient became NaN or infinite; the run stopped before saving bad weights."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means the model's default (see models.MODELS)."""
    dataset: str = "digits"
    model: str = "mlp"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None      # sgd | adam
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None       # cosine | step | none
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    train_size: int | None = None
    val_fraction: float = 0.1
    hidden: list | None = None
    activation: str = "relu"
    layers: str | None = None         # a layer spec (models.parse_layer_spec)
    bias: bool = True                 # False: no Linear or Conv2d has a bias
    init: str = "default"             # how their weights are drawn (models.INITS)
    loss: str | None = None           # cross_entropy | mse
    grad_norm_every: int = 50         # record per-layer gradient norms every this many steps

    def resolved(self) -> "TrainConfig":
        d = defaults_for(self.model if not (self.hidden or self.layers) else "custom")
        values = asdict(self)
        for f in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "loss"):
            if values[f] is None:
                values[f] = getattr(d, f)
        if values["out"] is None:
            values["out"] = str(Path("runs") / f"{self.dataset}-{self.model}")
        return TrainConfig(**values)


def make_optimizer(config: TrainConfig, params):
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; known: sgd, adam, adamw")


def make_scheduler(config: TrainConfig, optimizer):
    if config.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    if config.schedule in (None, "none"):
        return None
    raise ValueError(f"unknown schedule {config.schedule!r}; known: cosine, step, none")


class Objective:
    """The loss and the targets it takes: class indices for cross-entropy; one-hot rows for MSE,
    summed over the classes and averaged over the batch (the quadratic cost 1/N sum_n ||y_n - t_n||^2,
    whose gradient does not shrink with the number of classes)."""

    def __init__(self, kind: str, num_classes: int):
        if kind not in ("cross_entropy", "mse"):
            raise ValueError(f"unknown loss {kind!r}; known: cross_entropy, mse")
        self.kind, self.num_classes = kind, num_classes
        self.fn = nn.CrossEntropyLoss() if kind == "cross_entropy" else nn.MSELoss(reduction="sum")
        self.batch = 1

    def __call__(self, output, labels) -> float:
        if self.kind == "mse":
            self.batch = len(output)
            return self.fn(output, np.eye(self.num_classes, dtype=output.dtype)[labels]) / self.batch
        return self.fn(output, labels)

    def backward(self):
        return self.fn.backward(1.0 / self.batch) if self.kind == "mse" else self.fn.backward()


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


def prepare_data(config: TrainConfig) -> Data:
    from .data import Normalizer, load_dataset, stratified_subset, train_val_split

    ds = load_dataset(config.dataset, data_dir=config.data_dir)
    train_x, train_y, val_x, val_y = train_val_split(ds.train_images, ds.train_labels,
                                                     val_fraction=config.val_fraction, seed=config.seed)
    if config.train_size:
        train_x, train_y = stratified_subset(train_x, train_y, config.train_size, seed=config.seed)
    norm = Normalizer.fit(train_x)  # training statistics only: never the validation or test set's
    return Data(norm(train_x), train_y, norm(val_x), val_y, norm(ds.test_images), ds.test_labels,
                list(ds.classes), norm.to_dict(), dict(ds.files), str(ds.source))


def evaluate(model, x, y, objective: Objective | None = None, batch_size: int = 1000):
    """(mean loss, accuracy, logits) over the whole set, in eval mode and without caches."""
    was_training = model.training
    model.eval()
    outputs, loss_sum = [], 0.0
    with no_grad():
        for start in range(0, len(x), batch_size):
            out = model(x[start:start + batch_size])
            if objective is not None:
                loss_sum += objective(out, y[start:start + batch_size]) * len(out)
            outputs.append(out)
    model.train(was_training)
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    accuracy = float((logits.argmax(axis=1) == y).mean()) if len(y) else float("nan")
    return (loss_sum / max(len(x), 1)), accuracy, logits


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
    from . import __version__

    env = {"handgrad": __version__, "numpy": np.__version__, "python": sys.version.split()[0],
           "platform": platform.platform(), "machine": platform.machine()}
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        env["blas"] = "threadpoolctl not installed"
    return env


class Trainer:
    """Runs ``config`` into ``config.out``; ``resume=True`` continues from its resume file."""

    def __init__(self, config: TrainConfig, progress: bool = True, log=print):
        self.config = config.resolved()
        self.run_dir = Path(self.config.out)
        self.progress, self.log = progress, log
        self.history: list[dict] = []
        self.grad_norm_log: list[dict] = []
        self.best_val_loss = float("inf")
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    # -- setup -----------------------------------------------------------------------------------
    def setup(self):
        c = self.config
        _random.manual_seed(c.seed)
        self.data = prepare_data(c)
        self.input_shape = tuple(self.data.train_x.shape[1:])
        _random.manual_seed(c.seed)  # the initial weights depend on the seed alone
        self.model = build_model(c.model, self.input_shape, len(self.data.classes), hidden=c.hidden,
                                 activation=c.activation, layers=c.layers, bias=c.bias, init=c.init)
        self.objective = Objective(c.loss, len(self.data.classes))
        self.optimizer = make_optimizer(c, self.model.parameters())
        self.scheduler = make_scheduler(c, self.optimizer)
        from .data import DataLoader
        self.loader = DataLoader(self.data.train_x, self.data.train_y, batch_size=c.batch_size, shuffle=True,
                                 seed=c.seed)
        return self

    def checkpoint_metadata(self) -> dict:
        c = self.config
        return {"input_shape": list(self.input_shape), "normalization": self.data.normalization,
                "classes": self.data.classes, "dataset": c.dataset,
                "model": "custom" if c.hidden or c.layers else c.model, "loss": c.loss, "epoch": self.epoch,
                **({"layers": c.layers} if c.layers else {})}

    # -- the loop --------------------------------------------------------------------------------
    def train_epoch(self):
        c, model, objective, opt = self.config, self.model, self.objective, self.optimizer
        self.loader.set_epoch(self.epoch)
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=len(self.loader), initial=self.step_in_epoch, leave=False, dynamic_ncols=True,
                       desc=f"epoch {self.epoch + 1}/{c.epochs}", file=sys.stderr)
        started = time.perf_counter()
        p = self.partial
        for step, (x, y) in enumerate(self.loader):
            if step < self.step_in_epoch:
                continue  # resumed mid-epoch: these batches were already trained on
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are checked below
                out = model(x)
                loss = objective(out, y)
            if not np.isfinite(loss):
                self.diverged(x, y, f"the loss became {loss}")
            opt.zero_grad()
            model.backward(objective.backward(), input_grad=False)
            if not all(np.isfinite(p_.grad).all() for p_ in model.parameters() if p_.grad is not None):
                self.diverged(x, y, "a gradient became non-finite")
            opt.step()
            p["loss_sum"] += loss * len(x)
            p["correct"] += int((out.argmax(axis=1) == y).sum())
            p["seen"] += len(x)
            self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
            if c.grad_norm_every and self.global_step % c.grad_norm_every == 0:
                self.grad_norm_log.append({"step": self.global_step, "epoch": self.epoch + 1, **grad_norms(model)})
            if bar is not None:
                elapsed = p["seconds"] + time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{p['loss_sum'] / p['seen']:.4f}", samples_s=f"{p['seen'] / elapsed:,.0f}")
        if bar is not None:
            bar.close()
        p["seconds"] += time.perf_counter() - started

    def diverged(self, x, y, what):
        with np.errstate(all="ignore"):
            where = find_nonfinite(self.model, x, y, self.objective)
        last = self.run_dir / "last.safetensors"
        keep = f"; the last good checkpoint is {last}" if last.exists() else "; no checkpoint was written yet"
        raise TrainingDiverged(f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}",
                               f"{what}: first non-finite value in {where}{keep}. Try a lower --lr.")

    def end_epoch(self):
        d, p = self.data, self.partial
        val_loss, val_acc, _ = evaluate(self.model, d.val_x, d.val_y, self.objective)
        test_loss, test_acc, _ = evaluate(self.model, d.test_x, d.test_y, self.objective)
        row = {"epoch": self.epoch + 1, "train_loss": p["loss_sum"] / max(p["seen"], 1),
               "train_acc": p["correct"] / max(p["seen"], 1), "val_loss": val_loss, "val_acc": val_acc,
               "test_loss": test_loss, "test_acc": test_acc, "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": p["seconds"], "samples_per_s": p["seen"] / max(p["seconds"], 1e-9)}
        self.history.append(row)
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.log(format_epoch(row, self.config.epochs))
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            save(self.model, self.run_dir / "best.safetensors", **self.checkpoint_metadata())
        self.save_state()
        self.write_history()

    def fit(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest()
        try:
            while self.epoch < self.config.epochs:
                self.train_epoch()
                self.end_epoch()
        except KeyboardInterrupt:
            self.save_state()
            self.log(f"interrupted at epoch {self.epoch + 1}, step {self.step_in_epoch}; state saved. "
                     f"Continue with: handgrad train --resume {self.run_dir}")
            raise
        return self

    # -- files -----------------------------------------------------------------------------------
    def save_state(self):
        """last.safetensors for users; resume.safetensors with everything needed to continue."""
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
        meta = {"config": asdict(self.config), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "partial": self.partial, "best_val_loss": self.best_val_loss,
                "history": self.history, "grad_norms": self.grad_norm_log,
                "param_groups": opt_state["param_groups"], "optimizer_scalars": scalar_state,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": _random.get_state()}
        save_tensors(self.run_dir / "resume.safetensors", tensors, {k: json.dumps(v) for k, v in meta.items()})

    def restore_state(self):
        tensors, raw = load_tensors(self.run_dir / "resume.safetensors")
        meta = {k: json.loads(v) for k, v in raw.items()}
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in meta["optimizer_scalars"].items():
            for name, value in scalars.items():
                state.setdefault(int(index), {})[name] = np.asarray(value, dtype=np.float64) if name == "step" else value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        _random.set_state(meta["rng"])
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step, self.partial = meta["global_step"], meta["partial"]
        self.best_val_loss, self.history, self.grad_norm_log = meta["best_val_loss"], meta["history"], meta["grad_norms"]
        return self

    def write_history(self):
        atomic_write_text(self.run_dir / "history.json",
                          json.dumps({"epochs": self.history, "grad_norms": self.grad_norm_log}, indent=1))
        buf = io.StringIO()
        if self.history:
            writer = csv.DictWriter(buf, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
        atomic_write_text(self.run_dir / "history.csv", buf.getvalue())
        try:
            from .plots import plot_history
            plot_history(self.history, self.run_dir / "curves.png", title=f"{self.config.model} on {self.config.dataset}")
        except ImportError:
            pass  # matplotlib is optional; the numbers are in history.csv

    def write_manifest(self):
        manifest = {"config": asdict(self.config), "seed": self.config.seed, "environment": environment(),
                    "data": {"dataset": self.config.dataset, "source": self.data.source, "files": self.data.files,
                             "normalization": self.data.normalization,
                             "sizes": {"train": len(self.data.train_y), "val": len(self.data.val_y),
                                       "test": len(self.data.test_y)}},
                    "model": {"parameters": self.model.num_parameters(), "repr": repr(self.model)}}
        atomic_write_text(self.run_dir / "manifest.json", json.dumps(manifest, indent=1, default=str))


def format_epoch(row: dict, epochs: int) -> str:
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%"
            f"  |  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:6.2f}%"
            f"  |  test acc {100 * row['test_acc']:6.2f}%  |  {row['seconds']:.1f} s")


def train(config: TrainConfig, resume: bool = False, progress: bool = True, log=print) -> Trainer:
    """Train as ``config`` says (or continue the run in ``config.out``) and return the Trainer."""
    if resume:
        meta = json.loads(load_tensors(Path(config.out) / "resume.safetensors")[1]["config"])
        config = TrainConfig(**{k: v for k, v in meta.items() if k in {f.name for f in fields(TrainConfig)}})
    trainer = Trainer(config, progress=progress, log=log).setup()
    if resume:
        trainer.restore_state()
    return trainer.fit()
