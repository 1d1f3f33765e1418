"""The ``handgrad`` command line: train, eval, predict, info, datasets.

Errors print one line (``handgrad: error: ...``) and exit non-zero; no tracebacks for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np


def _thread_count(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads, got {text!r}")
    return n


def _add_threads_option(p, sweep=False):
    p.add_argument(
        "--threads",
        type=_thread_count,
        metavar="N",
        help="threads for the whole sweep, shared among its workers (default: every core)"
        if sweep
        else "at most N threads, BLAS's and handgrad's own (default: every core); 1 on a shared machine",
    )


def _csv_ints(text):
    """Hidden sizes: comma-separated integers, each from 1 to models.MAX_SIZE."""
    from ..models import MAX_SIZE

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    bad = [v for v in values if not 1 <= v <= MAX_SIZE]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes from 1 to {MAX_SIZE}, got {text!r}")
    return values


def _integer(low, high=None):
    """An argparse type: an integer from ``low`` (to ``high``)."""
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _number(low, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float in the interval from ``low`` to ``high`` (open ends as said)."""
    expected = "a finite number " + (
        f"{'>' if low_open else '>='} {low:g}"
        if high is None
        else f"{'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"
    )

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        inside = (
            np.isfinite(value)
            and (value > low if low_open else value >= low)
            and (high is None or (value < high if high_open else value <= high))
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _activation(text):
    from ..nn import ACTIVATIONS, get_activation

    try:
        get_activation(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown activation {text!r}; known: {', '.join(sorted(ACTIVATIONS))} "
            f"(one of your own: pass --plugin FILE.py that defines it)"
        ) from None
    return text


#: The checks on every numeric training option, shared by train, compare and sweep's value lists.
POSITIVE_INT = _integer(1)
SEED = _integer(0, 2**63 - 1)
TRAINING_CHECKS = {
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": _number(0, low_open=True),
    "momentum": _number(0, 1, high_open=True),
    "weight_decay": _number(0),
    "seed": SEED,
    "train_size": POSITIVE_INT,
}
VAL_FRACTION = _number(0, 1, low_open=True, high_open=True)


REDUCTION_HELP = (
    "how the loss combines a batch of N: cross_entropy: mean (default) = 1/N sum_n loss_n, or sum; "
    "mse: batchmean (default) = 1/N sum_n ||y_n - onehot_n||^2 (summed over the classes), mean = "
    "the same / classes (torch's MSELoss), or sum; with sum the gradient grows with the batch"
)

LAYERS_HELP = (
    "a layer spec (overrides --model), tokens joined by '-': conv<C>[k<K>][s<S>][p<P>][nb], "
    "maxpool|avgpool[<K>][s<S>][p<P>], fc<N>[nb], bn, dropout[<P>], an activation or none (replacing "
    "the ReLU before), out[nb]; e.g. conv8k5s1p2-maxpool3s2p1-fc120-sigmoid. The grammar: README, "
    "'Layer specs'"
)


def _add_model_options(p, sweepable=False):
    """--no-bias and --init, for every command that builds a model from the command line."""
    from ..models import INITS

    p.add_argument("--no-bias", action="store_true", help="no bias in any Linear or Conv2d layer")
    if sweepable:
        p.add_argument("--init", help=f"weight initialisation(s), comma-separated: {', '.join(INITS)}")
    else:
        p.add_argument(
            "--init",
            default="default",
            choices=list(INITS),
            help="weight initialisation of Linear and Conv2d layers (default: PyTorch's, "
            "U(+-1/sqrt(fan_in)) for weight and bias); the others set biases to 0",
        )


#: The commands that take --plugin: every one that builds or loads a model.
PLUGIN_COMMANDS = ("train", "eval", "predict", "info", "explain", "export", "compare", "sweep", "report")
PLUGIN_HELP = (
    "import a Python file (my_acts.py) or module (package.module) that defines activations or layers "
    "of your own, before anything else; repeatable. Needed to load a checkpoint that uses them: "
    "loading never imports code by itself"
)


def _add_plugin_option(p):
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE", help=PLUGIN_HELP)


def _load_plugins(argv) -> None:
    """Import the --plugin files and modules named in ``argv`` before the full parser reads it, so
    ``--activation`` and ``--layers`` know their classes. Raises PluginError naming the plug-in."""
    from ..plugins import load_plugins

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_plugin_option(pre)
    known, _ = pre.parse_known_args(argv)
    load_plugins(known.plugin)


def _check_model_or_spec(name) -> str | None:
    """None when ``name`` is a named model or a layer spec (its syntax: shapes are checked once the
    data is known), else why not."""
    from ..models import MODELS, tokenize_layer_spec

    if name in MODELS:
        return None
    try:
        tokenize_layer_spec(name)
    except ValueError as e:
        return f"not a named model (known: {', '.join(MODELS)}) nor a layer spec ({e})"
    return None


def build_parser() -> argparse.ArgumentParser:
    from ..models import MODELS

    parser = argparse.ArgumentParser(prog="handgrad", description="Train, evaluate and inspect handgrad models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a model",
        description="Train a model; writes checkpoints, history "
        "and curves to --out. Unset options take the model's defaults.",
    )
    t.add_argument("--dataset", default="digits", help="digits (embedded, default), mnist or fashion-mnist")
    t.add_argument("--model", default="mlp", choices=list(MODELS), help="named model (default: mlp)")
    t.add_argument("--hidden", type=_csv_ints, help="custom MLP hidden sizes, e.g. 512,256 (overrides --model)")
    t.add_argument(
        "--activation",
        default="relu",
        type=_activation,
        help="activation for --hidden (relu, tanh, sigmoid, leaky_relu)",
    )
    t.add_argument("--layers", metavar="SPEC", help=LAYERS_HELP)
    _add_model_options(t)
    _add_optimization_options(t)
    t.add_argument(
        "--loss",
        choices=["cross_entropy", "mse"],
        help="cross_entropy (softmax outputs; the default) or mse (outputs regressed onto one-hot targets)",
    )
    t.add_argument("--reduction", choices=["mean", "batchmean", "sum"], help=REDUCTION_HELP)
    t.add_argument("--seed", type=SEED, default=0)
    _add_split_options(t)
    t.add_argument("--data-dir", help="folder holding the dataset's four IDX files")
    t.add_argument("--out", help="run directory (default: runs/DATASET-MODEL)")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR, in RUN_DIR itself, with its own "
        "settings; --epochs extends (or shortens) it, --data-dir says where its data files are now",
    )
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out (otherwise refused)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or model table")
    _add_threads_option(t)
    # Unset options stay None, so that --resume can tell the options given from the defaults
    # (TrainConfig holds the same defaults).
    t.set_defaults(dataset=None, model=None, activation=None, seed=None, val_fraction=None, init=None)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test set")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", help="default: the checkpoint's dataset")
    e.add_argument("--data-dir")
    e.add_argument("--top-k", type=POSITIVE_INT, default=5)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _add_threads_option(e)

    p = sub.add_parser("predict", help="classify image files (PNG/JPEG)")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=POSITIVE_INT, default=3)
    p.add_argument("--json", action="store_true")
    _add_threads_option(p)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("checkpoint")

    d = sub.add_parser("datasets", help="show which datasets are found where")
    d.add_argument("--data-dir", help="look where train --data-dir looks: DATA_DIR/<dataset>/, then DATA_DIR itself")

    _add_visual_commands(sub)
    _add_export_command(sub)
    for name, command in sub.choices.items():
        if name in PLUGIN_COMMANDS:
            _add_plugin_option(command)
    return parser


