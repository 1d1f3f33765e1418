"""Downloading the IDX files: mirrors tried in order, MD5 checks, retries, a progress bar, atomic writes.

A file is streamed into a hidden temporary file beside its destination (``.<name>.XXXX.part``)
while its MD5 is computed; only when the digest matches is it renamed into place with
``os.replace``, so an interrupted or corrupt download never leaves a file under the real name.
Mirrors and checksums are torchvision's. urllib.request (and the network) is only touched here,
and only imported when a download actually runs.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..errors import HandgradError

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_CHUNK = 1 << 16


class DownloadError(HandgradError):
    """Every mirror failed for a file; the message lists each URL and why."""


class _ChecksumMismatch(Exception):
    pass


def md5_file(path) -> str:
    """Hex MD5 digest of a file's bytes (as stored, i.e. of the .gz when compressed)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _progress_bar(total, name):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: download silently
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _fetch(url: str, dest: Path, md5: str | None, progress: bool, timeout: float) -> None:
    """One attempt: stream ``url`` into a temp file, check the MD5, rename it to ``dest``."""
    import tempfile
    import urllib.request

    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "handgrad"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, dest.name) if progress else None
            digest = hashlib.md5()
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if md5 is not None and digest.hexdigest() != md5:
            raise _ChecksumMismatch(f"MD5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_file(
    urls,
    dest,
    md5: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> str:
    """Download ``dest`` from the first of ``urls`` that works; return that URL.

    Each URL gets up to ``retries`` attempts (waiting ``backoff * 2**attempt`` seconds between them)
    for network errors and server errors (5xx); a client error (404, 403) or a wrong MD5 moves on
    to the next URL at once. Raises ``DownloadError(file name, every failure)`` when all fail.
    """
    import http.client
    import urllib.error

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        for attempt in range(max(1, retries)):
            try:
                _fetch(url, dest, md5, progress, timeout)
                return url
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                if e.code < 500:
                    break
            except _ChecksumMismatch as e:
                failures.append(f"{url}: {e}")
                break
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, short reads
                failures.append(f"{url}: {getattr(e, 'reason', None) or e!r}")
            if attempt + 1 < retries:
                time.sleep(backoff * 2**attempt)
    raise DownloadError(dest.name, "could not download from any mirror:\n  " + "\n  ".join(failures))


def download_dataset(name: str, folder, file_names, progress: bool = True, retries: int = 3) -> list[str]:
    """Download the named files of dataset ``name`` into ``folder`` from ``MIRRORS[name]``.

    Every file is MD5-checked against ``MD5[name]``. Returns the URLs the files came from.
    """
    folder = Path(folder)
    return [
        download_file(
            [mirror + file for mirror in MIRRORS[name]],
            folder / file,
            MD5[name].get(file),
            progress=progress,
            retries=retries,
        )
        for file in file_names
    ]
