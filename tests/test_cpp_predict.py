"""The C++ port's `predict` against Python's on PNG, JPEG and PGM files: the same pixels into the
model and the same predictions.

The pixels are read back through the C++ binary itself: a checkpoint whose model is the identity
(Flatten, then Linear with the identity matrix) saved with loss "mse", so that `predict --json`
reports each input pixel as the score of class "i". PNG and PGM must match Python's load_image
exactly (the C++ reproduces Pillow's luminance, compositing and fixed-point Lanczos resampling);
JPEG decodes through stb_image, whose IDCT and chroma upsampling are not libjpeg's, so its pixels
may differ by a level of 255 (MAX_JPEG_DIFFERENCE) and its predictions must agree.

Needs ``cpp/build/handgrad-cpp``; the prediction test also needs MNIST under $HANDGRAD_DATA_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import nn, optim
from handgrad.app.cli import load_image, main

Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[1]
CPP = Path(os.environ.get("HANDGRAD_CPP", ROOT / "cpp" / "build" / "handgrad-cpp"))
SHAPE = (1, 28, 28)
#: The largest difference allowed between a JPEG's input pixels in C++ and in Python (values in
#: [0, 1]); measured: 1 level of 255 at most, 0.01 to 0.04 levels on average, over the JPEG cases below.
MAX_JPEG_DIFFERENCE = 2 / 255

pytestmark = pytest.mark.skipif(
    not CPP.is_file(),
    reason=f"the C++ port is not built ({CPP} is missing): run cmake -S cpp -B cpp/build && cmake --build cpp/build",
)


def run_cpp(*args):
    return subprocess.run([str(CPP), *map(str, args)], capture_output=True, text=True, timeout=120)


def digit(rng, size=(40, 52)):
    """A dark stroke figure on a light, slightly noisy background (width, height): an "L" uint8 image."""
    from PIL import ImageDraw

    img = Image.new("L", size, int(rng.integers(215, 250)))
    draw = ImageDraw.Draw(img)
    w, h = size
    points = [(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.15, 0.85) * h)) for _ in range(5)]
    draw.line(points, fill=int(rng.integers(0, 40)), width=max(2, w // 8))
    noise = rng.integers(-12, 13, (h, w))
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8), "L")


def colour(img, rng):
    """The figure in colour: each channel a different affine map of the grey values."""
    grey = np.asarray(img, np.float64)
    channels = [np.clip(grey * rng.uniform(0.7, 1.0) + rng.uniform(0, 30), 0, 255) for _ in range(3)]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")


def transparent(img, ink):
    """The figure's strokes as ink of colour `ink` on a transparent background whose hidden colour
    is the opposite of the ink's (what a reader that ignores alpha would show)."""
    alpha = 255 - np.asarray(img)
    rgb = np.where(alpha[..., None] > 128, np.array(ink, np.uint8), np.array([255 - v for v in ink], np.uint8))
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA")


