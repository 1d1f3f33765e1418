"""The C++ port (cpp/) on damaged and hostile checkpoints: `handgrad-cpp eval` must end with a
one-line error naming the file, or a valid result, and never with a signal, a traceback-like dump,
a huge allocation or a hang.

Needs ``cpp/build/handgrad-cpp`` (or the binary named by $HANDGRAD_CPP, e.g. a sanitizer build);
skips when it is missing. No data files are needed: a tiny MNIST-shaped dataset (8x8 images) is
written to a temporary folder. Every case runs under a 2 GiB address-space limit, so an allocation
that a small file should never cause fails as `bad_alloc` instead of slowing the machine.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.data.idx import write_idx
from handgrad.models import build_model
from handgrad.serialization import load_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[1]
CPP = Path(os.environ.get("HANDGRAD_CPP", ROOT / "cpp" / "build" / "handgrad-cpp"))
ADDRESS_SPACE = 2 << 30

pytestmark = pytest.mark.skipif(
    not CPP.is_file(),
    reason=f"the C++ port is not built ({CPP} is missing): run cmake -S cpp -B cpp/build && cmake --build cpp/build",
)

SHAPE, CLASSES, TEST_IMAGES = (1, 8, 8), [str(k) for k in range(10)], 30


def limit_memory():
    if ADDRESS_SPACE and "HANDGRAD_CPP" not in os.environ:  # sanitizers reserve far more address space
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_eval(checkpoint, data_dir, *extra):
    return subprocess.run(
        [str(CPP), "eval", str(checkpoint), "--data-dir", str(data_dir), "--json", *extra],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        preexec_fn=limit_memory,
    )


def assert_clean(result, checkpoint):
    """Exit 0 with valid, finite JSON, or exit 1 with one line naming the checkpoint."""
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-2000:]}"
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 0:
        report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))
        assert report["samples"] == TEST_IMAGES and 0.0 <= report["accuracy"] <= 1.0
        assert len(report["classes"]) == len(report["confusion_matrix"]) == 10
        return report
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handgrad-cpp: error: "), result.stderr
    assert "bad_alloc" not in lines[0] and "std::" not in lines[0], lines[0]
    assert str(checkpoint) in lines[0], f"the error does not name the file: {lines[0]}"
    return None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """mnist/ with 8x8 images: 20 training and 30 test images, labels 0-9."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("data") / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 20), ("t10k", TEST_IMAGES)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return folder.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """tiny-mlp for 8x8 inputs, saved from Python with every metadata field and reference inputs."""
    handgrad.manual_seed(0)
    model = build_model("tiny-mlp", SHAPE, 10)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    inputs = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    handgrad.save(
        model,
        path,
        reference_inputs=inputs,
        input_shape=list(SHAPE),
        normalization={"mean": 0.5, "std": 0.25},
        classes=CLASSES,
        dataset="mnist",
        model="tiny-mlp",
        loss="cross_entropy",
        epoch=1,
    )
    return path


def rewrite(source, target, drop=(), **metadata):
    tensors, raw = load_tensors(source)
    raw = {k: v for k, v in raw.items() if k not in drop}
    raw.update({k: json.dumps(v) for k, v in metadata.items()})
    save_tensors(target, tensors, raw)
    return target


def test_intact_checkpoint_evaluates(checkpoint, data_dir):
    assert assert_clean(run_eval(checkpoint, data_dir), checkpoint) is not None


@pytest.mark.parametrize(
    "field", ["classes", "normalization", "input_shape", "dataset", "model", "loss", "dtype", "reference", "epoch"]
)
def test_an_absent_optional_field_still_gives_the_result(checkpoint, data_dir, tmp_path, field):
    """A checkpoint saved without `classes` used to crash eval (exit 139): its outputs are named 0-9."""
    full = assert_clean(run_eval(checkpoint, data_dir), checkpoint)
    path = rewrite(checkpoint, tmp_path / "partial.safetensors", drop=(field,))
    report = assert_clean(run_eval(path, data_dir), path)
    assert report is not None, "eval refused a checkpoint whose missing field has a default"
    assert report["classes"] == CLASSES
    if field != "normalization":
        assert report["accuracy"] == full["accuracy"]
        assert report["confusion_matrix"] == full["confusion_matrix"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("classes", ["a", "b"], "metadata 'classes' names 2 classes, the model has 10 outputs"),
        ("classes", [str(k) for k in range(12)], "metadata 'classes' names 12 classes, the model has 10 outputs"),
        ("classes", {"0": "zero"}, "metadata 'classes' must be a list of class names"),
        ("input_shape", [1, 28, 28], "do not fit the checkpoint's input shape (1, 28, 28)"),
        ("input_shape", [1, 8], "metadata 'input_shape' must be [channels, height, width]"),
        ("normalization", {"mean": 0.5, "std": -1}, "metadata 'normalization' must be"),
        ("dataset", ["mnist"], "metadata 'dataset' must be a string"),
        ("dtype", "float16", "metadata 'dtype' must be"),
        ("loss", 3, "metadata 'loss' must be"),
        (
            "architecture",
            [{"type": "Flatten"}, {"type": "Linear", "in_features": 64}],
            "entry 1 (Linear): 'out_features' must be an integer >= 0, got nothing",
        ),
        (
            "architecture",
            [{"type": "Linear", "in_features": 10**6, "out_features": 10**6}],
            "tensors do not match the stored architecture: missing keys 0.weight, 0.bias",
        ),
        ("format", "something-else", "not a handgrad checkpoint"),
    ],
)
def test_a_malformed_field_is_named(checkpoint, data_dir, tmp_path, field, value, message):
    path = rewrite(checkpoint, tmp_path / "bad.safetensors", **{field: value})
    result = run_eval(path, data_dir, "--no-reference-check")
    assert_clean(result, path)
    assert result.returncode == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(checkpoint, data_dir, tmp_path, value):
    tensors, raw = load_tensors(checkpoint)
    tensors["1.weight"] = tensors["1.weight"].copy()
    tensors["1.weight"][3, 7] = value
    path = tmp_path / "broken.safetensors"
    save_tensors(path, tensors, raw)
    result = run_eval(path, data_dir)
    assert_clean(result, path)
    assert result.returncode == 1
    assert "tensor '1.weight' holds 1 non-finite value" in result.stderr


def mutations(data: bytes, header_end: int, rng: np.random.Generator):
    """(name, damaged bytes): truncations, bit flips anywhere and in the header, and header edits."""
    for k in range(12):
        cut = int(rng.integers(0, len(data)))
        yield f"truncate-{k}@{cut}", data[:cut]
    for k in range(24):
        flipped = bytearray(data)
        where = rng.integers(0, header_end if k % 2 else len(data), size=int(rng.integers(1, 9)))
        for i in where:
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        yield f"bitflip-{k}", bytes(flipped)
    # a header length far beyond the file, and one that cuts the JSON
    yield "header-length-huge", struct.pack("<Q", 1 << 60) + data[8:]
    yield "header-length-short", struct.pack("<Q", header_end - 20) + data[8:]


def header_edits(header: dict, rng: np.random.Generator):
    """(name, header) with one tensor entry or metadata value replaced by something random."""
    odd_values = [
        None,
        True,
        -1,
        0,
        2**63,
        2**64 + 5,
        1e308,
        -0.5,
        "x",
        "F16",
        [],
        [[1, 2]],
        [-1, 4],
        [2**40, 2**40],
        [1, 2, 3],
        {},
        {"a": 1},
        "[]",
        '{"type": 1}',
        "null",
        "NaN",
        "[[[[[]]]]]",
    ]
    tensor_names = [k for k in header if k != "__metadata__"]
    meta_names = sorted(header["__metadata__"])
    for k in range(40):
        edited = json.loads(json.dumps(header))
        value = odd_values[int(rng.integers(0, len(odd_values)))]
        if k % 2:
            name, key = tensor_names[int(rng.integers(0, len(tensor_names)))], ["dtype", "shape", "data_offsets"][k % 3]
            edited[name][key] = value
            yield f"tensor-{name}-{key}={value!r}", edited
        else:
            name = meta_names[int(rng.integers(0, len(meta_names)))]
            edited["__metadata__"][name] = value if isinstance(value, str) else json.dumps(value)
            yield f"metadata-{name}={value!r}", edited


def with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def test_fuzzed_checkpoints_never_crash(checkpoint, data_dir, tmp_path):
    rng = np.random.default_rng(13)
    data = Path(checkpoint).read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:header_end]), data[header_end:]
    cases = list(mutations(data, header_end, rng))
    cases += [(name, with_header(edited, body)) for name, edited in header_edits(header, rng)]
    # a deeply nested metadata value and an architecture entry of every supported type with odd values
    cases.append(
        (
            "deep-nesting",
            with_header(
                {**header, "__metadata__": {**header["__metadata__"], "classes": "[" * 100000 + "]" * 100000}}, body
            ),
        )
    )
    for layer_type in ("Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "LeakyReLU"):
        odd = {
            "type": layer_type,
            "kernel_size": [0, 2**31],
            "stride": -1,
            "padding": 2**40,
            "start_dim": -(2**40),
            "p": "half",
            "negative_slope": None,
            "in_channels": 1,
            "out_channels": 2**40,
        }
        arch = json.loads(header["__metadata__"]["architecture"])
        edited = {**header, "__metadata__": {**header["__metadata__"], "architecture": json.dumps([odd] + arch)}}
        cases.append((f"architecture-{layer_type}", with_header(edited, body)))
    outcomes = {0: 0, 1: 0}
    for name, damaged in cases:
        path = tmp_path / "fuzzed.safetensors"
        path.write_bytes(damaged)
        result = run_eval(path, data_dir)
        try:
            assert_clean(result, path)
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from None
        outcomes[result.returncode] += 1
    assert outcomes[1] > len(cases) // 2  # most damage is detected, not evaluated


# -- the loaders fuzzed in one process: checkpoints, IDX files and images ----------------------------

#: Cases per kind of file (checkpoint, IDX, image) in each build; HANDGRAD_FUZZ_CASES asks for more.
FUZZ_CASES = int(os.environ.get("HANDGRAD_FUZZ_CASES", "150"))
BUILDS = {"release": CPP.parent, "sanitize": ROOT / "cpp" / "build-sanitize"}
#: The most one allocation may take under the sanitizers: a small damaged file needs far less.
SANITIZER_MAX_ALLOCATION_MB = 256


def png_chunks(data: bytes):
    """[(offset, type)] of the chunks of an intact PNG."""
    chunks, at = [], 8
    while at + 12 <= len(data):
        length = struct.unpack(">I", data[at : at + 4])[0]
        chunks.append((at, data[at + 4 : at + 8]))
        at += 12 + length
    return chunks


def fix_crc(data: bytearray, at: int) -> None:
    """Recompute the CRC of the PNG chunk at `at`, so that a damaged chunk reaches the decoder."""
    length = struct.unpack(">I", data[at : at + 4])[0]
    data[at + 8 + length : at + 12 + length] = struct.pack(">I", zlib.crc32(bytes(data[at + 4 : at + 8 + length])))


def damage_image(data: bytes, fmt: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random damage: a cut, bit flips, huge declared sizes, or (PNG) flips inside a chunk
    whose CRC is then made right again."""
    out = bytearray(data)
    op = int(rng.integers(4))
    if op == 0:
        return "truncate", data[: int(rng.integers(len(data)))]
    if op == 1 or fmt == "pgm" and op == 3:
        for i in rng.integers(0, len(out), int(rng.integers(1, 9))):
            out[i] ^= 1 << int(rng.integers(8))
        return "bit-flip", bytes(out)
    huge = [0, 1, 2**15, 2**16 - 1, 2**24, 2**31 - 1, 2**32 - 1]
    if fmt == "png":
        chunks = png_chunks(data)
        at, kind = chunks[int(rng.integers(len(chunks)))] if op == 3 else chunks[0]
        length = struct.unpack(">I", data[at : at + 4])[0]
        if op == 2:  # IHDR: width, height, bit depth, colour type
            field = int(rng.integers(4))
            if field < 2:
                out[at + 8 + 4 * field : at + 12 + 4 * field] = struct.pack(">I", int(rng.choice(huge)))
            else:
                out[at + 16 + field - 2] = int(rng.integers(256))
        elif length:
            for i in rng.integers(at + 8, at + 8 + length, int(rng.integers(1, 5))):
                out[i] ^= 1 << int(rng.integers(8))
        fix_crc(out, at)
        return f"png-{kind.decode(errors='replace')}", bytes(out)
    if fmt == "jpg":  # the frame header's height and width, or a segment's length
        sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
        if op == 2:
            out[sof + 5 : sof + 9] = struct.pack(">HH", int(rng.integers(2**16)), int(rng.integers(2**16)))
        else:
            out[sof + 2 : sof + 4] = struct.pack(">H", int(rng.choice([0, 1, 2, 5, 2**16 - 1])))
        return "jpeg-frame", bytes(out)
    text = data.split(b"\n", 3)  # pgm: P5/P2, a comment or the size, ...
    numbers = [str(int(rng.choice(huge + [65536, 10**12]))).encode() for _ in range(3)]
    return "pgm-header", b"\n".join([text[0], b" ".join(numbers[:2]), numbers[2], text[-1]])


