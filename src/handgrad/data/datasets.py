"""Datasets by name: MNIST and Fashion-MNIST (IDX files found on disk or downloaded) and digits.

Where the IDX files are looked for, in order (the first folder holding all four wins):

1. ``data_dir`` (``--data-dir``): the folder holding the dataset's four files, or a parent folder
   holding ``<name>/``. Given explicitly, it must hold them: nothing further is searched.
2. ``$HANDGRAD_DATA_DIR/<name>/``.
3. The cache, ``$XDG_CACHE_HOME/handgrad/<name>/`` (default ``~/.cache/handgrad/<name>/``); missing
   files are downloaded into it when ``download=True``.

Each file may be gzip-compressed (``train-images-idx3-ubyte.gz``) or raw (without ``.gz``).
Files found on disk are checked for format (``idx.load_idx_pair``); downloads are MD5-checked too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import HandgradError
from . import download as _download
from .idx import load_idx_pair

ENV_VAR = "HANDGRAD_DATA_DIR"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CLASSES = {
    "mnist": [str(k) for k in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "digits": [str(k) for k in range(10)],
}
IDX_DATASETS = ("mnist", "fashion-mnist")
DATASETS = IDX_DATASETS + ("digits",)
DIGITS_TEST_FRACTION = 0.2


@dataclass(repr=False)
class Dataset:
    """A train/test pair of images ``(N, 1, H, W)`` float32 in [0, 1] and labels ``(N,)`` int64.

    ``files`` maps each file read to ``{"path", "md5"}`` (for a run's manifest); ``source`` says where
    the data came from.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list
    files: dict = field(default_factory=dict)
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self):
        return (
            f"Dataset({self.name!r}, train={self.train_images.shape}, test={self.test_images.shape}, "
            f"{self.num_classes} classes, source={self.source!r})"
        )


class DatasetRow(NamedTuple):
    """One line of ``handgrad datasets``: the name, where it was found (or "not found"), file count."""

    name: str
    location: str
    files: int


def cache_dir(name: str | None = None) -> Path:
    """``$XDG_CACHE_HOME/handgrad[/name]``, defaulting to ``~/.cache/handgrad[/name]``."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handgrad"
    return root / name if name else root


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}.get(key, key)
    if key not in DATASETS:
        raise HandgradError(str(name), f"unknown dataset; expected one of {', '.join(DATASETS)}")
    return key


def _present(folder: Path) -> dict:
    """The dataset files in ``folder``, each as ``name.gz`` or, failing that, raw ``name``."""
    found = {}
    for file in FILES:
        for candidate in (folder / file, folder / file[:-3]):
            if candidate.is_file():
                found[file] = candidate
                break
    return found


def _candidates(name: str) -> list:
    """(label, folder) in lookup order after an explicit data_dir: the env var's folder, the cache."""
    places = []
    if os.environ.get(ENV_VAR):
        places.append((ENV_VAR, Path(os.environ[ENV_VAR]) / name))
    places.append(("cache", cache_dir(name)))
    return places


def _load_idx_dataset(name: str, files: dict, source: str) -> Dataset:
    classes = CLASSES[name]
    paths = [files[f] for f in FILES]
    train_x, train_y = load_idx_pair(paths[0], paths[1], len(classes))
    test_x, test_y = load_idx_pair(paths[2], paths[3], len(classes))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise HandgradError(
            str(paths[2]),
            f"images are {test_x.shape[1]}x{test_x.shape[2]} but the training "
            f"images are {train_x.shape[1]}x{train_x.shape[2]}; expected the same size",
        )
    manifest = {p.name: {"path": str(p.resolve()), "md5": _download.md5_file(p)} for p in paths}
    return Dataset(name, _to_float(train_x), train_y, _to_float(test_x), test_y, list(classes), manifest, source)


def _to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1], as torchvision's ToTensor (x / 255)."""
    return np.divide(images[:, None], np.float32(255), dtype=np.float32)


def _not_found(name: str, searched: list, reason: str) -> HandgradError:
    files = ", ".join(FILES)
    mirrors = " or ".join(_download.MIRRORS.get(name, []))
    lines = [f"the {name} files are not available ({reason}).", "Searched:"]
    if not os.environ.get(ENV_VAR):
        lines.append(f"  {ENV_VAR}: not set")
    for label, folder, present in searched:
        missing = [f for f in FILES if f not in present]
        lines.append(f"  {label}: {folder} (missing {', '.join(missing)})")
    lines += [
        "To fix it, put the four files",
        f"  {files}",
        "(gzip-compressed or not) in one of these places:",
        "  - a folder passed as data_dir= (--data-dir on the command line);",
        f"  - {ENV_VAR}=<folder> with them in <folder>/{name}/;",
        f"  - the cache folder {cache_dir(name)};",
        f"or load with download=True on a machine with internet access. The files are at {mirrors}.",
    ]
    return HandgradError(name, "\n".join(lines))