def exif_bytes(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def write_pgm(path, values, maxval, plain):
    h, w = values.shape
    if plain:
        path.write_text(
            f"P2\n# a comment\n{w} {h}\n{maxval}\n" + "\n".join(" ".join(map(str, r)) for r in values) + "\n"
        )
    else:
        data = values.astype(">u2" if maxval > 255 else np.uint8).tobytes()
        path.write_bytes(f"P5\n{w} {h}\n{maxval}\n".encode() + data)


def make(case, folder, rng):
    """Write the image of `case` into folder; returns its path."""
    img = digit(rng, (23, 19) if "small" in case else (300, 210) if "large" in case else (40, 52))
    if "upright" in case:  # the pixels stored turned, with the orientation that turns them back
        orientation = int(case.rsplit("-", 1)[1])
        undo = {2: [0], 3: [3], 4: [1], 5: [4], 6: [2], 7: [5], 8: [2, 3]}.get(orientation, [])
        for k in undo:  # the inverse of exif_transpose's method for this orientation
            img = img.transpose(
                [
                    Image.Transpose.FLIP_LEFT_RIGHT,
                    Image.Transpose.FLIP_TOP_BOTTOM,
                    Image.Transpose.ROTATE_90,
                    Image.Transpose.ROTATE_180,
                    Image.Transpose.TRANSPOSE,
                    Image.Transpose.TRANSVERSE,
                ][k]
            )
    kind, _, options = case.partition(":")
    exif = {"exif": exif_bytes(int(options.rsplit("-", 1)[1]))} if "upright" in options else {}
    path = folder / f"{case.replace(':', '-')}.{kind.split('-')[0]}"
    if kind == "png-grey":
        img.save(path, **exif)
    elif kind == "png-rgb":
        colour(img, rng).save(path)
    elif kind == "png-rgba":
        transparent(img, (20, 30, 10) if "dark" in options else (240, 250, 230)).save(path)
    elif kind == "png-la":
        transparent(img, (30, 30, 30)).convert("LA").save(path)
    elif kind == "png-palette":
        colour(img, rng).quantize(16).save(path, transparency=0)
    elif kind == "png-grey16":
        values = np.asarray(img, np.uint16) * (257 if "full" in options else 1)
        Image.fromarray(values.astype(np.uint16)).save(path)
    elif kind == "jpg-grey":
        img.save(path, quality=92, **exif)
    elif kind == "jpg-rgb":
        colour(img, rng).save(path, quality=90, **exif)
    elif kind == "pgm":
        maxval = int(options.split("-")[0])
        values = np.rint(np.asarray(img, np.float64) / 255 * maxval).astype(np.int64)
        write_pgm(path, values, maxval, plain="plain" in options)
    return path


EXACT_CASES = [
    "png-grey",
    "png-grey:small",
    "png-grey:large",
    "png-grey:upright-3",
    "png-grey:upright-6",
    "png-grey:upright-8",
    "png-rgb",
    "png-rgb:large",
    "png-rgba:dark",
    "png-rgba:light",
    "png-rgba:dark-large",
    "png-la",
    "png-palette",
    "png-grey16",
    "png-grey16:full",
    "pgm:255",
    "pgm:15-plain",
    "pgm:1000",
    "pgm:65535",
]
JPEG_CASES = ["jpg-grey", "jpg-grey:large", "jpg-rgb", "jpg-rgb:small"] + [
    f"jpg-{kind}:upright-{k}" for kind, k in [("grey", 2), ("grey", 5), ("rgb", 6), ("grey", 7), ("rgb", 8), ("rgb", 4)]
]


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory):
    """predict's scores are the input pixels: Flatten, Linear(784, 784) = I, loss "mse"."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 784))
    model[1].weight.data[...] = np.eye(784, dtype=np.float32)
    model[1].bias.data[...] = 0
    path = tmp_path_factory.mktemp("identity") / "identity.safetensors"
    handgrad.save(model, path, input_shape=list(SHAPE), loss="mse")
    return path


def cpp_pixels(checkpoint, paths):
    result = run_cpp("predict", checkpoint, *paths, "--json", "--top-k", 784)
    assert result.returncode == 0, result.stderr
    pixels = np.zeros((len(paths), 784), np.float32)
    for row, entry in zip(pixels, json.loads(result.stdout)):
        for top in entry["top"]:
            row[int(top["class"])] = top["probability"]
    return pixels


@pytest.mark.parametrize("case", EXACT_CASES)
def test_png_and_pgm_pixels_equal_pythons(identity_checkpoint, tmp_path, case):
    path = make(case, tmp_path, np.random.default_rng(len(case)))
    expected = load_image(path, SHAPE).ravel()
    got = cpp_pixels(identity_checkpoint, [path])[0]
    assert np.array_equal(got, expected), (
        f"{case}: max difference {np.abs(got - expected).max()} at {np.abs(got - expected).argmax()}"
    )


@pytest.mark.parametrize("case", JPEG_CASES)
def test_jpeg_pixels_are_near_pythons(identity_checkpoint, tmp_path, case):
    path = make(case, tmp_path, np.random.default_rng(len(case)))
    expected = load_image(path, SHAPE).ravel()
    got = cpp_pixels(identity_checkpoint, [path])[0]
    assert np.abs(got - expected).max() <= MAX_JPEG_DIFFERENCE, f"{case}: max difference {np.abs(got - expected).max()}"
    # nearly everywhere equal: a figure turned the wrong way would differ along all its strokes
    assert np.abs(got - expected).mean() < 1 / 255


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("truncated.png", "png-cut", "corrupt or truncated PNG"),
        ("flipped.png", "png-flip", "fails its CRC check"),
        ("truncated.jpg", "jpg-cut", "corrupt or truncated JPEG"),
        ("huffman.jpg", "jpg-huffman", "codes; expected at most 256"),
        ("text.png", b"hello, world", "not an image: expected a PNG, JPEG, PGM (P2 or P5) or IDX file"),
        ("empty.png", b"", "not an image"),
        ("huge.pgm", b"P5 100000 100000 255\n\0", "expected 1 to 67108864"),
    ],
)
def test_a_corrupt_image_is_one_line_naming_the_file(identity_checkpoint, tmp_path, capsys, name, data, message):
    if isinstance(data, str):
        kind, damage = data.split("-")
        source = make("png-grey" if kind == "png" else "jpg-grey", tmp_path, np.random.default_rng(0)).read_bytes()
        if damage == "cut":
            data = source[: len(source) * 2 // 3]
        elif damage == "huffman":  # two counts of 255 codes: stb_image alone would write past its arrays
            data = bytearray(source)
            table = source.index(b"\xff\xc4") + 5
            data[table : table + 2] = b"\xff\xff"
            data = bytes(data)
        else:
            data = bytearray(source)
            data[len(data) // 2] ^= 0x10
            data = bytes(data)
    path = tmp_path / name
    path.write_bytes(data)
    result = run_cpp("predict", identity_checkpoint, path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"handgrad-cpp: error: {path}: "), result.stderr
    assert message in lines[0], lines[0]
    assert main(["predict", str(identity_checkpoint), str(path)]) == 1  # Python refuses it too
    assert str(path) in capsys.readouterr().err


@pytest.fixture(scope="module")
def digit_classifier(tmp_path_factory):
    """mlp-small trained briefly on 6,000 MNIST images: confident enough for predictions to mean something."""
    data = os.environ.get("HANDGRAD_DATA_DIR")
    if not data or not os.path.isdir(os.path.join(data, "mnist")):
        pytest.skip("MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/")
    from handgrad.data import Normalizer, load_dataset
    from handgrad.models import build_model

    mnist = load_dataset("mnist", download=False, progress=False)
    x, y = mnist.train_images[:6000], mnist.train_labels[:6000]
    norm = Normalizer.fit(x)
    handgrad.manual_seed(0)
    model = build_model("mlp-small")
    opt, loss = optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss()
    for start in range(0, len(x), 50):
        loss(model(norm(x[start : start + 50])), y[start : start + 50])
        opt.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    path = tmp_path_factory.mktemp("classifier") / "mlp.safetensors"
    handgrad.save(model, path, input_shape=list(SHAPE), normalization=norm.to_dict(), loss="cross_entropy")
    return path, mnist.test_images[:12, 0]


def test_the_same_images_get_the_same_predictions(digit_classifier, tmp_path, capsys):
    checkpoint, digits = digit_classifier
    paths = []
    for k, d in enumerate(digits):  # dark on light, enlarged, in each format and several orientations
        img = Image.fromarray((255 - d * 255).astype(np.uint8), "L").resize((56, 56), Image.Resampling.BICUBIC)
        orientation = 1 + k % 8
        turned = img.transpose(Image.Transpose.ROTATE_90) if orientation == 8 else img
        path = tmp_path / f"digit{k}.{'jpg' if k % 3 == 0 else 'png'}"
        rgb = Image.merge("RGB", [turned, turned, turned]) if k % 2 else turned
        rgb.save(path, exif=exif_bytes(orientation if orientation == 8 else 1))
        paths.append(str(path))
    assert main(["predict", str(checkpoint), *paths, "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    result = run_cpp("predict", checkpoint, *paths, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert [r["class"] for r in got] == [r["class"] for r in expected]
    for g, e in zip(got, expected):
        assert g["top"][0]["probability"] == pytest.approx(e["top"][0]["probability"], abs=0.02)


@pytest.mark.parametrize("kind, message", [("folder", "is a folder"), ("pipe", "is not a regular file")])
def test_a_folder_or_a_pipe_is_refused_unread(identity_checkpoint, tmp_path, kind, message):
    """A pipe would be read until its writer stops (never, here): the C++ reads regular files only."""
    path = tmp_path / kind
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    result = run_cpp("predict", identity_checkpoint, path)
    assert (
        result.returncode == 1
        and result.stderr.strip() == f"handgrad-cpp: error: {path}: {message}, expected an image file"
    )
