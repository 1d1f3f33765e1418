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
import math
import os
import stat
import zlib

import numpy as np

from ..errors import HandgradError

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
_GZIP_MAGIC = b"\x1f\x8b"


def describe_magic(magic: int) -> str:
    """``0x00000803 (uint8, 3-D)``: the magic number and what it declares."""
    dtype = DTYPES.get((magic >> 8) & 0xFF)
    kind = np.dtype(dtype).newbyteorder("=").name if dtype is not None else "unknown dtype"
    return f"0x{magic:08X} ({kind}, {magic & 0xFF}-D)"


#: The most data bytes an IDX file may declare (MNIST's training images hold 47 MB).
MAX_DATA_BYTES = 1 << 30
#: How far past the declared data a gzip stream is decompressed to count trailing bytes.
MAX_TRAILING_COUNT = 1 << 24
_CHUNK = 1 << 20


class _Gunzip:
    """The decompressed content of a gzip file, handed out in pieces of a requested size, so that
    no more is ever decompressed than is asked for. Members follow one another as in gzip(1);
    zero padding after the last member is ignored, anything else is an error. zlib checks each
    member's CRC-32 and length when its end is reached."""

    def __init__(self, f, where: str, first: bytes = b""):
        self.f, self.where = f, where
        self.stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.pending = first  # compressed bytes read from the file but not yet given to zlib
        self.done = False

    def _corrupt(self, reason):
        return HandgradError(
            self.where, f"corrupt or truncated gzip data ({reason}); delete the file and fetch it again"
        )

    def read(self, n: int) -> bytearray:
        out = bytearray()
        while len(out) < n and not self.done:
            if self.stream.eof:
                self._next_member()
                continue
            data = self.stream.unconsumed_tail or self.pending or self.f.read(_CHUNK)
            self.pending = b""
            try:
                piece = self.stream.decompress(data, n - len(out))
            except zlib.error as e:
                raise self._corrupt(e) from None
            if not data and not piece and not self.stream.eof:
                raise self._corrupt("the stream ends early")
            out += piece
        return out

    def _next_member(self):
        rest = self.stream.unused_data
        while len(rest) < 2:
            more = self.f.read(_CHUNK)
            if not more:
                break
            rest += more
        if rest[:2] == _GZIP_MAGIC:
            self.stream, self.pending = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), rest
            return
        while rest:
            if rest.strip(b"\0"):
                raise self._corrupt("trailing garbage after the gzip stream")
            rest = self.f.read(_CHUNK)
        self.done = True


class _Raw:
    def __init__(self, f, first: bytes):
        self.f, self.first = f, first

    def read(self, n: int) -> bytearray:
        out = bytearray(self.first[:n])
        self.first = self.first[n:]
        while len(out) < n:
            piece = self.f.read(min(n - len(out), _CHUNK))
            if not piece:
                break
            out += piece
        return out


def _read_idx_bytes(path, magic: int | None) -> bytearray:
    """The file's IDX bytes (decompressed when it is gzip), read header first: the declared size is
    checked against MAX_DATA_BYTES (and, for a raw file, the file's size) before the data is read,
    and no more than the declared data (plus a count of trailing bytes) is ever decompressed."""
    where = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a folder, a pipe, a device: never opened (a pipe blocks)
            raise HandgradError(where, "is not a regular file, expected an IDX file")
        f = open(path, "rb")  # noqa: SIM115 (entered by the `with` below, once open errors are worded)
    except OSError as e:
        raise HandgradError(where, f"cannot read the IDX file: {e.strerror or e}") from None
    with f:
        first = f.read(2)
        gz = first == _GZIP_MAGIC
        reader = _Gunzip(f, where, first) if gz else _Raw(f, first)
        data = reader.read(4)
        if len(data) == 4 and data[0] == 0 and data[1] == 0 and data[3] > 0:
            data += reader.read(4 * data[3])
        # the header alone, or the header's own error
        shape, dtype, header = _parse_header(data, where, magic)
        expected = math.prod(shape) * dtype.itemsize
        dims = " x ".join(map(str, shape))
        declared = f"the header declares {dims} {dtype.newbyteorder('=').name} = {expected} data bytes"
        if expected > MAX_DATA_BYTES:
            raise HandgradError(where, f"{declared}, more than the limit of {MAX_DATA_BYTES} bytes")
        if not gz:
            body = os.fstat(f.fileno()).st_size - header
            if body < expected:
                raise HandgradError(where, f"truncated: {declared}, the file holds {body} ({expected - body} missing)")
            if body > expected:
                raise HandgradError(where, f"{body - expected} trailing bytes: {declared}, the file holds {body}")
        data += reader.read(expected)
        if len(data) - header < expected:
            body = len(data) - header
            raise HandgradError(where, f"truncated: {declared}, the file holds {body} ({expected - body} missing)")
        trailing = 0
        while gz and trailing <= MAX_TRAILING_COUNT:
            piece = len(reader.read(_CHUNK))
            if not piece:
                break
            trailing += piece
        if trailing:
            count = f"more than {MAX_TRAILING_COUNT}" if trailing > MAX_TRAILING_COUNT else str(trailing)
            raise HandgradError(where, f"{count} trailing bytes: {declared}, the decompressed file holds more")
    return data


