"""Fuzzing the two file readers that take files from anywhere: checkpoints and IDX files.

Seeded mutations of small valid files (truncations, bit flips, oversized dimensions, random metadata
JSON, gzip streams longer than their header says) are read in one child process whose address
space is capped (RLIMIT_AS): each read must load correctly or raise a one-line HandgradError, never
another exception type, never an allocation past the cap, and the whole run must not hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")  # RLIMIT_AS: Linux and macOS

#: Address space the child may grow by past what it holds after its imports.
HEADROOM = 768 << 20

CHILD = r"""
import gzip, json, math, os, resource, sys, zlib
import numpy as np
import handgrad
from handgrad import models
from handgrad.data import read_idx, load_idx_pair, write_idx
from handgrad.errors import HandgradError

folder, seed, cases, headroom = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
outcomes = {"loaded": 0, "refused": 0}
failures = []


def vm_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))


def attempt(label, action):
    try:
        action()
        outcomes["loaded"] += 1
    except HandgradError as e:
        if "\n" in str(e) or not str(e):
            failures.append(f"{label}: a HandgradError that is not one line: {str(e)[:300]!r}")
        outcomes["refused"] += 1
    except BaseException as e:
        failures.append(f"{label}: {type(e).__name__}: {str(e)[:300]}")


# -- valid files to start from -----------------------------------------------------------------
handgrad.manual_seed(seed)
bases = []
for build in (lambda: models.build_model("tiny-cnn", (1, 8, 8), 10),
              lambda: handgrad.nn.Sequential(*models.parse_layer_spec("conv4-bn-pool-fc16-tanh-bn-dropout0.1",
                                                                       (1, 8, 8), 10)),
              lambda: models.build_model(hidden=[12], input_shape=(1, 8, 8), num_classes=10).double()):
    path = os.path.join(folder, "base.safetensors")
    handgrad.save(build(), path, input_shape=[1, 8, 8], classes=[str(i) for i in range(10)],
                  normalization={"mean": 0.3, "std": 0.4}, dataset="digits", model="m", loss="cross_entropy",
                  epoch=1)
    with open(path, "rb") as f:
        bases.append(f.read())

VALUES = [0, -1, 1, 2, 3, 7, 2**20, 2**20 + 1, 10**6, 10**9, 10**12, 2**63, 10**30, -10**9, 1.5, 0.0, -0.5,
          float("nan"), float("inf"), -float("inf"), "x", "", "ReLU", "Linear", "Conv2d", None, True, False, [],
          [1], [3, 3], [0, 0], [10**9, 10**9], [1, 2, 3], [1, 8, 8], [1, 100000, 100000], {}, {"a": 1}, [[1]],
          "float16", "int32", "float32", "float64", list("0123456789"), {"mean": 0, "std": 0}]
KEYS = ["type", "in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride", "padding",
        "bias", "p", "num_features", "eps", "momentum", "affine", "track_running_stats", "start_dim", "end_dim",
        "dim", "negative_slope", "bogus"]
TYPES = ["Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
         "ReLU", "Tanh", "Sigmoid", "LeakyReLU", "Softmax", "LogSoftmax", "Identity", "Sequential", "Module",
         "CrossEntropyLoss", "Parameter", "init", "relu", "nope"]


def pick(seq):
    return seq[int(rng.integers(len(seq)))]


