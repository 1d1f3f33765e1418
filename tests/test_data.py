"""handgrad.data: the IDX reader, dataset lookup and download, splits, normalisation, DataLoader.

Everything runs on small generated IDX files in tmp dirs; downloads go to a local http.server on
127.0.0.1. The real MNIST / Fashion-MNIST checks need HANDGRAD_DATA_DIR (skipped without it).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.data import (
    FILES,
    DataLoader,
    Normalizer,
    cache_dir,
    describe_datasets,
    download,
    load_dataset,
    load_idx_pair,
    read_idx,
    stratified_subset,
    train_val_split,
    write_idx,
)
from handgrad.data.datasets import DIGITS_TEST_FRACTION
from handgrad.errors import HandgradError

# -- helpers ------------------------------------------------------------------------------------


def make_idx_set(
    folder: Path, n_train: int = 20, n_test: int = 10, size: int = 4, seed: int = 0, compress: bool = True
) -> dict:
    """Write the four IDX files of a tiny dataset into ``folder``; return the arrays by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        FILES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name if compress else name[:-3]), array)
    return arrays


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.tobytes()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No HANDGRAD_DATA_DIR, HOME and XDG_CACHE_HOME in tmp dirs, proxies bypassed."""
    monkeypatch.delenv("HANDGRAD_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return tmp_path


# -- IDX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "dtype,shape",
    [
        (np.uint8, (5, 3, 2)),
        (np.uint8, (7,)),
        (np.int8, (4, 2)),
        (np.int16, (3, 3)),
        (np.int32, (2, 5)),
        (np.float32, (2, 2, 2)),
        (np.float64, (6,)),
    ],
)
def test_idx_round_trip(tmp_path, compress, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    np.testing.assert_array_equal(got, array)
    got[...] = 0  # the result is writable


def test_gzip_recognised_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), array)


_IMAGES = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
_LABELS = np.array([0, 1, 2, 3, 4], dtype=np.uint8)

# (case, which file is bad, its bytes, words the error must contain)
BAD_FILES = [
    ("bad-magic", "images", b"\x12\x34" + idx_bytes(_IMAGES)[2:], "bad magic number 0x12340803"),
    ("not-idx-text", "labels", b"hello world", "bad magic number"),
    ("dtype-code", "images", idx_bytes(_IMAGES, code=0x07), "unknown dtype code 0x07"),
    ("images-not-uint8", "images", idx_bytes(_IMAGES.astype(">i4"), code=0x0C), "expected 0x00000803 (uint8, 3-D)"),
    ("swapped", "labels", idx_bytes(_IMAGES), "swapped"),
    ("zero-dims", "labels", b"\x00\x00\x08\x00", "0 dimensions"),
    ("short-header", "images", idx_bytes(_IMAGES)[:10], "truncated header"),
    (
        "truncated",
        "images",
        idx_bytes(_IMAGES)[:-7],
        "truncated: the header declares 5 x 4 x 4 uint8 = 80 data bytes, the file holds 73 (7 missing)",
    ),
    ("trailing", "labels", idx_bytes(_LABELS) + b"\x00\x00\x00", "3 trailing bytes"),
    ("count-mismatch", "labels", idx_bytes(_LABELS[:4]), "holds 4 labels but the images file"),
    ("label-range", "labels", idx_bytes(np.array([0, 1, 10, 3, 4], np.uint8)), "label 10 at index 2 is out of range"),
    ("bad-gzip", "images", gzip.compress(idx_bytes(_IMAGES))[:-12], "corrupt or truncated gzip"),
]


@pytest.mark.parametrize("case,bad,data,reason", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_idx_file_names_file_and_reason(tmp_path, case, bad, data, reason):
    paths = {"images": tmp_path / "images-idx3-ubyte", "labels": tmp_path / "labels-idx1-ubyte"}
    paths["images"].write_bytes(idx_bytes(_IMAGES))
    paths["labels"].write_bytes(idx_bytes(_LABELS))
    paths[bad].write_bytes(data)
    with pytest.raises(HandgradError) as info:
        load_idx_pair(paths["images"], paths["labels"])
    message = str(info.value)
    assert message.startswith(f"{paths[bad]}: ") and reason in message


def test_load_idx_pair_class_count(tmp_path):
    write_idx(tmp_path / "i", _IMAGES)
    write_idx(tmp_path / "l", _LABELS)
    images, labels = load_idx_pair(tmp_path / "i", tmp_path / "l", num_classes=5)
    assert labels.dtype == np.int64 and images.shape == (5, 4, 4)
    with pytest.raises(HandgradError, match="expected 0 to 3"):
        load_idx_pair(tmp_path / "i", tmp_path / "l", num_classes=4)


# -- lookup -------------------------------------------------------------------------------------


def test_cache_dir_respects_xdg_then_home(isolated, monkeypatch):
    assert cache_dir("mnist") == isolated / "xdg" / "handgrad" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("mnist") == isolated / "home" / ".cache" / "handgrad" / "mnist"


def test_lookup_order_data_dir_then_env_then_cache(isolated, monkeypatch):
    make_idx_set(isolated / "explicit", n_train=12)
    make_idx_set(isolated / "env" / "mnist", n_train=14)
    make_idx_set(cache_dir("mnist"), n_train=16)
    monkeypatch.setenv("HANDGRAD_DATA_DIR", str(isolated / "env"))
    for data_dir, count, source in [
        (isolated / "explicit", 12, "data_dir"),
        (None, 14, "HANDGRAD_DATA_DIR"),
        ("unset-env", 16, "cache"),
    ]:
        if data_dir == "unset-env":
            monkeypatch.delenv("HANDGRAD_DATA_DIR")
            data_dir = None
        ds = load_dataset("mnist", data_dir=data_dir, download=False)
        assert len(ds.train_labels) == count and ds.source.startswith(source + ":")


def test_dataset_arrays_and_manifest(isolated):
    arrays = make_idx_set(isolated / "fm", n_train=20, n_test=10, size=5, compress=False)
    ds = load_dataset("fashion_mnist", data_dir=isolated / "fm", download=False)
    assert ds.name == "fashion-mnist" and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.train_images.shape == (20, 1, 5, 5) and ds.train_images.dtype == np.float32
    assert ds.test_labels.dtype == np.int64 and ds.test_images.shape == (10, 1, 5, 5)
    np.testing.assert_array_equal(ds.train_images[:, 0] * 255, arrays[FILES[0]].astype(np.float32))
    np.testing.assert_array_equal(ds.test_labels, arrays[FILES[3]])
    assert sorted(ds.files) == sorted(f[:-3] for f in FILES)  # the raw files that were read
    for entry in ds.files.values():
        assert entry["md5"] == md5(Path(entry["path"]))


def test_data_dir_may_be_parent_folder(isolated):
    make_idx_set(isolated / "root" / "mnist", n_train=12)
    make_idx_set(isolated / "root" / "fashion-mnist", n_train=14)
    assert len(load_dataset("fashion-mnist", data_dir=isolated / "root", download=False).train_labels) == 14


def test_explicit_data_dir_must_hold_the_files(isolated):
    make_idx_set(cache_dir("mnist"))
    (isolated / "partial").mkdir()
    write_idx(isolated / "partial" / FILES[0], np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(HandgradError, match="lacks train-labels-idx1-ubyte.gz, t10k-images"):
        load_dataset("mnist", data_dir=isolated / "partial", download=False)


def test_offline_error_says_what_to_do(isolated):
    with pytest.raises(HandgradError) as info:
        load_dataset("mnist", download=False)
    message = str(info.value)
    for words in [
        "download=False",
        "HANDGRAD_DATA_DIR",
        "--data-dir",
        "data_dir=",
        str(cache_dir("mnist")),
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        *FILES,
    ]:
        assert words in message


def test_unknown_dataset_name(isolated):
    with pytest.raises(HandgradError, match="expected one of mnist, fashion-mnist, digits"):
        load_dataset("cifar10")


def test_train_and_test_image_sizes_must_agree(isolated):
    folder = isolated / "mixed"
    make_idx_set(folder, size=4)
    write_idx(folder / FILES[2], np.zeros((10, 5, 5), np.uint8))
    with pytest.raises(
        HandgradError, match="t10k-images-idx3-ubyte.gz: images are 5x5 but the training images are 4x4"
    ):
        load_dataset("mnist", data_dir=folder, download=False)


def test_describe_datasets(isolated, monkeypatch):
    make_idx_set(isolated / "env" / "mnist")
    monkeypatch.setenv("HANDGRAD_DATA_DIR", str(isolated / "env"))
    cache = cache_dir("fashion-mnist")
    cache.mkdir(parents=True)
    write_idx(cache / FILES[1], _LABELS)
    rows = {row.name: row for row in describe_datasets()}
    assert rows["mnist"] == ("mnist", f"HANDGRAD_DATA_DIR: {isolated / 'env' / 'mnist'}", 4)
    assert rows["fashion-mnist"] == ("fashion-mnist", "not found", 1)
    assert "digits" in rows


# -- download -----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the tmp folder; /flaky/... answers 500 on its first request; counts requests."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/flaky/") and self.server.requests.count(self.path) == 1:
            self.send_error(500, "try again")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(isolated):
    """A local HTTP server: /good/ has correct files, /bad/ corrupt ones, /missing/ answers 404."""
    served = isolated / "served"
    make_idx_set(served / "good", n_train=12, seed=1)
    (served / "bad").mkdir()
    for f in FILES:
        (served / "bad" / f).write_bytes(b"a stale or corrupt copy of " + f.encode())
    (served / "flaky").symlink_to(served / "good")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    httpd.requests, httpd.served = [], served
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.md5 = {f: md5(served / "good" / f) for f in FILES}
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _mirrors(monkeypatch, server, *kinds):
    monkeypatch.setitem(download.MIRRORS, "mnist", [f"{server.base}/{kind}/" for kind in kinds])
    monkeypatch.setitem(download.MD5, "mnist", server.md5)


def test_download_falls_back_past_404_and_bad_md5(server, monkeypatch):
    _mirrors(monkeypatch, server, "missing", "bad", "good")
    ds = load_dataset("mnist", progress=True)
    folder = cache_dir("mnist")
    assert ds.source == f"cache: {folder} (downloaded from {server.base}/good/)"
    assert len(ds.train_labels) == 12 and sorted(os.listdir(folder)) == sorted(FILES)
    assert {name: entry["md5"] for name, entry in ds.files.items()} == server.md5
    assert server.requests.count("/missing/" + FILES[0]) == 1  # a 404 is not retried


def test_download_fetches_only_missing_files(server, monkeypatch):
    _mirrors(monkeypatch, server, "good")
    folder = cache_dir("mnist")
    folder.mkdir(parents=True)
    for f in FILES[:2]:
        (folder / f).write_bytes((server.served / "good" / f).read_bytes())
    load_dataset("mnist", progress=False)
    assert sorted(server.requests) == sorted(f"/good/{f}" for f in FILES[2:])


def test_failed_download_leaves_no_file(server, monkeypatch):
    _mirrors(monkeypatch, server, "bad", "missing")
    with pytest.raises(HandgradError) as info:
        load_dataset("mnist", progress=False)
    message = str(info.value)
    assert f"{server.base}/bad/{FILES[0]}: MD5 " in message and f"expected {server.md5[FILES[0]]}" in message
    assert f"{server.base}/missing/{FILES[0]}: HTTP 404" in message
    assert os.listdir(cache_dir("mnist")) == []  # no partial or temporary file


def test_download_retries_server_errors(server, tmp_path):
    dest = tmp_path / "out" / FILES[1]
    url = f"{server.base}/flaky/{FILES[1]}"
    assert download.download_file([url], dest, server.md5[FILES[1]], progress=False, retries=2, backoff=0) == url
    assert server.requests == [f"/flaky/{FILES[1]}"] * 2 and md5(dest) == server.md5[FILES[1]]


# -- digits and the real data sets --------------------------------------------------------------


def test_digits_loads_offline(isolated):
    pytest.importorskip("sklearn")
    ds = load_dataset("digits", download=False)
    assert ds.train_images.shape[1:] == (1, 8, 8) and ds.train_images.dtype == np.float32
    assert len(ds.train_labels) + len(ds.test_labels) == 1797 and ds.test_labels.dtype == np.int64
    assert ds.train_images.min() == 0 and ds.train_images.max() == 1
    test_share = np.bincount(ds.test_labels, minlength=10) / (
        np.bincount(ds.test_labels, minlength=10) + np.bincount(ds.train_labels, minlength=10)
    )
    np.testing.assert_allclose(test_share, 0.2, atol=0.01)
    np.testing.assert_array_equal(load_dataset("digits").test_images, ds.test_images)  # deterministic split


def _real(name: str):
    root = os.environ.get("HANDGRAD_DATA_DIR")
    if not root:
        pytest.skip("HANDGRAD_DATA_DIR is not set (a folder holding mnist/ and fashion-mnist/ IDX files)")
    if not all((Path(root) / name / f).is_file() for f in FILES):
        pytest.skip(f"the {name} IDX files are not all in {Path(root) / name}")
    return load_dataset(name, download=False)


@pytest.mark.data
def test_real_mnist():
    ds = _real("mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.source.startswith("HANDGRAD_DATA_DIR:")
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    np.testing.assert_array_equal(
        np.bincount(ds.train_labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    norm = Normalizer.fit(ds.train_images)
    assert norm.mean == pytest.approx(0.1307, abs=1e-4) and norm.std == pytest.approx(0.3082, abs=1e-4)


@pytest.mark.data
def test_real_fashion_mnist():
    ds = _real("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert (np.bincount(ds.train_labels) == 6000).all() and (np.bincount(ds.test_labels) == 1000).all()
    assert ds.classes[:2] == ["T-shirt/top", "Trouser"] and len(ds.files) == 4


# -- splits -------------------------------------------------------------------------------------


def _imbalanced(seed=0):
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    np.random.default_rng(seed).shuffle(labels)
    return np.arange(len(labels)), labels  # images = sample ids, to track where each went


def test_train_val_split_is_stratified_and_partitions():
    images, labels = _imbalanced()
    x_train, y_train, x_val, y_val = train_val_split(images, labels, val_fraction=0.1, seed=3)
    np.testing.assert_array_equal(np.bincount(y_val), [10, 5, 3, 2])
    np.testing.assert_array_equal(np.sort(np.concatenate([x_train, x_val])), images)
    np.testing.assert_array_equal(labels[x_val], y_val)
    assert len(train_val_split(images, labels, val_size=33, seed=3)[3]) == 33


def test_train_val_split_is_seeded():
    images, labels = _imbalanced()
    first = train_val_split(images, labels, seed=5)[2]
    np.testing.assert_array_equal(train_val_split(images, labels, seed=5)[2], first)
    assert not np.array_equal(train_val_split(images, labels, seed=6)[2], first)


def test_stratified_subset_keeps_proportions_and_is_seeded():
    images, labels = _imbalanced()
    x, y = stratified_subset(images, labels, size=40, seed=0)
    np.testing.assert_array_equal(np.bincount(y), [20, 10, 6, 4])
    np.testing.assert_array_equal(labels[x], y)
    np.testing.assert_array_equal(stratified_subset(images, labels, size=40, seed=0)[0], x)
    assert not np.array_equal(stratified_subset(images, labels, size=40, seed=1)[0], x)
    assert len(stratified_subset(images, labels, size=7, seed=0)[1]) == 7


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, y: train_val_split(x, y, val_fraction=1.5), "0 < val_fraction < 1"),
        (lambda x, y: train_val_split(x, y, val_size=200), "between 1 and 199"),
        (lambda x, y: stratified_subset(x, y, size=0), "between 1 and 200"),
        (lambda x, y: stratified_subset(x, y[:-1], size=5), r"labels of shape \(N,\)"),
    ],
)
def test_split_arguments_checked(call, match):
    with pytest.raises(HandgradError, match=match):
        call(*_imbalanced())


# -- normalisation ------------------------------------------------------------------------------


def test_normalizer_uses_train_stats_only():
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 0.5, (50, 1, 4, 4)).astype(np.float32)
    test = rng.uniform(0.5, 1, (20, 1, 4, 4)).astype(np.float32)
    norm = Normalizer.fit(train)
    assert norm.mean == pytest.approx(float(train.astype(np.float64).mean()), rel=1e-6)
    assert norm.std == pytest.approx(float(train.astype(np.float64).std()), rel=1e-6)
    out = norm(test)
    assert out.dtype == np.float32 and out.mean() > 1  # the test set is not re-centred
    np.testing.assert_allclose(norm(train).mean(), 0, atol=1e-5)
    np.testing.assert_allclose(norm(train).std(), 1, rtol=1e-5)


def test_normalizer_dict_round_trip_through_json():
    norm = Normalizer(0.1307, 0.3081)
    restored = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert restored.to_dict() == norm.to_dict() and restored.mean == float(np.float32(0.1307))
    x = np.random.default_rng(0).uniform(size=(3, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(restored(x), norm(x))
    with pytest.raises(HandgradError, match="keys 'mean' and 'std'"):
        Normalizer.from_dict({"mean": 0.1})
    with pytest.raises(HandgradError, match="positive std"):
        Normalizer.fit(np.ones((2, 1, 2, 2), np.float32))


# -- DataLoader ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,batch_size,drop_last,sizes",
    [
        (10, 3, False, [3, 3, 3, 1]),
        (10, 3, True, [3, 3, 3]),
        (9, 3, True, [3, 3, 3]),
        (2, 5, False, [2]),
        (2, 5, True, []),
    ],
)
def test_loader_batches(n, batch_size, drop_last, sizes):
    loader = DataLoader(np.zeros((n, 1, 2, 2), np.float32), np.arange(n), batch_size, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(sizes) and [len(y) for _, y in batches] == sizes
    assert all(len(x) == len(y) for x, y in batches)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches] or [[]]), np.arange(sum(sizes)))


def _epoch(loader):
    return np.concatenate([y for _, y in loader])


def test_loader_shuffle_reproducible_per_seed_and_epoch():
    x, y = np.arange(50)[:, None].astype(np.float32), np.arange(50)
    a, b = DataLoader(x, y, 8, shuffle=True, seed=1), DataLoader(x, y, 8, shuffle=True, seed=1)
    epochs = [_epoch(a) for _ in range(3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), y)  # each sample exactly once
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], y)
    b.set_epoch(2)
    np.testing.assert_array_equal(_epoch(b), epochs[2])  # a resumed run replays epoch 2
    np.testing.assert_array_equal(_epoch(b), a.order(3))
    assert not np.array_equal(_epoch(DataLoader(x, y, 8, shuffle=True, seed=2)), epochs[0])
    for xb, yb in DataLoader(x, y, 8, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb[:, 0], yb)  # images and labels stay paired


def test_loader_seed_none_follows_manual_seed():
    x, y = np.zeros((20, 1), np.float32), np.arange(20)
    handgrad.manual_seed(7)
    first = _epoch(DataLoader(x, y, 4, shuffle=True))
    handgrad.manual_seed(7)
    np.testing.assert_array_equal(_epoch(DataLoader(x, y, 4, shuffle=True)), first)


def test_loader_arguments_checked():
    with pytest.raises(HandgradError, match=r"expected as many labels as images \(4\)"):
        DataLoader(np.zeros((4, 2)), np.zeros(3), 2)
    with pytest.raises(HandgradError, match="batch_size >= 1"):
        DataLoader(np.zeros((4, 2)), np.zeros(4), 0)


# -- IDX files that ask for more than they hold --------------------------------------------------
def _gzip_stream(header: bytes, zero_bytes: int) -> bytes:
    """A gzip file of ``header`` then ``zero_bytes`` zeros, compressed piece by piece (~1000:1)."""
    import zlib

    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, chunk = [z.compress(header)], bytes(1 << 20)
    for _ in range(zero_bytes >> 20):
        parts.append(z.compress(chunk))
    return b"".join(parts) + z.flush()


def _images_header(n, rows=28, cols=28) -> bytes:
    return bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in (n, rows, cols))


def test_gzip_bomb_is_refused_after_the_declared_size(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(_gzip_stream(_images_header(100), 256 << 20))  # declares 78 KB, holds 256 MiB
    tracemalloc.start()
    try:
        with pytest.raises(HandgradError) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(
        f"{path}: more than 16777216 trailing bytes: the header declares 100 x 28 x 28 uint8 = 78400 data bytes"
    )
    assert peak < 8 << 20


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_idx_declaring_more_than_the_limit_is_refused_before_reading(tmp_path, compress):
    from handgrad.data.idx import MAX_DATA_BYTES

    header = _images_header(2**31 - 1, 255, 255)
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(_gzip_stream(header, 0) if compress else header + bytes(100))
    with pytest.raises(
        HandgradError,
        match=rf"= {(2**31 - 1) * 255 * 255} data bytes, more than the limit of "
        rf"{MAX_DATA_BYTES} bytes",
    ):
        read_idx(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (b"\0" * 16, None),  # zero padding after the stream, as gzip(1) allows
        (gzip.compress(b"", mtime=0), None),  # an empty second member
        (b"garbage!", "trailing garbage after the gzip stream"),
        (gzip.compress(b"\1\2\3", mtime=0), "3 trailing bytes"),
    ],
)  # mtime=0: the same bytes, so the same test ids, in each pytest-xdist worker whenever it collects
def test_what_follows_a_gzip_stream(tmp_path, extra, message):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(_LABELS)) + extra)
    if message is None:
        np.testing.assert_array_equal(read_idx(path), _LABELS)
    else:
        with pytest.raises(HandgradError, match=message):
            read_idx(path)


def test_idx_split_over_gzip_members_is_read(tmp_path):
    data = idx_bytes(_IMAGES)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(data[:10]) + gzip.compress(data[10:50]) + gzip.compress(data[50:]))
    np.testing.assert_array_equal(read_idx(path), _IMAGES)


@pytest.mark.parametrize("shape", [(0, 4, 4), (5, 0, 4)], ids=["no-images", "no-rows"])
def test_images_file_of_no_images_is_refused(tmp_path, shape):
    write_idx(tmp_path / "i", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "l", np.zeros(shape[0], np.uint8))
    with pytest.raises(HandgradError, match=f"{tmp_path / 'i'}: holds no images"):
        load_idx_pair(tmp_path / "i", tmp_path / "l")


def test_a_pipe_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it to read would block until a writer came
    with pytest.raises(HandgradError, match="is not a regular file"):
        read_idx(tmp_path / "pipe")


def test_digits_are_scikit_learns_read_without_importing_it():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    ds = load_dataset("digits", download=False)
    images = np.concatenate([ds.train_images, ds.test_images])[:, 0]
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    test = _digits_test_mask(bunch.target)
    order = np.argsort(np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)]))  # back to the file's order
    np.testing.assert_array_equal(images[order], (bunch.images / 16).astype(np.float32))
    np.testing.assert_array_equal(labels[order], bunch.target)
    code = "import sys; from handgrad.data import load_digits; load_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # about a second of import saved in every CLI process


def _digits_test_mask(labels):
    """The last 20% of each class, as load_digits splits."""
    test = np.zeros(len(labels), dtype=bool)
    for k in range(10):
        members = np.flatnonzero(labels == k)
        test[members[len(members) - int(round(len(members) * DIGITS_TEST_FRACTION)) :]] = True
    return test


def test_digits_without_the_csv_take_scikit_learns_loader(monkeypatch):
    pytest.importorskip("sklearn")
    expected = load_dataset("digits", download=False)
    monkeypatch.setattr(Path, "is_file", lambda self: False)  # the CSV not at its usual place
    ds = load_dataset("digits", download=False)
    np.testing.assert_array_equal(ds.train_images, expected.train_images)
    np.testing.assert_array_equal(ds.test_labels, expected.test_labels)
    assert ds.files == {}


def test_digits_without_scikit_learn_say_what_to_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else find_spec(name, *a)
    )
    with pytest.raises(HandgradError, match="needs scikit-learn"):
        load_dataset("digits", download=False)