def _parse_header(data, where: str, magic: int | None) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header length) from the start of IDX bytes, with every check on the header."""
    if len(data) < 4:
        raise HandgradError(where, f"too short for an IDX file: {len(data)} bytes, the header alone needs at least 4")
    got = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        expected = (
            describe_magic(magic)
            if magic is not None
            else f"{describe_magic(LABELS_MAGIC)} for labels or {describe_magic(IMAGES_MAGIC)} for images"
        )
        raise HandgradError(
            where,
            f"bad magic number 0x{got:08X}, expected {expected}: an IDX file starts with "
            f"two zero bytes, then the dtype code and the number of dimensions",
        )
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X} {d.newbyteorder('=').name}" for c, d in DTYPES.items())
        raise HandgradError(
            where, f"unknown dtype code 0x{code:02X} in magic number 0x{got:08X}; expected one of {known}"
        )
    if ndim == 0:
        raise HandgradError(where, f"magic number 0x{got:08X} declares 0 dimensions, expected at least 1")
    if magic is not None and got != magic:
        kind = {LABELS_MAGIC: "a labels file", IMAGES_MAGIC: "an images file"}.get(magic, "this file")
        hint = "; are the images and labels files swapped?" if {got, magic} == {LABELS_MAGIC, IMAGES_MAGIC} else ""
        raise HandgradError(
            where, f"magic number {describe_magic(got)}, expected {describe_magic(magic)} for {kind}{hint}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise HandgradError(
            where, f"truncated header: {ndim} dimensions need {header} header bytes, the file holds {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = DTYPES[code]
    return shape, dtype, header


def parse_idx(data: bytes | bytearray, where: str, magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes (already decompressed) to an array in native byte order.

    ``magic``: when given, the exact magic number the file must have (``IMAGES_MAGIC``,
    ``LABELS_MAGIC``). ``where`` names the file in errors.
    """
    shape, dtype, header = _parse_header(data, where, magic)
    expected = math.prod(shape) * dtype.itemsize
    body = len(data) - header
    dims = " x ".join(map(str, shape))
    if body < expected:
        raise HandgradError(
            where,
            f"truncated: the header declares {dims} {dtype.newbyteorder('=').name} "
            f"= {expected} data bytes, the file holds {body} ({expected - body} missing)",
        )
    if body > expected:
        raise HandgradError(
            where,
            f"{body - expected} trailing bytes: the header declares {dims} "
            f"{dtype.newbyteorder('=').name} = {expected} data bytes, the file holds {body}",
        )
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
    return parse_idx(_read_idx_bytes(path, magic), str(path), magic)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``compress`` (default: name ends in .gz)."""
    array = np.asarray(array)
    code = next((c for c, d in DTYPES.items() if d.newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None or array.ndim == 0:
        raise HandgradError(
            str(path), f"cannot write an array of dtype {array.dtype.name} and {array.ndim} dimensions as IDX"
        )
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
    if images.size == 0:
        raise HandgradError(
            str(images_path),
            f"holds no images (shape {' x '.join(map(str, images.shape))}); "
            f"expected at least one image of at least 1 x 1 pixels",
        )
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise HandgradError(
            str(labels_path),
            f"holds {len(labels)} labels but the images file "
            f"{os.fspath(images_path)} holds {len(images)} images; "
            f"expected equal counts",
        )
    if len(labels) and labels.max() >= num_classes:
        bad = np.flatnonzero(labels >= num_classes)
        raise HandgradError(
            str(labels_path),
            f"label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"({len(bad)} such labels); expected 0 to {num_classes - 1}",
        )
    return images, labels.astype(np.int64)