def damage_idx(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    compressed = data[:2] == b"\x1f\x8b"
    raw = bytearray(gzip.decompress(data) if compressed else data)
    op = int(rng.integers(4))
    if op == 0:
        return "truncate", data[: int(rng.integers(len(data)))]
    if op == 1:
        out = bytearray(data)
        for i in rng.integers(0, len(out), int(rng.integers(1, 9))):
            out[i] ^= 1 << int(rng.integers(8))
        return "bit-flip", bytes(out)
    if op == 2:  # huge or zero dimensions, or another number of them
        for i in range(raw[3]):
            if rng.integers(2):
                raw[4 + 4 * i : 8 + 4 * i] = struct.pack(">I", int(rng.choice([0, 1, 7, 2**16, 2**31 - 1, 2**32 - 1])))
        if rng.integers(4) == 0:
            raw[3] = int(rng.integers(256))
        kind = "dims"
    else:  # more data than the header declares: a little, or a stream of zeros 64x the file
        raw += bytes(int(rng.choice([1, 5, 64 * len(raw)])))
        kind = "trailing"
    return kind, gzip.compress(bytes(raw)) if compressed else bytes(raw)


@pytest.fixture(scope="module")
def fuzz_bases(checkpoint, tmp_path_factory):
    """Intact files of every kind the C++ reads: {kind: [(name, bytes)]}."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bases")
    rng = np.random.default_rng(5)
    handgrad.manual_seed(1)
    cnn = folder / "cnn.safetensors"
    inputs = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    handgrad.save(build_model("tiny-cnn", SHAPE, 10), cnn, reference_inputs=inputs, input_shape=list(SHAPE))
    idx = []
    for name, array in (
        ("images", rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)),
        ("labels", (np.arange(6) % 10).astype(np.uint8)),
        ("floats", rng.standard_normal((3, 4)).astype(np.float32)),
    ):
        for compress in (False, True):
            path = folder / f"{name}{'.gz' if compress else ''}"
            write_idx(path, array, compress=compress)
            idx.append((path.name, path.read_bytes()))
    grey = Image.fromarray(rng.integers(0, 256, (19, 23), dtype=np.uint8), "L")
    exif = Image.Exif()
    exif[0x0112] = 6
    images = {
        "grey.png": dict(img=grey, exif=exif.tobytes()),
        "rgba.png": dict(img=grey.convert("RGBA"), optimize=True),
        "grey16.png": dict(img=Image.fromarray(rng.integers(0, 65536, (9, 7)).astype(np.uint16))),
        "palette.png": dict(img=grey.convert("RGB").quantize(8), transparency=0),
        "interlaced.png": dict(img=grey.convert("RGB"), interlace=1),
        "grey.jpg": dict(img=grey, quality=80, exif=exif.tobytes()),
        "rgb.jpg": dict(img=grey.convert("RGB"), quality=70, subsampling=2),
        "progressive.jpg": dict(img=grey.convert("RGB"), quality=75, progressive=True),
        "grey.pgm": dict(img=grey),
    }
    pictures = []
    for name, options in images.items():
        options.pop("img").save(folder / name, **options)
        pictures.append((name, (folder / name).read_bytes()))
    pictures.append(("plain.pgm", b"P2\n# ascii\n3 2\n15\n0 5 10\n15 3 1\n"))
    pictures.append(("wide.pgm", b"P5 2 2 1000\n" + struct.pack(">4H", 0, 999, 1000, 5)))
    checkpoints = [(Path(checkpoint).name, Path(checkpoint).read_bytes()), (cnn.name, cnn.read_bytes())]
    return {"checkpoint": checkpoints, "idx": idx, "image": pictures + idx[:2]}


def fuzz_cases(kind: str, bases, rng: np.random.Generator, count: int):
    """(name, bytes) for `count` damaged files of one kind."""
    for n in range(count):
        name, data = bases[int(rng.integers(len(bases)))]
        suffix = name.rsplit(".", 1)[-1]
        if kind == "checkpoint":
            header_end = 8 + struct.unpack("<Q", data[:8])[0]
            if n % 3 == 2:  # a header entry or metadata value replaced by something odd
                header = json.loads(data[8:header_end])
                edits = list(header_edits(header, rng))
                label, edited = edits[int(rng.integers(len(edits)))]
                yield f"{n}-{label}", with_header(edited, data[header_end:])
            else:
                damages = list(mutations(data, header_end, rng))
                label, damaged = damages[int(rng.integers(len(damages)))]
                yield f"{n}-{label}", damaged
        elif suffix in ("png", "jpg", "pgm"):
            label, damaged = damage_image(data, suffix, rng)
            yield f"{n}-{label}.{suffix}", damaged
        else:
            label, damaged = damage_idx(data, rng)
            yield f"{n}-{label}-{name}", damaged


@pytest.mark.parametrize("build", ["release", "sanitize"])
@pytest.mark.parametrize("kind", ["checkpoint", "idx", "image"])
def test_fuzzed_files_load_or_give_one_line_errors(fuzz_bases, tmp_path, build, kind):
    """Damaged checkpoints, IDX files (raw and gzip) and images (PNG, JPEG, PGM) read by the C++
    loaders: each loads, or is refused with one line naming the file; never a crash, a sanitizer
    finding, a hang or a huge allocation (capped: 1 GiB of address space, or under the sanitizers
    SANITIZER_MAX_ALLOCATION_MB for any single allocation)."""
    harness = BUILDS[build] / "fuzz_loaders"
    if not harness.is_file():
        pytest.skip(f"{harness} is not built (`make test` builds both cpp/build and cpp/build-sanitize)")
    rng = np.random.default_rng({"checkpoint": 1, "idx": 2, "image": 3}[kind])
    paths = []
    for name, data in fuzz_cases(kind, fuzz_bases[kind], rng, FUZZ_CASES):
        paths.append(tmp_path / name.replace("/", "_"))
        paths[-1].write_bytes(data)
    env = dict(os.environ, HANDGRAD_NUM_THREADS="2")
    env["ASAN_OPTIONS"] = f"max_allocation_size_mb={SANITIZER_MAX_ALLOCATION_MB}:allocator_may_return_null=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"

    def cap_memory():
        if build == "release":  # the sanitizers reserve terabytes of address space for their shadow memory
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    try:
        result = subprocess.run(
            [str(harness), kind, *map(str, paths)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=300,
            preexec_fn=cap_memory,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        last = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        pytest.fail(f"the loaders hung (over 300 s); the last file read: {last}")
    started = [line for line in result.stderr.splitlines() if line.startswith("reading ")]
    assert result.returncode == 0, f"exit {result.returncode} on {started[-1:]}:\n{result.stderr[-4000:]}"
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["file"] for o in outcomes] == list(map(str, paths))
    for o in outcomes:
        assert o["outcome"] != "failed", f"{o['file']}: {o['message']}"
        if o["outcome"] == "refused":
            assert "\n" not in o["message"] and o["message"].startswith(f"{o['file']}: "), o
    refused = sum(o["outcome"] == "refused" for o in outcomes)
    assert refused > len(outcomes) // 3  # the damage is mostly detected, not loaded