def _add_export_command(sub):
    x = sub.add_parser(
        "export",
        help="write a checkpoint as an ONNX model",
        description="Write a checkpoint as an ONNX model (opset 17, any batch size) that runs in "
        "onnxruntime. Its input is the normalised image, as the model takes it; the "
        "normalisation and class names are in the file's metadata.",
    )
    x.add_argument("checkpoint")
    x.add_argument("output", help="the .onnx file to write")
    x.add_argument(
        "--input-shape",
        type=_csv_ints,
        metavar="C,H,W",
        help="one sample's shape, e.g. 1,28,28 (default: the checkpoint's)",
    )


def _add_training_options(p, sweepable=False):
    """The options compare and sweep share with train (applied to every run)."""
    p.add_argument("--dataset", default="digits", help="digits (embedded, default), mnist or fashion-mnist")
    p.add_argument("--data-dir", help="folder holding the dataset's four IDX files")
    p.add_argument("--seed", type=SEED, default=0, help="one seed for every run: same split, same init")
    _add_split_options(p)
    p.add_argument("--grad-norm-every", type=_integer(0), default=50, help="record gradient norms every N steps")
    _add_model_options(p, sweepable)
    if not sweepable:
        _add_optimization_options(p)


def _add_split_options(p):
    """How much of the training set a run takes, and how much of it is held out for validation."""
    p.add_argument(
        "--train-size",
        type=POSITIVE_INT,
        help="train on a class-stratified subset of this many images; the "
        "validation set keeps the proportion: N f / (1 - f) images, f = --val-fraction",
    )
    p.add_argument("--val-fraction", type=VAL_FRACTION, default=0.1)


