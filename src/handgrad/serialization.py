"""Checkpoints in the safetensors format: tensors under the PyTorch twin's state_dict names, and
in the header metadata everything ``load`` needs to rebuild the model (architecture, input shape,
normalisation, class names, dataset, handgrad version). No pickle anywhere.

Files are written atomically (``files.atomic_write_bytes``: a temporary file in the same folder,
then ``os.replace``), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import HandgradError, StateDictError, fmt_shape
from .files import atomic_write_bytes

if TYPE_CHECKING:
    from . import nn

FORMAT = "handgrad-checkpoint-1"


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write numpy arrays and string metadata as one safetensors file, atomically."""
    from safetensors.numpy import save

    # ascontiguousarray makes a 0-d array (BatchNorm's num_batches_tracked) 1-d: keep its shape
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}
    atomic_write_bytes(path, save(arrays, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def check_readable(path, what: str = "checkpoint") -> Path:
    """``path`` as a Path when it is a regular file this process can open; otherwise HandgradError
    saying which of missing, a folder, not a regular file, or unreadable (with the system's reason)."""
    path = Path(path)
    if not path.exists():
        raise HandgradError(str(path), f"no such {what} file")
    if path.is_dir():
        raise HandgradError(str(path), f"is a folder, expected a {what} file")
    if not path.is_file():
        raise HandgradError(str(path), f"is not a regular file, expected a {what} file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise HandgradError(str(path), f"cannot read the {what} file: {e.strerror or e}") from None
    return path


def _safetensors(path, read):
    """``read(handle)`` on the open safetensors file; any failure of the reader is a HandgradError."""
    from safetensors import safe_open

    path = check_readable(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            return read(f)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # its own error types for bad headers and sizes; a Rust panic is a BaseException
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HandgradError(str(path), f"not a readable safetensors file (truncated or corrupt?): {reason}") from None


def load_tensors(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; a missing, truncated or corrupt file raises
    HandgradError naming the file."""
    # safe_open has keys() but is not iterable, so ``f.keys()`` it is
    return _safetensors(path, lambda f: ({k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})))  # noqa: SIM118


def read_header(path) -> tuple[dict, dict]:
    """(metadata, {tensor name: (shape, safetensors dtype such as "F32")}) without reading any tensor."""

    def read(f):
        return dict(f.metadata() or {}), {
            k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
            for k in f.keys()  # noqa: SIM118
        }

    return _safetensors(path, read)


def save(model, path, /, reference_inputs=None, **metadata) -> None:
    """Save ``model`` (an nn.Sequential) to ``path`` with its architecture and any JSON-able
    ``metadata`` (input_shape, normalization, classes, dataset, ...), atomically.

    ``reference_inputs`` (a few inputs, (N, *input_shape)): also store them and per-layer checks of
    the model's outputs for them under the metadata key "reference" (no extra tensors), which the
    C++ loader recomputes to name the first layer whose output diverges."""
    from . import __version__
    from .models import architecture, check_storable
    from .plugins import plugins_of

    header = {
        "format": FORMAT,
        "handgrad_version": __version__,
        "architecture": architecture(model),
        "dtype": np.dtype(model.dtype).name,
        **metadata,
    }
    for i, layer in enumerate(model):
        check_storable(i, type(layer))
    plugins = plugins_of(model)
    if plugins:  # where each class of the user's came from, for the error that names it at load
        header["plugins"] = plugins
    if reference_inputs is not None:
        header["reference"] = reference_checks(model, reference_inputs)
    save_tensors(path, model.state_dict(), {k: json.dumps(v) for k, v in header.items()})


def reference_checks(model, inputs) -> dict:
    """The model's outputs for ``inputs``, layer by layer in eval mode, as JSON: per layer its shape,
    sum, sum of absolute values, sum of squares (float64) and first 8 values; the inputs as a flat list."""
    from ._grad_mode import no_grad

    h = np.asarray(inputs, dtype=model.dtype)
    result = {"input_shape": list(h.shape), "inputs": h.ravel().tolist(), "layers": []}
    was_training = model.training
    model.eval()
    with no_grad():
        for layer in model:
            h = layer(h)
            h64 = h.astype(np.float64)
            result["layers"].append(
                {
                    "type": type(layer).__name__,
                    "shape": list(h.shape),
                    "sum": float(h64.sum()),
                    "abs_sum": float(np.abs(h64).sum()),
                    "sum_sq": float(np.square(h64).sum()),
                    "first": h64.ravel()[:8].tolist(),
                }
            )
    model.train(was_training)
    return result


def _decode(path, raw: dict) -> dict:
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer of too many digits, deep nesting
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise HandgradError(str(path), f"checkpoint metadata is not valid JSON: {reason}") from None
    if meta.get("format") != FORMAT or "architecture" not in meta:
        raise HandgradError(
            str(path),
            f"not a handgrad checkpoint (metadata 'format' is {_brief(meta.get('format'))}, "
            f"expected {FORMAT!r} with an 'architecture')",
        )
    return meta


FLOAT_DTYPES = ("F16", "F32", "F64")
INT_DTYPES = ("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64")
LOSSES = ("cross_entropy", "mse")


def check_checkpoint(path, meta: dict, tensors: dict) -> None:
    """Check a checkpoint's decoded metadata and its tensors' names, shapes and dtypes (``tensors``:
    name -> (shape, safetensors dtype), as ``read_header`` gives) before anything is built or read:
    the architecture entry by entry and its shapes chained from ``input_shape``, every metadata field
    ``load`` and the CLI use, and the tensors against the parameters the architecture declares.
    Raises HandgradError naming the file and the field or tensor."""
    from .models import MAX_SIZE, check_architecture
    from .nn import LAYERS

    def fail(message):
        raise HandgradError(str(path), message)

    plugins = _check_plugins(path, meta.get("plugins"))
    try:
        expected, output = check_architecture(meta["architecture"], meta.get("input_shape"))
    except HandgradError as e:
        _fail_on_missing_plugin(path, meta["architecture"], plugins)
        fail(str(e))
    if "dtype" in meta and meta["dtype"] not in ("float32", "float64"):
        fail(f'\'dtype\' must be "float32" or "float64", got {_brief(meta["dtype"])}')
    classes = meta.get("classes")
    if classes is not None:
        if (
            not isinstance(classes, list)
            or not 1 <= len(classes) <= MAX_SIZE
            or not all(isinstance(c, str) for c in classes)
        ):
            fail(f"'classes' must be a list of 1 to {MAX_SIZE} strings, got {_brief(classes)}")
        outputs = output[-1] if output[-1] is not Ellipsis else None
        if outputs is not None and outputs != len(classes):
            fail(f"'classes' names {len(classes)} classes, but the model has {outputs} outputs")
    norm = meta.get("normalization")
    if norm is not None and not (
        isinstance(norm, dict) and _finite(norm.get("mean")) and _finite(norm.get("std")) and norm["std"] > 0
    ):
        fail(f'\'normalization\' must be null or {{"mean": a finite number, "std": a number > 0}}, got {_brief(norm)}')
    if meta.get("loss") is not None and meta["loss"] not in LOSSES:
        fail(f"'loss' must be one of {', '.join(LOSSES)}, got {_brief(meta['loss'])}")
    for key in ("dataset", "model"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            fail(f"{key!r} must be a string, got {_brief(meta[key])}")
    # a plug-in layer's tensors ("i.*") are whatever the file holds under its prefix
    opaque = tuple(k[:-1] for k, (shape, _) in expected.items() if shape is None)
    expected = (
        dict(expected, **{k: (tuple(tensors[k][0]), True) for k in tensors if k.startswith(opaque)})
        if opaque
        else expected
    )
    expected = {k: v for k, v in expected.items() if v[0] is not None}
    optional = {
        f"{i}.{name}"
        for i, layer in enumerate(meta["architecture"])
        for name in getattr(LAYERS.get(layer["type"]), "optional_buffers", ())
    }
    missing = [k for k in expected if k not in tensors and k not in optional]
    unexpected = [k for k in tensors if k not in expected]
    problems = ([f"missing tensors: {', '.join(missing)}"] if missing else []) + (
        [f"unexpected tensors: {', '.join(unexpected[:8])}" + (", ..." if len(unexpected) > 8 else "")]
        if unexpected
        else []
    )
    for key, (shape, floating) in expected.items():
        if key not in tensors:
            continue
        got_shape, got_dtype = tensors[key]
        if tuple(got_shape) != shape:
            problems.append(f"{key}: expected {fmt_shape(shape)}, got {fmt_shape(got_shape)}")
        elif got_dtype not in (FLOAT_DTYPES if floating else INT_DTYPES):
            kinds = "a float dtype (F16, F32, F64)" if floating else "an integer dtype"
            problems.append(f"{key}: expected {kinds}, got {got_dtype}")
    if problems:
        fail(f"tensors do not match the stored architecture: {'; '.join(problems)}")


def _check_plugins(path, plugins) -> dict:
    """The checkpoint's ``plugins`` record, checked: {class name: the plug-in that defined it}."""
    from .models import MAX_LAYERS

    if plugins is None:
        return {}
    entries_ok = (
        isinstance(plugins, list)
        and len(plugins) <= MAX_LAYERS
        and all(
            isinstance(p, dict)
            and set(p) == {"plugin", "classes"}
            and isinstance(p["plugin"], str)
            and 0 < len(p["plugin"]) <= 4096
            and isinstance(p["classes"], list)
            and len(p["classes"]) <= MAX_LAYERS
            and all(isinstance(c, str) and 0 < len(c) <= 256 for c in p["classes"])
            for p in plugins
        )
    )
    if not entries_ok:
        raise HandgradError(
            str(path),
            f"'plugins' must be a list of {{\"plugin\": a path or module name, "
            f'"classes": [class names]}}, got {_brief(plugins)}',
        )
    return {c: p["plugin"] for p in plugins for c in p["classes"]}


def _fail_on_missing_plugin(path, layers, plugins) -> None:
    """The one-line error for the first layer whose class a plug-in defined and no plug-in loaded
    has registered. Nothing is imported here: loading never runs code by itself."""
    from .models import _layer_class
    from .plugins import PluginError, how_to_load

    if not plugins or not isinstance(layers, list):
        return
    for i, spec in enumerate(layers):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if not isinstance(kind, str) or kind not in plugins:
            continue
        try:
            _layer_class(kind)
        except ValueError:
            raise PluginError(
                str(path),
                f"layer {i} is a {kind}, a class from the plug-in {plugins[kind]}, "
                f"which is not loaded: {how_to_load(plugins[kind])}",
            ) from None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def nonfinite_tensors(tensors: dict) -> list:
    """``["0.weight (3 NaN, 1 inf of 6272 values)", ...]`` for every floating tensor holding NaN or inf."""
    found = []
    for name, value in tensors.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            nan = int(np.isnan(value).sum())
            found.append(
                f"{name} ({nan} NaN, {int(value.size - nan - np.isfinite(value).sum())} inf of {value.size} values)"
            )
    return found


def load(path, dtype=None, allow_nonfinite: bool = False) -> nn.Sequential:
    """Rebuild the model saved at ``path`` and load its weights; ``model.metadata`` holds the
    header (normalization, classes, ...).

    Everything is checked before anything is built (``check_checkpoint``): a file whose
    architecture, metadata or tensors are malformed or do not fit each other raises HandgradError
    naming the file and the field or tensor, so a small file cannot ask for a large allocation.
    Weights holding NaN or inf raise HandgradError naming the tensors, unless ``allow_nonfinite``
    (then ``model.nonfinite`` lists them)."""
    from .models import from_architecture

    raw, shapes = read_header(path)
    meta = _decode(path, raw)
    check_checkpoint(path, meta, shapes)
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise HandgradError(str(path), f"load() takes dtype float32 or float64, got {np.dtype(dtype).name}")
    tensors, _ = load_tensors(path)
    nonfinite = nonfinite_tensors(tensors)
    if nonfinite and not allow_nonfinite:
        raise HandgradError(
            str(path),
            f"non-finite weights in {'; '.join(nonfinite)}: the checkpoint is broken "
            f"(a run's earlier checkpoint may be good)",
        )
    model = from_architecture(meta["architecture"])
    model.to(dtype or meta.get("dtype", "float32"))  # in place
    try:
        model.load_state_dict(tensors)
    except StateDictError as e:
        raise HandgradError(str(path), f"tensors do not match the stored architecture: {e}") from None
    model.metadata = meta
    model.nonfinite = nonfinite
    return model
