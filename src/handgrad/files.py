"""Files written all or nothing: a temporary file in the same folder, fsync, then ``os.replace``,
so a crash mid-write leaves the previous file intact. Checkpoints, ONNX models, run histories,
manifests, figures and reports are all written this way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import WriteError


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and a rename:
    all or nothing. A failure raises WriteError (an OSError) naming ``path``, not the temporary
    file. The file gets the mode ``open()`` would give it: an existing file's, else 0o666 less the
    umask (the temporary file is created with ``os.open``, which applies it)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the mode os.open gave it
            os.fchmod(fd, os.stat(path).st_mode & 0o777)  # replacing a file keeps its mode, as open() does
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise WriteError(str(path), f"cannot write the file: {e.strerror or e}") from e
    except BaseException:
        _remove(tmp)
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


def _remove(tmp) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def atomic_write_text(path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))
