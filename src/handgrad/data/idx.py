"""The IDX file format of MNIST and Fashion-MNIST: reading (with every check), writing, and pairs.

Format (big-endian throughout)::

    bytes 0-1   zero
    byte  2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    d x int32   the size of each dimension
    data        prod(sizes) items of the dtype, C order, and nothing after them

So the magic number (bytes 0-3 as one int32) is 0x00000801 for a label file (uint8, 1-D: N) and
0x00000803 for an image file (uint8, 3-D: N x rows x cols). Files may be gzip-compressed; that is
recognised from the content (bytes 1f 8b), not the name.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import HandgradError

DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
_GZIP_MAGIC = b"\x1f\x8b"


def describe_magic(magic: int) -> str:
    """``0x00000803 (uint8, 3-D)``: the magic number and what it declares."""
    dtype = DTYPES.get((magic >> 8) & 0xFF)
    kind = np.dtype(dtype).newbyteorder("=").name if dtype is not None else "unknown dtype"
    return f"0x{magic:08X} ({kind}, {magic & 0xFF}-D)"


def _read_bytes(path) -> bytes:
    """The file's bytes, decompressed when it is gzip."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise HandgradError(str(path), f"cannot read the IDX file: {e.strerror or e}") from e
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise HandgradError(str(path), f"corrupt or truncated gzip data ({e}); "
                                       f"delete the file and fetch it again") from e


def parse_idx(data: bytes, where: str, magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes (already decompressed) to an array in native byte order.

    ``magic``: when given, the exact magic number the file must have (``IMAGES_MAGIC``,
    ``LABELS_MAGIC``). ``where`` names the file in errors.
    """
    if len(data) < 4:
        raise HandgradError(where, f"too short for an IDX file: {len(data)} bytes, the header alone needs at least 4")
    got = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        expected = describe_magic(magic) if magic is not None else \
            f"{describe_magic(LABELS_MAGIC)} for labels or {describe_magic(IMAGES_MAGIC)} for images"
        raise HandgradError(where, f"bad magic number 0x{got:08X}, expected {expected}: an IDX file starts with "
                                   f"two zero bytes, then the dtype code and the number of dimensions")
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X} {d.newbyteorder('=').name}" for c, d in DTYPES.items())
        raise HandgradError(where, f"unknown dtype code 0x{code:02X} in magic number 0x{got:08X}; "
                                   f"expected one of {known}")
    if ndim == 0:
        raise HandgradError(where, f"magic number 0x{got:08X} declares 0 dimensions, expected at least 1")
    if magic is not None and got != magic:
        kind = {LABELS_MAGIC: "a labels file", IMAGES_MAGIC: "an images file"}.get(magic, "this file")
        hint = "; are the images and labels files swapped?" if {got, magic} == {LABELS_MAGIC, IMAGES_MAGIC} else ""
        raise HandgradError(where, f"magic number {describe_magic(got)}, expected {describe_magic(magic)} "
                                   f"for {kind}{hint}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise HandgradError(where, f"truncated header: {ndim} dimensions need {header} header bytes, "
                                   f"the file holds {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    dims = " x ".join(map(str, shape))
    if body < expected:
        raise HandgradError(where, f"truncated: the header declares {dims} {dtype.newbyteorder('=').name} "
                                   f"= {expected} data bytes, the file holds {body} ({expected - body} missing)")
    if body > expected:
        raise HandgradError(where, f"{body - expected} trailing bytes: the header declares {dims} "
                                   f"{dtype.newbyteorder('=').name} = {expected} data bytes, the file holds {body}")
    # astype copies into a writable array in native byte order
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array, checking the header against the size.

    Raises ``HandgradError(path, reason)`` for a bad magic number, unknown dtype code, zero
    dimensions, a truncated file or trailing bytes, and a corrupt gzip stream.

    Example::

        >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
        (10000,)
    """
    return parse_idx(_read_bytes(path), str(path), magic)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: name ends in .gz)."""
    array = np.asarray(array)
    code = next((c for c, d in DTYPES.items() if d.newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None or array.ndim == 0:
        raise HandgradError(str(path), f"cannot write an array of dtype {array.dtype.name} and "
                                       f"{array.ndim} dimensions as IDX")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    compress = str(path).endswith(".gz") if compress is None else compress
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if compress else data)


def load_idx_pair(images_path, labels_path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file (uint8, N x rows x cols) and its labels file (uint8, N) and check they agree.

    Returns ``(images uint8 (N, rows, cols), labels int64 (N,))``. Raises ``HandgradError`` naming
    the file when either is malformed, the item counts differ, or a label is outside
    ``0 .. num_classes - 1``.
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise HandgradError(str(labels_path), f"holds {len(labels)} labels but the images file "
                                              f"{os.fspath(images_path)} holds {len(images)} images; "
                                              f"expected equal counts")
    if len(labels) and labels.max() >= num_classes:
        bad = np.flatnonzero(labels >= num_classes)
        raise HandgradError(str(labels_path), f"label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                                              f"({len(bad)} such labels); expected 0 to {num_classes - 1}")
    return images, labels.astype(np.int64)