def _add_optimization_options(p):
    """How a run trains: epochs, batch size, optimizer and its hyperparameters, the schedule (one value
    each; sweep takes lists of them instead)."""
    p.add_argument("--epochs", type=POSITIVE_INT)
    p.add_argument("--batch-size", type=POSITIVE_INT)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
    p.add_argument("--lr", type=TRAINING_CHECKS["lr"])
    p.add_argument("--momentum", type=TRAINING_CHECKS["momentum"])
    p.add_argument("--weight-decay", type=TRAINING_CHECKS["weight_decay"])
    p.add_argument("--schedule", choices=["cosine", "step", "multistep", "plateau", "none"])


def _add_visual_commands(sub):
    from ..models import MODELS
    from .compare import DEFAULT_MODELS

    c = sub.add_parser(
        "compare",
        help="train several models on the same data and plot them together",
        description="Train several models on the same data, split and seed; write one figure "
        "of train and test loss and accuracy per epoch (compare.png) and a table "
        "(compare.md, compare.json) into --out. Finished runs in --out with the same settings "
        "are read back; runs with other settings are trained again.",
    )
    c.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"models by name (default: {' '.join(DEFAULT_MODELS)}; known: {', '.join(MODELS)}) or "
        f"as layer specs, e.g. fc16 conv8-pool-conv16k5-pool (see train --layers)",
    )
    _add_training_options(c)
    c.add_argument("--out", default="runs/compare", help="folder for the runs and the figure (default: runs/compare)")
    _add_threads_option(c)

    s = sub.add_parser(
        "sweep",
        help="a hyperparameter grid in parallel worker processes",
        description="Train every combination of the comma-separated values given, in parallel "
        "worker processes, each run in its own folder under --out; finished runs with the same "
        "settings are skipped, interrupted ones resumed, others trained again. Writes sweep.json, "
        "sweep.csv, parallel.png and sweep.html.",
    )
    s.add_argument(
        "--model",
        default="tiny-mlp",
        help="model names or layer specs (tokens joined by '-'), comma-separated (default: tiny-mlp)",
    )
    s.add_argument("--lr", help="e.g. 0.1,0.01")
    s.add_argument("--batch-size", help="e.g. 64,128")
    s.add_argument("--optimizer", help="e.g. sgd,adam")
    s.add_argument("--momentum", help="e.g. 0,0.9")
    s.add_argument("--weight-decay", help="e.g. 0,1e-4")
    s.add_argument("--schedule", help="e.g. cosine,none")
    s.add_argument("--epochs", default="3", help="epochs (default 3); several values sweep over it")
    _add_training_options(s, sweepable=True)
    s.add_argument("--workers", type=POSITIVE_INT, help="worker processes (default and most: the number of cores)")
    s.add_argument("--sort", default="test_acc", help="column the printed table is sorted by (default test_acc)")
    s.add_argument("--out", default="runs/sweep", help="folder for the runs and results (default: runs/sweep)")
    _add_threads_option(s, sweep=True)

    r = sub.add_parser(
        "report",
        help="one self-contained HTML page for one or several runs",
        description="Write one HTML page (images inline, works offline) for the runs: curves, "
        "class distribution, confusion matrix, the most confidently wrong test images, "
        "first-layer weights or filters, gradient norms.",
    )
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", help="the page (default: RUN_DIR/report.html, or report.html beside several runs)")
    r.add_argument("--data-dir", help="where the runs' dataset is, if not where it was during training")
    r.add_argument("--open", action="store_true", help="open the page in the web browser")

    e = sub.add_parser(
        "explain",
        help="walk one minibatch through a model, forward then backward, checking every gradient",
        description="Take one small minibatch through a model and print, layer "
        "by layer, forward then backward: shapes, the formula applied, statistics of values and "
        "gradients, and each hand-computed gradient beside finite differences (and torch "
        "autograd, when installed) with their relative error.",
    )
    e.add_argument("--model", default="tiny-cnn", choices=list(MODELS), help="named model (default: tiny-cnn)")
    e.add_argument("--checkpoint", help="explain this trained checkpoint instead of a fresh --model")
    e.add_argument("--dataset", help="digits (default), mnist or fashion-mnist; a checkpoint's own by default")
    e.add_argument("--data-dir")
    e.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="images in the minibatch (default 4)")
    e.add_argument(
        "--loss",
        choices=["cross_entropy", "mse"],
        help="the loss (default: a checkpoint's own, else cross_entropy); a checkpoint takes only its own",
    )
    e.add_argument(
        "--reduction",
        choices=["mean", "batchmean", "sum"],
        help="default: a checkpoint's own (as trained), else the loss's default; see train --reduction",
    )
    e.add_argument(
        "--samples",
        type=_integer(0),
        default=16,
        help="elements per tensor checked by finite differences (0: all; default 16)",
    )
    e.add_argument("--eps", type=_number(0, 1, low_open=True), default=1e-6)
    e.add_argument("--seed", type=SEED, default=0)
    e.add_argument("--no-torch", action="store_true", help="skip the autograd comparison")
    _add_threads_option(e)

    g = sub.add_parser(
        "gradcheck",
        help="verify every op's backward over a configuration grid",
        description="Check every functional op's hand-written backward over a grid of "
        "configurations against central finite differences (float64, every element) and, "
        "when torch is installed, autograd; print a table and exit 1 if any fails.",
    )
    g.add_argument("--op", action="append", help="only this op (repeatable), e.g. --op conv2d")
    g.add_argument("--no-torch", action="store_true", help="skip the autograd column")
    g.add_argument("--list", action="store_true", help="list the ops and configurations, check nothing")