def split(data):
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header, body, raw_header=None):
    text = (raw_header if raw_header is not None else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


def mutate_architecture(arch):
    op = int(rng.integers(7))
    if op == 6 or not isinstance(arch, list) or not arch:
        return pick(VALUES + [[{"type": pick(TYPES)}]])
    i = int(rng.integers(len(arch)))
    layer = arch[i]
    if op == 0 and isinstance(layer, dict):
        layer[pick(KEYS)] = pick(VALUES + TYPES)
    elif op == 1 and isinstance(layer, dict) and layer:
        del layer[pick(list(layer))]
    elif op == 2:
        del arch[i]
    elif op == 3:
        arch.insert(i, dict(arch[i]) if isinstance(arch[i], dict) else arch[i])
    elif op == 4:
        j = int(rng.integers(len(arch)))
        arch[i], arch[j] = arch[j], arch[i]
    else:
        arch.insert(i, {"type": pick(TYPES), **{pick(KEYS): pick(VALUES) for _ in range(int(rng.integers(3)))}})
    return arch


def fuzz_metadata(data):
    header, body = split(data)
    meta = header["__metadata__"]
    for _ in range(int(rng.integers(1, 4))):
        key = pick(list(meta) + ["input_shape", "classes", "architecture", "architecture"])
        op = int(rng.integers(5))
        if op == 0 and key in meta:
            del meta[key]
        elif op == 1 and key in meta:  # the JSON text itself damaged
            text = meta[key]
            meta[key] = text[:int(rng.integers(len(text) + 1))] + pick(["", "]", "}", "NaN", "[" * 5000, "1" * 5000])
        elif key == "architecture" and key in meta:
            try:
                arch = json.loads(meta[key])
            except ValueError:  # damaged by an earlier mutation
                arch = None
            meta[key] = json.dumps(mutate_architecture(arch))
        else:
            meta[key] = json.dumps(pick(VALUES))
    return join(header, body)


def fuzz_tensor_header(data):
    header, body = split(data)
    name = pick([k for k in header if k != "__metadata__"])
    op = int(rng.integers(4))
    if op == 0:
        header[name]["shape"] = [int(pick([1, 3, 30000, 10**6, 2**31, 2**40])) for _ in header[name]["shape"]]
    elif op == 1:
        header[name]["dtype"] = pick(["F16", "BF16", "I32", "I64", "U8", "BOOL", "F64", "F32", "Q4"])
    elif op == 2:
        header[name]["data_offsets"] = [int(pick([0, 8, 10**9])), int(pick([0, 16, 2**40]))]
    else:
        header[pick(["x", "0.weight", "99.bias"])] = dict(header[name])
    return join(header, body)


def flip_bits(data):
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    return bytes(data)


def nonfinite(data):
    header, body = split(data)
    body = bytearray(body)
    name = pick([k for k in header if k != "__metadata__" and header[k]["dtype"] in ("F32", "F64")])
    start, end = header[name]["data_offsets"]
    size = 4 if header[name]["dtype"] == "F32" else 8
    value = np.array([pick([np.nan, np.inf, -np.inf])], np.float32 if size == 4 else np.float64).tobytes()
    if end > start:
        body[start:start + size] = value
    return join(header, bytes(body))


def load_checkpoint(path):
    model = handgrad.load(path)
    shape = model.metadata.get("input_shape")
    if shape is not None:
        model.eval()
        with handgrad.no_grad():
            model(np.zeros((2, *shape), model.dtype))
        models.summary(model, shape)


resource.setrlimit(resource.RLIMIT_AS, (vm_size() + headroom, resource.RLIM_INFINITY))

path = os.path.join(folder, "case.safetensors")
mutations = {"truncate": lambda d: d[:int(rng.integers(len(d)))], "bit-flip": flip_bits,
             "metadata": fuzz_metadata, "tensor-header": fuzz_tensor_header, "non-finite": nonfinite}
for n in range(cases):
    kind = pick(list(mutations))
    data = mutations[kind](pick(bases))
    with open(path, "wb") as f:
        f.write(data)
    attempt(f"checkpoint case {n} ({kind})", lambda: load_checkpoint(path))

# -- IDX ---------------------------------------------------------------------------------------
images = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
labels = (np.arange(6) % 10).astype(np.uint8)
idx = {}
for name, array in (("images", images), ("labels", labels)):
    for compress in (False, True):
        p = os.path.join(folder, name + (".gz" if compress else ""))
        write_idx(p, array, compress=compress)
        with open(p, "rb") as f:
            idx[name, compress] = f.read()


def bomb(declared_items, real_bytes):
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in (declared_items, 28, 28))
    out = [z.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(real_bytes >> 20):
        out.append(z.compress(chunk))
    return b"".join(out) + z.flush()


def fuzz_dims(data):
    raw = bytearray(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    for i in range(raw[3]):
        if rng.integers(2):
            raw[4 + 4 * i: 8 + 4 * i] = int(pick([0, 1, 7, 2**16, 2**31 - 1, 2**32 - 1])).to_bytes(4, "big")
    if rng.integers(4) == 0:
        raw[3] = int(rng.integers(256))
    return gzip.compress(bytes(raw)) if data[:2] == b"\x1f\x8b" else bytes(raw)


idx_mutations = {"truncate": lambda d: d[:int(rng.integers(len(d)))], "bit-flip": flip_bits, "dims": fuzz_dims,
                 "trailing": lambda d: d + pick([b"\0" * 5, b"junk", gzip.compress(b"more")]),
                 "bomb": lambda d: bomb(int(pick([1, 6, 60000])), int(pick([8 << 20, 64 << 20])))}
bombs = 0
for n in range(cases):
    kind = pick(list(idx_mutations))
    if kind == "bomb":
        bombs += 1
        if bombs > 3:  # each costs a moment to build; three show the point
            kind = "bit-flip"
    which = pick(["images", "labels"])
    data = idx_mutations[kind](idx[which, bool(rng.integers(2))])
    paths = {k: os.path.join(folder, k) for k in ("images", "labels")}
    for k in paths:
        with open(paths[k], "wb") as f:
            f.write(data if k == which else idx[k, False])
    attempt(f"IDX case {n} ({kind} {which})", lambda: load_idx_pair(paths["images"], paths["labels"]))

print(json.dumps({"outcomes": outcomes, "failures": failures}))
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_checkpoints_and_idx_files_load_or_give_one_line_errors(tmp_path, seed):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(seed), "300", str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["failures"] == []
    # the mutations reach both outcomes: some files still load, most are refused
    assert report["outcomes"]["loaded"] > 0 and report["outcomes"]["refused"] > report["outcomes"]["loaded"]