def load_dataset(name: str, data_dir=None, download: bool = True, progress: bool = True) -> Dataset:
    """Load ``mnist``, ``fashion-mnist`` or ``digits`` as a ``Dataset``.

    MNIST and Fashion-MNIST: 60,000 train and 10,000 test 28x28 images, looked up as the module
    docstring says and downloaded into the cache as a last resort. ``digits``: scikit-learn's
    embedded 1,797 8x8 images (values 0-16, scaled by 1/16), the last 20% of each class as test.

    Example::

        >>> ds = load_dataset("mnist", data_dir="/data/mnist", download=False)
        >>> ds.train_images.shape, ds.test_labels.dtype
        ((60000, 1, 28, 28), dtype('int64'))
    """
    name = _canonical(name)
    if name == "digits":
        return load_digits()
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        for folder in (data_dir / name, data_dir):
            files = _present(folder)
            if len(files) == len(FILES):
                return _load_idx_dataset(name, files, f"data_dir: {folder}")
        missing = [f for f in FILES if f not in _present(data_dir)]
        raise HandgradError(
            str(data_dir),
            f"data_dir for {name} lacks {', '.join(missing)}; expected the four files "
            f"{', '.join(FILES)} (or raw, without .gz) in it or in {data_dir / name}",
        )
    searched = []
    for label, folder in _candidates(name):
        files = _present(folder)
        if len(files) == len(FILES):
            return _load_idx_dataset(name, files, f"{label}: {folder}")
        searched.append((label, folder, files))
    folder, files = cache_dir(name), searched[-1][2]
    if not download:
        raise _not_found(name, searched, "none found, and download=False")
    missing = [f for f in FILES if f not in files]
    try:
        urls = _download.download_dataset(name, folder, missing, progress=progress)
    except _download.DownloadError as e:
        raise _not_found(name, searched, f"the download failed: {e}") from e
    sites = sorted({url.rsplit("/", 1)[0] + "/" for url in urls})
    return _load_idx_dataset(name, _present(folder), f"cache: {folder} (downloaded from {', '.join(sites)})")


def _digits_table() -> tuple[np.ndarray, np.ndarray, Path | None]:
    """(images (1797, 8, 8) valued 0-16, labels, the CSV file) of scikit-learn's digits. The file
    ``sklearn.datasets.load_digits`` reads (64 pixels and the label per row) is read here as that
    function reads it, without importing scikit-learn, which costs about a second per process; where
    the file is not at its usual place, scikit-learn's own loader."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise HandgradError(
            "digits",
            "needs scikit-learn (pip install scikit-learn, or handgrad[cli]); it ships the 8x8 digits, no download",
        )
    csv = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        import gzip

        with gzip.open(csv, "rt") as rows:
            table = np.loadtxt(rows, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64), csv
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    return bunch.images, bunch.target.astype(np.int64), None


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (no download): 1,797 images, the last 20% of each class as test."""
    pixels, labels, csv = _digits_table()
    images = (pixels[:, None] / 16).astype(np.float32)
    test = np.zeros(len(labels), dtype=bool)
    for k in range(10):
        members = np.flatnonzero(labels == k)
        test[members[len(members) - int(round(len(members) * DIGITS_TEST_FRACTION)) :]] = True
    files = {csv.name: {"path": str(csv), "md5": _download.md5_file(csv)}} if csv is not None else {}
    source = "scikit-learn: sklearn.datasets.load_digits (last 20% of each class as test)"
    return Dataset(
        "digits", images[~test], labels[~test], images[test], labels[test], list(CLASSES["digits"]), files, source
    )


def describe_datasets(data_dir=None) -> list:
    """One ``DatasetRow(name, location, files)`` per dataset, for ``handgrad datasets``.

    ``data_dir`` is looked in as ``load_dataset`` looks (``train --data-dir``): ``data_dir/<name>/``,
    then ``data_dir`` itself, and nowhere else. Nothing is read beyond directory listings, nothing
    is downloaded.
    """
    rows = []
    for name in IDX_DATASETS:
        if data_dir is not None:
            folder = Path(data_dir).expanduser()
            places = [("data_dir", folder / name), ("data_dir", folder)]
        else:
            places = _candidates(name)
        found = [(label, folder, len(_present(folder))) for label, folder in places]
        complete = [row for row in found if row[2] == len(FILES)]
        if complete:
            label, folder, count = complete[0]
            rows.append(DatasetRow(name, f"{label}: {folder}", count))
        else:
            rows.append(DatasetRow(name, "not found", max(count for _, _, count in found)))
    import importlib.util

    has_sklearn = importlib.util.find_spec("sklearn") is not None
    rows.append(
        DatasetRow(
            "digits",
            "scikit-learn (embedded)" if has_sklearn else "not found (needs scikit-learn)",
            1 if has_sklearn else 0,
        )
    )
    return rows