#: The train options that are TrainConfig fields (the argparse dest is the field's name).
TRAIN_FIELDS = (
    "dataset",
    "model",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "seed",
    "data_dir",
    "out",
    "train_size",
    "val_fraction",
    "hidden",
    "activation",
    "layers",
    "loss",
    "init",
    "reduction",
)


def cmd_train(args) -> int:
    from ..models import summary
    from .training import TrainConfig, count, describe_schedule, start_run

    given = {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name) is not None}
    if args.no_bias:
        given["bias"] = False
    if args.resume and args.overwrite:
        raise ValueError("--overwrite replaces a run and --resume continues one: give one of them")
    world = getattr(args, "world", None)  # under mpiexec: this process's rank of a data-parallel run

    def start():
        if args.resume:
            return start_run(
                TrainConfig(out=args.resume), resume=True, changes=given, progress=not args.quiet, world=world
            )
        return start_run(TrainConfig(**given), overwrite=args.overwrite, progress=not args.quiet, world=world)

    run = world.agree(start, "setting up the run", cleanup=lambda t: t.__exit__()) if world else start()
    with run as trainer:
        c = trainer.config
        d = trainer.data
        print(
            f"{c.dataset}: {len(d.train_y)} train / {len(d.val_y)} val / {len(d.test_y)} test images "
            f"{trainer.input_shape}, from {d.source}"
        )
        print(
            f"model {c.model if not (c.hidden or c.layers) else 'custom'}; {c.optimizer} lr {c.lr} momentum "
            f"{c.momentum} weight decay {c.weight_decay}, {describe_schedule(c.schedule)}, batch {c.batch_size}, "
            f"{count(c.epochs, 'epoch')}, {trainer.objective.kind} loss ({trainer.objective.reduction}), seed {c.seed}"
        )
        if world:
            from .. import get_num_threads

            print(
                f"data-parallel on {world.size} ranks ({world.local_size} on this host), {get_num_threads()} "
                f"thread{'s' if get_num_threads() > 1 else ''} each: about {c.batch_size // world.size} of "
                f"every {c.batch_size} images per rank"
            )
        if args.resume:
            from .training import describe_position

            print(f"resuming {trainer.run_dir} from {describe_position(trainer.epoch, trainer.step_in_epoch)}")
        elif not args.quiet:
            print(summary(trainer.model, trainer.input_shape))
        trainer.fit()
    best = min(trainer.history, key=lambda r: r["val_loss"]) if trainer.history else None
    if best:
        print(
            f"best val loss {best['val_loss']:.4f} at epoch {best['epoch']} (test acc {100 * best['test_acc']:.2f}%); "
            f"final test acc {100 * trainer.history[-1]['test_acc']:.2f}%"
        )
    print(
        f"run directory: {trainer.run_dir}  (best.safetensors, last.safetensors, history.json/.csv, steps.csv, "
        "curves.png)"
    )
    return 0


