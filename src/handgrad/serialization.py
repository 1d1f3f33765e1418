"""Checkpoints in the safetensors format: tensors under the PyTorch twin's state_dict names, and
in the header metadata everything ``load`` needs to rebuild the model (architecture, input shape,
normalisation, class names, dataset, handgrad version). No pickle anywhere.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import HandgradError, StateDictError

FORMAT = "handgrad-checkpoint-1"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and a rename:
    all or nothing. The file gets the mode ``open()`` would give it: an existing file's, else
    0o666 less the umask (the temporary file is created with ``os.open``, which applies it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        try:
            os.fchmod(fd, os.stat(path).st_mode & 0o777)  # replacing a file keeps its mode, as open() does
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing (O_EXCL: never an
    existing one). Unlike tempfile.mkstemp (always 0o600), ``os.open`` applies the umask."""
    import secrets

    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder, and that is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write numpy arrays and string metadata as one safetensors file, atomically."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write_bytes(path, save(arrays, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_tensors(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; a missing, truncated or corrupt file raises
    HandgradError naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HandgradError(str(path), "no such checkpoint file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers and sizes
        raise HandgradError(str(path), f"not a readable safetensors file (truncated or corrupt?): {e}") from None
    return tensors, metadata


def save(model, path, /, reference_inputs=None, **metadata) -> None:
    """Save ``model`` (an nn.Sequential) to ``path`` with its architecture and any JSON-able
    ``metadata`` (input_shape, normalization, classes, dataset, ...), atomically.

    ``reference_inputs`` (a few inputs, (N, *input_shape)): also store them and per-layer checks of
    the model's outputs for them under the metadata key "reference" (no extra tensors), which the
    C++ loader recomputes to name the first layer whose output diverges."""
    from . import __version__
    from .models import architecture

    header = {"format": FORMAT, "handgrad_version": __version__, "architecture": architecture(model),
              "dtype": np.dtype(model.dtype).name, **metadata}
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
            result["layers"].append({"type": type(layer).__name__, "shape": list(h.shape), "sum": float(h64.sum()),
                                     "abs_sum": float(np.abs(h64).sum()), "sum_sq": float(np.square(h64).sum()),
                                     "first": h64.ravel()[:8].tolist()})
    model.train(was_training)
    return result


def read_metadata(path) -> dict:
    """The decoded header metadata of a handgrad checkpoint."""
    return _decode(path, load_tensors(path)[1])


def _decode(path, raw: dict) -> dict:
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as e:
        raise HandgradError(str(path), f"checkpoint metadata is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT or "architecture" not in meta:
        raise HandgradError(str(path), f"not a handgrad checkpoint (metadata 'format' is {meta.get('format')!r}, "
                                       f"expected {FORMAT!r} with an 'architecture')")
    return meta


def load(path, dtype=None):
    """Rebuild the model saved at ``path`` and load its weights; ``model.metadata`` holds the
    header (normalization, classes, ...). A file whose tensors do not fit its architecture raises
    HandgradError naming the file and the keys."""
    from .models import from_architecture

    tensors, raw = load_tensors(path)
    meta = _decode(path, raw)
    model = from_architecture(meta["architecture"]).to(dtype or meta.get("dtype", "float32"))
    try:
        model.load_state_dict(tensors)
    except StateDictError as e:
        raise HandgradError(str(path), f"tensors do not match the stored architecture: {e}") from None
    model.metadata = meta
    return model