def _json(value) -> str:
    """JSON that every parser reads: a NaN or infinity (never expected, as outputs are checked) is null."""

    def finite(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False)


def _class_names(path, meta, logits) -> list:
    """The checkpoint's class names, one per output; outputs that are not (N, classes) or not finite
    are refused, since every number computed from them would be garbage."""
    from ..errors import HandgradError

    if logits.ndim != 2:
        raise HandgradError(
            str(path), f"the model outputs shape {logits.shape[1:]} per sample, expected one score per class"
        )
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise HandgradError(
            str(path),
            f"the model's outputs are not finite (NaN or inf) for {int(bad.sum())} of "
            f"{len(logits)} inputs (first: input {int(np.flatnonzero(bad)[0])}): its "
            f"weights overflow {logits.dtype.name}",
        )
    classes = meta.get("classes") or [str(i) for i in range(logits.shape[1])]
    if len(classes) != logits.shape[1]:
        raise HandgradError(
            str(path), f"'classes' names {len(classes)} classes, but the model has {logits.shape[1]} outputs"
        )
    return classes


def cmd_eval(args) -> int:
    from .. import metrics
    from ..serialization import load
    from .evaluation import checkpoint_test_set
    from .training import evaluate

    model = load(args.checkpoint)
    ds, x = checkpoint_test_set(model, args.dataset, args.data_dir)
    y = ds.test_labels
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs are refused next, in one line
        _, accuracy, logits = evaluate(model, x, y)
    classes = _class_names(args.checkpoint, model.metadata, logits)
    n = len(classes)
    if y.max() >= n:
        from ..errors import HandgradError

        raise HandgradError(
            f"dataset {ds.name}",
            f"has labels up to {int(y.max())}, but the checkpoint {args.checkpoint} has {n} classes",
        )
    pred = logits.argmax(axis=1)
    confusion = metrics.confusion_matrix(y, pred, n)
    # a class's accuracy is its recall; the key keeps the name the C++ twin's eval prints too
    per_class = dict(zip(classes, metrics.recall(y, pred, n).tolist()))
    k = min(args.top_k, n)
    top_k = metrics.top_k_accuracy(y, logits, k)
    result = {
        "checkpoint": args.checkpoint,
        "dataset": ds.name,
        "samples": int(len(y)),
        "accuracy": float(accuracy),
        f"top{k}_accuracy": top_k,
        "per_class_accuracy": per_class,
        "classes": classes,
        "confusion_matrix": confusion.tolist(),
    }
    if args.json:
        print(_json(result))
        return 0
    print(f"{ds.name} test set, {len(y)} images: accuracy {100 * accuracy:.2f}%, top-{k} {100 * top_k:.2f}%")
    print("per-class recall (accuracy): " + ", ".join(f"{c} {100 * a:.1f}%" for c, a in per_class.items()))
    print(
        "per-class precision: "
        + ", ".join(f"{c} {100 * a:.1f}%" for c, a in zip(classes, metrics.precision(y, pred, n)))
    )
    width = max(5, max(len(str(v)) for v in confusion.ravel()) + 1)
    labels = [c[: width - 1] for c in classes]
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * 12 + "".join(f"{lab:>{width}}" for lab in labels))
    for c, row in zip(classes, confusion):
        print(f"{c[:11]:>11} " + "".join(f"{v:>{width}}" for v in row))
    return 0


#: The largest image ``predict`` decodes (8192 x 8192); PIL's own bomb check would allow more.
MAX_IMAGE_PIXELS = 1 << 26


def load_image(path, input_shape) -> np.ndarray:
    """A PNG/JPEG as the model sees it: turned upright by its EXIF orientation, composited onto a
    background that contrasts with its ink where it is transparent, grayscale, resized to (H, W),
    values in [0, 1], inverted when the digit is dark on a light background (the datasets have light
    digits on black). An image of more than MAX_IMAGE_PIXELS pixels is refused before decoding."""
    import re
    import warnings

    from PIL import Image, ImageOps

    from ..errors import HandgradError

    where = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise HandgradError(
                        where,
                        f"the image has {img.width} x {img.height} = {img.width * img.height} "
                        f"pixels, more than the limit of {MAX_IMAGE_PIXELS}",
                    )
                gray = _gray(ImageOps.exif_transpose(img))
                x = np.asarray(gray.resize((input_shape[2], input_shape[1]), Image.Resampling.LANCZOS), np.float32)
    except HandgradError:
        raise
    except FileNotFoundError:
        raise HandgradError(where, "no such image file") from None
    except IsADirectoryError:
        raise HandgradError(where, "is a folder, expected an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # PIL's check, inside Image.open
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise HandgradError(
            where,
            f"the image has {pixels[1] if pixels else 'too many'} pixels, more than the limit of {MAX_IMAGE_PIXELS}",
        ) from None
    except Exception as e:  # PIL's decoders raise many types (OSError, SyntaxError, ValueError, struct.error...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HandgradError(where, f"cannot read the image: {reason}") from None
    x = np.clip(x if gray.mode == "F" else x / 255.0, 0.0, 1.0)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if border.mean() > 0.5:
        x = 1.0 - x
    return x[None]


def _gray(img):
    """One channel: "L" (0-255), or "F" in [0, 1] for 16- and 32-bit images. Transparent parts are
    composited onto white when the ink (the opaque parts) is dark, onto black when it is light, so
    black ink on a transparent background reads as ink whatever colour its hidden pixels hold."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img.convert("F") if img.mode != "F" else img, np.float32)
        top = (
            1.0
            if img.mode == "F" and values.max(initial=0) <= 1
            else 255.0
            if values.max(initial=0) <= 255
            else 65535.0
        )
        return Image.fromarray(values / np.float32(top), "F")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        small = rgba.resize((min(rgba.width, 64), min(rgba.height, 64)), Image.Resampling.BOX)
        lum = np.asarray(small.convert("L"), np.float64)
        alpha = np.asarray(small.getchannel("A"), np.float64)
        ink = (lum * alpha).sum() / alpha.sum() if alpha.sum() > 0 else 0.0
        background = (255, 255, 255, 255) if ink < 128 else (0, 0, 0, 255)
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba)
    return img.convert("L")


def cmd_predict(args) -> int:
    from ..functional import softmax_forward
    from ..serialization import load
    from .evaluation import stored_normalizer
    from .training import evaluate

    model = load(args.checkpoint)
    meta = model.metadata
    shape = tuple(meta.get("input_shape", (1, 28, 28)))
    if len(shape) != 3:
        from ..errors import HandgradError

        raise HandgradError(args.checkpoint, f"the model takes inputs of shape {shape}, not images (C, H, W)")
    norm = stored_normalizer(meta)
    images = np.stack([load_image(p, shape) for p in args.images])
    x = norm(np.repeat(images, shape[0], axis=1))
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs are refused next, in one line
        _, _, logits = evaluate(model, x, np.zeros(len(x), dtype=np.int64))
    classes = _class_names(args.checkpoint, meta, logits)
    # A cross-entropy model's outputs are logits, whose softmax is a probability distribution; an
    # MSE model's are scores regressed onto one-hot targets (a sigmoid's in [0, 1]), which sum to
    # no particular total: they are shown as they are, never as percentages.
    kind = "score" if meta.get("loss") == "mse" else "probability"
    values = logits if kind == "score" else softmax_forward(logits.astype(np.float64), dim=1)[0]
    results = []
    for path, v in zip(args.images, values):
        order = np.argsort(-v, kind="stable")[: args.top_k]
        results.append(
            {
                "image": path,
                "class": classes[order[0]],
                "top": [{"class": classes[j], kind: float(v[j])} for j in order],
            }
        )
    if args.json:
        print(_json(results))
    else:
        if kind == "score":
            print("scores (the model was trained with mse: its outputs are not probabilities)")
        for r in results:
            top = ", ".join(
                f"{t['class']} {t['score']:.3f}" if kind == "score" else f"{t['class']} {100 * t['probability']:.1f}%"
                for t in r["top"]
            )
            print(f"{r['image']}: {r['class']}   ({top})")
    return 0


def cmd_info(args) -> int:
    from ..models import summary
    from ..serialization import load

    model = load(args.checkpoint, allow_nonfinite=True)  # describe a broken checkpoint too, and say so
    meta = model.metadata
    print(f"{args.checkpoint}: handgrad {meta.get('handgrad_version')} checkpoint, {meta.get('dtype')}")
    for name in model.nonfinite:
        print(
            f"handgrad: warning: {args.checkpoint}: tensor {name} is not finite; eval and predict refuse it",
            file=sys.stderr,
        )
    for key in ("dataset", "model", "layers", "loss", "epoch", "input_shape", "classes", "normalization", "plugins"):
        if key in meta:
            print(f"  {key}: {meta[key]}")
    print(summary(model, meta.get("input_shape", (1, 28, 28))))
    return 0


def cmd_datasets(args) -> int:
    from ..data import describe_datasets

    rows = [("dataset", "found in", "files")] + [
        tuple(str(v) for v in row) for row in describe_datasets(data_dir=args.data_dir)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, location, files in rows:
        print(f"{name:<{widths[0]}}  {location:<{widths[1]}}  {files:>5}")
    return 0


def _run_fields(args) -> dict:
    """The settings every run of a compare or a sweep shares (the data, the seed, the model's bias)."""
    return {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "seed": args.seed,
        "train_size": args.train_size,
        "val_fraction": args.val_fraction,
        "grad_norm_every": args.grad_norm_every,
        "bias": not args.no_bias,
    }


def _shared_config(args) -> dict:
    fields = {**_run_fields(args), "init": args.init}
    for name in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    return fields


def cmd_compare(args) -> int:
    from .compare import DEFAULT_MODELS, compare, format_table

    models = args.models or list(DEFAULT_MODELS)
    unknown = [m for m in models if _check_model_or_spec(m)]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}: {_check_model_or_spec(unknown[0])}")
    rows = compare(models, out=args.out, **_shared_config(args))
    print(format_table(rows))
    print(f"figure: {args.out}/compare.png  (table: compare.md, compare.json)")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import GRID_FIELDS, format_table, parse_values, sweep

    grid = {}
    for name in ("model", "lr", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "epochs", "init"):
        text = getattr(args, name)
        if text is not None:
            grid[name] = parse_values(name, text)
            _check_grid_values(name, text)
    rows = sweep(
        grid,
        out=args.out,
        workers=args.workers,
        threads=args.threads,
        world=getattr(args, "world", None),
        **_run_fields(args),
    )
    if rows and args.sort not in rows[0]:
        raise ValueError(f"--sort: no column {args.sort!r}; columns: {', '.join(rows[0])}")
    print(format_table(rows, [k for k in grid if k in GRID_FIELDS], sort_by=args.sort))
    print(f"results: {args.out}/sweep.html (parallel coordinates + sortable table), sweep.csv, sweep.json")
    return 0


def _check_grid_values(name, text) -> None:
    """Each of a sweep option's comma-separated values passes the check the single option has."""
    from ..models import INITS

    choices = {
        "optimizer": ["sgd", "adam", "adamw", "rmsprop", "adagrad"],
        "schedule": ["cosine", "step", "multistep", "plateau", "none"],
        "init": list(INITS),
    }
    for value in (v.strip() for v in text.split(",") if v.strip()):
        if name == "model" and _check_model_or_spec(value):
            raise ValueError(f"--model: unknown value {value!r}: {_check_model_or_spec(value)}")
        if name in choices and value not in choices[name]:
            raise ValueError(f"--{name.replace('_', '-')}: unknown value {value!r}; known: {', '.join(choices[name])}")
        if name in TRAINING_CHECKS:
            try:
                TRAINING_CHECKS[name](value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"--{name.replace('_', '-')}: {e}") from None
    if not text.strip(" ,"):
        raise ValueError(f"--{name.replace('_', '-')}: expected at least one value, got {text!r}")


def cmd_report(args) -> int:
    from .report import build_report

    path = build_report(args.runs, out=args.out, data_dir=args.data_dir)
    print(f"report: {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def cmd_explain(args) -> int:
    from .explain import explain_named

    report = explain_named(
        args.model,
        args.dataset if args.dataset or args.checkpoint else "digits",
        args.batch_size,
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        seed=args.seed,
        loss=args.loss,
        reduction=args.reduction,
        samples=args.samples,
        eps=args.eps,
        use_torch=False if args.no_torch else None,
    )
    print(report)
    return 0 if report.passed else 1


def cmd_gradcheck(args) -> int:
    from .verify import default_cases, format_table, verify

    cases = default_cases()
    if args.op:
        known = sorted({c.op for c in cases})
        unknown = [op for op in args.op if op not in known]
        if unknown:
            raise ValueError(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(known)}")
        cases = [c for c in cases if c.op in args.op]
    if args.list:
        for c in cases:
            print(f"{c.op:<14} {c.config}")
        return 0
    rows = verify(cases, use_torch=False if args.no_torch else None)
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def _limited_threads(n):
    if n is None:
        import contextlib

        return contextlib.nullcontext()
    from .training import limited_threads

    return limited_threads(n)


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "info": cmd_info,
    "datasets": cmd_datasets,
    "compare": cmd_compare,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "explain": cmd_explain,
    "gradcheck": cmd_gradcheck,
}


def cmd_export(args) -> int:
    from ..onnx import OPSET, export
    from ..serialization import load

    model = load(args.checkpoint)
    proto = export(model, args.output, input_shape=args.input_shape)

    def shape(value):
        dims = value.type.tensor_type.shape.dim
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"

    graph = proto.graph
    print(
        f"wrote {args.output}: ONNX opset {OPSET}, {len(graph.node)} nodes, input '{graph.input[0].name}' "
        f"{shape(graph.input[0])}, output '{graph.output[0].name}' {shape(graph.output[0])}, "
        f"{np.dtype(model.dtype).name}"
    )
    return 0


COMMANDS["export"] = cmd_export


#: The commands that run data-parallel (train) or spread their runs (sweep) under mpiexec or srun.
DISTRIBUTED_COMMANDS = ("train", "sweep")


def _join_world(args):
    """Under a launcher of several processes, this rank's world (handgrad.distributed), with the
    host's cores shared among its ranks unless --threads says otherwise; None otherwise. Only rank
    0 prints to stdout."""
    from .. import distributed

    if args.command not in DISTRIBUTED_COMMANDS or distributed.launched_size() <= 1:
        return None
    world = distributed.init()
    if args.threads is None:
        args.threads = distributed.default_threads(world)
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the rank's output, for the rest of the process)
    return world


def main(argv=None) -> int:
    from ..errors import HandgradError

    try:
        _load_plugins(sys.argv[1:] if argv is None else argv)
    except HandgradError as e:
        print(f"handgrad: error: {e}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    world = None
    try:
        world = args.world = _join_world(args)
        with _limited_threads(getattr(args, "threads", None)):
            code = COMMANDS[args.command](args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except KeyboardInterrupt as e:
        if world is not None:
            from ..distributed import fail_locally

            fail_locally(e if getattr(e, "collective", False) else HandgradError(None, "interrupted"), world)
            if not world.is_main:
                return 128 + getattr(e, "signum", signal.SIGINT)
        signum = getattr(e, "signum", signal.SIGINT)  # training.Interrupted says which signal came
        print(f"handgrad: {'interrupted' if signum == signal.SIGINT else 'terminated'}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # the reader went away (`handgrad info ... | head -1`): stop quietly, as cat and grep do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (HandgradError, ValueError, FileNotFoundError, OSError) as e:
        message = str(e)
        if isinstance(e, OSError) and not isinstance(e, HandgradError) and e.strerror:
            message = f"{e.filename}: {e.strerror}" if e.filename else e.strerror  # the path, not "[Errno 28]"
        if world is not None:  # one rank's own failure ends every rank; one they share, rank 0 says
            from ..distributed import fail_locally

            fail_locally(e, world)
            if not world.is_main:
                return 1
        elif args.command in DISTRIBUTED_COMMANDS and _launched_rank() > 0:
            return 1  # no world to share the error with (mpi4py missing): rank 0 says it once
        print(f"handgrad: error: {message}", file=sys.stderr)
        return 1


def _launched_rank() -> int:
    from ..distributed import launched_rank

    return launched_rank()


if __name__ == "__main__":
    sys.exit(main())
