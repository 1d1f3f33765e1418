"""Bad input to the command line: every argument checked up front, checkpoints with non-finite
weights refused, strict JSON, images as people have them (transparency, EXIF orientation, 16-bit,
decompression bombs), and a closed pipe."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from handgrad.app.cli import MAX_IMAGE_PIXELS, load_image, main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-inputs") / "run"
    assert (
        main(["train", "--dataset", "digits", "--model", "tiny-mlp", "--epochs", "1", "--quiet", "--out", str(out)])
        == 0
    )
    return out / "best.safetensors"


def one_line_error(capsys, fragment, out=None) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert out is None or captured.out == out
    assert err.startswith("handgrad: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err
    return err


# -- arguments --------------------------------------------------------------------------------
# (argv, the option argparse names, fragment of what it expected)
BAD_ARGUMENTS = [
    (["train", "--hidden", "0"], "--hidden", "expected comma-separated sizes from 1 to 1048576, got '0'"),
    (["train", "--hidden", "16,-2"], "--hidden", "sizes from 1"),
    (["train", "--hidden", ","], "--hidden", "sizes from 1"),
    (["train", "--activation", "swoosh"], "--activation", "unknown activation 'swoosh'; known:"),
    (["train", "--epochs", "0"], "--epochs", "expected an integer >= 1, got 0"),
    (["train", "--epochs", "two"], "--epochs", "expected an integer >= 1, got 'two'"),
    (["train", "--batch-size", "0"], "--batch-size", "expected an integer >= 1, got 0"),
    (["train", "--lr", "nan"], "--lr", "expected a finite number > 0, got 'nan'"),
    (["train", "--lr", "inf"], "--lr", "expected a finite number > 0, got 'inf'"),
    (["train", "--lr", "-0.1"], "--lr", "expected a finite number > 0"),
    (["train", "--lr", "0"], "--lr", "expected a finite number > 0"),
    (["train", "--momentum", "nan"], "--momentum", "expected a finite number >= 0 and < 1, got 'nan'"),
    (["train", "--momentum", "1"], "--momentum", ">= 0 and < 1"),
    (["train", "--weight-decay=-1e-4"], "--weight-decay", "expected a finite number >= 0"),
    (["train", "--weight-decay", "inf"], "--weight-decay", "finite"),
    (["train", "--seed", "-1"], "--seed", "expected an integer from 0 to"),
    (["train", "--train-size", "0"], "--train-size", "expected an integer >= 1"),
    (["train", "--val-fraction", "0"], "--val-fraction", "expected a finite number > 0 and < 1"),
    (["train", "--val-fraction", "1"], "--val-fraction", "> 0 and < 1"),
    (["train", "--val-fraction", "nan"], "--val-fraction", "> 0 and < 1"),
    (["eval", "x.safetensors", "--top-k", "-3"], "--top-k", "expected an integer >= 1, got -3"),
    (["eval", "x.safetensors", "--top-k", "0"], "--top-k", "expected an integer >= 1, got 0"),
    (["predict", "x.safetensors", "a.png", "--top-k", "0"], "--top-k", "expected an integer >= 1, got 0"),
    (["explain", "--batch-size", "0"], "--batch-size", "expected an integer >= 1, got 0"),
    (["explain", "--samples", "-1"], "--samples", "expected an integer >= 0"),
    (["explain", "--eps", "0"], "--eps", "expected a finite number > 0 and <= 1"),
    (["explain", "--eps", "nan"], "--eps", "finite"),
    (["explain", "--seed", "-5"], "--seed", "from 0"),
    (["compare", "--epochs", "0"], "--epochs", "expected an integer >= 1"),
    (["compare", "--lr", "nan"], "--lr", "finite"),
    (["compare", "--grad-norm-every", "-1"], "--grad-norm-every", "expected an integer >= 0"),
    (["compare", "--val-fraction", "2"], "--val-fraction", "> 0 and < 1"),
    (["sweep", "--workers", "0"], "--workers", "expected an integer >= 1"),
    (["sweep", "--seed", "-1"], "--seed", "from 0"),
]


@pytest.mark.parametrize("argv, option, fragment", BAD_ARGUMENTS, ids=[" ".join(a[0]) for a in BAD_ARGUMENTS])
def test_bad_argument_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, argv, option, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: " in err and fragment in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["sweep", "--lr", "0.1,nan"], "--lr: expected a finite number > 0, got 'nan'"),
        (["sweep", "--momentum", "0.9,1.5"], "--momentum: expected a finite number >= 0 and < 1, got '1.5'"),
        (["sweep", "--batch-size", "64,0"], "--batch-size: expected an integer >= 1, got 0"),
        (["sweep", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (["sweep", "--weight-decay", "-1"], "--weight-decay: expected a finite number >= 0"),
        (
            ["sweep", "--optimizer", "sgd,lbfgs"],
            "--optimizer: unknown value 'lbfgs'; known: sgd, adam, adamw, rmsprop, adagrad",
        ),
        (["sweep", "--schedule", "linear"], "--schedule: unknown value 'linear'"),
        (["sweep", "--model", "tiny-mlp,resnet"], "--model: unknown value 'resnet'"),
        (["sweep", "--lr", ","], "--lr: expected at least one value"),
    ],
)
def test_each_sweep_value_is_checked_like_the_single_option(tmp_path, capsys, argv, fragment):
    assert main(argv + ["--out", str(tmp_path / "sweep")]) == 1
    one_line_error(capsys, fragment)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "layers, fragment",
    [
        (
            "pool-pool-pool-pool",
            "token 'pool' (number 4) in 'pool-pool-pool-pool': it shrinks the 1x1 maps to nothing (input 8x8)",
        ),
        ("conv0", "token 'conv0' (number 1) in 'conv0': expected conv<C> with a size from 1 to 1048576"),
        ("conv", "expected conv<C> (e.g. conv16 or conv16k5), the size is missing"),
        ("conv8k0", "expected k<K> with a size from 1"),
        ("fc0", "token 'fc0' (number 1) in 'fc0': expected fc<N> with a size from 1"),
        ("fcx", "expected fc<N> with a size from 1 to 1048576 (e.g. fc128), got 'x'"),
        ("fc16-dropout1.5", "dropout probability must be from 0 to below 1, got 1.5"),
        ("fc16-pool", "a pool must come before any fc"),
        ("tanh", "an activation must follow conv, fc or out directly"),
        ("conv1048576-conv1048576", "more than the limit"),
        ("-", "empty layer spec"),
    ],
)
def test_bad_layer_spec_is_one_line_naming_the_token(tmp_path, capsys, layers, fragment):
    assert main(["train", "--dataset", "digits", "--layers", layers, "--quiet", "--out", str(tmp_path / "r")]) == 1
    one_line_error(capsys, fragment)


# -- checkpoints with non-finite weights, and strict JSON ----------------------------------------
@pytest.fixture
def broken_checkpoint(checkpoint, tmp_path):
    import handgrad

    model = handgrad.load(checkpoint)
    model[1].weight.data[3, 7] = np.nan
    model[3].bias.data[0] = np.inf
    path = tmp_path / "broken.safetensors"
    handgrad.save(
        model,
        path,
        **{k: v for k, v in model.metadata.items() if k not in ("format", "handgrad_version", "architecture", "dtype")},
    )
    return path


def _png(path, size=(8, 8)):
    from PIL import Image

    Image.fromarray(np.zeros(size, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("command", ["eval", "eval --json", "predict", "predict --json"])
def test_non_finite_weights_are_refused_by_eval_and_predict(broken_checkpoint, tmp_path, capsys, command):
    argv = command.split()[:1] + [str(broken_checkpoint)] + command.split()[1:]
    if argv[0] == "predict":
        argv.insert(2, str(_png(tmp_path / "a.png")))
    assert main(argv) == 1
    one_line_error(
        capsys,
        f"{broken_checkpoint}: non-finite weights in 1.weight (1 NaN, 0 inf of 1024 values); "
        f"3.bias (0 NaN, 1 inf of 10 values)",
        out="",
    )


def test_info_describes_a_broken_checkpoint_and_warns(broken_checkpoint, capsys):
    assert main(["info", str(broken_checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "Linear(in_features=64, out_features=16" in captured.out
    assert (
        f"handgrad: warning: {broken_checkpoint}: tensor 1.weight (1 NaN, 0 inf of 1024 values) is not finite"
        in captured.err
    )


def test_outputs_that_overflow_are_refused_not_printed_as_nan(checkpoint, tmp_path, capsys):
    import handgrad

    model = handgrad.load(checkpoint)
    model[3].weight.data[...] = 3e38  # finite weights whose products overflow float32
    path = tmp_path / "overflow.safetensors"
    handgrad.save(
        model,
        path,
        **{k: v for k, v in model.metadata.items() if k not in ("format", "handgrad_version", "architecture", "dtype")},
    )
    assert main(["eval", str(path), "--json"]) == 1
    one_line_error(capsys, "the model's outputs are not finite (NaN or inf) for", out="")
    assert main(["predict", str(path), str(_png(tmp_path / "a.png")), "--json"]) == 1
    one_line_error(capsys, "the model's outputs are not finite (NaN or inf) for 1 of 1 inputs", out="")


def test_json_never_holds_nan_or_infinity():
    from handgrad.app.cli import _json

    text = _json({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    assert "NaN" not in text and "Infinity" not in text


# -- files and pipes ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "info", "predict"])
def test_a_folder_given_as_checkpoint_says_so(tmp_path, capsys, command):
    argv = [command, str(tmp_path)] + (["x.png"] if command == "predict" else [])
    assert main(argv) == 1
    one_line_error(capsys, f"{tmp_path}: is a folder, expected a checkpoint file")


def test_info_into_a_closed_pipe_ends_quietly(checkpoint):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `head -1` does once it has its line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "handgrad", "info", str(checkpoint)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == 141  # 128 + SIGPIPE, as a shell reports cat's


# -- images as people have them ------------------------------------------------------------------
def _digit(value=3) -> np.ndarray:
    """An sklearn digit as ink strength 0-255, upscaled to 64x64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = (digits.images[int(np.flatnonzero(digits.target == value)[0])] * 255 / 16).astype(np.uint8)
    return np.kron(ink, np.ones((8, 8), np.uint8))


def _save(array, path, mode=None, **kwargs):
    from PIL import Image

    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("hidden", [0, 255], ids=["hidden-black", "hidden-white"])
def test_black_ink_on_transparent_reads_as_ink(tmp_path, hidden):
    ink = _digit()
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[..., :3] = np.where(ink[..., None] > 0, 0, hidden)  # the colour under fully transparent pixels varies
    rgba[..., 3] = ink
    got = load_image(_save(rgba, tmp_path / "ink.png"), (1, 8, 8))
    expected = load_image(_save(255 - ink, tmp_path / "paper.png"), (1, 8, 8))  # the same digit on white paper
    assert got.max() > 0.5  # not a blank image
    np.testing.assert_allclose(got, expected, atol=2 / 255)


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_other_transparent_modes_read_as_ink(tmp_path, mode):
    from PIL import Image

    ink = _digit(7)
    if mode == "LA":
        path = _save(np.stack([np.zeros_like(ink), ink], axis=-1), tmp_path / "la.png", "LA")
    else:  # palette: entry 0 transparent, the rest gray levels of black ink
        image = Image.fromarray(np.where(ink > 127, 1, 0).astype(np.uint8), "P")
        image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
        image.save(tmp_path / "p.png", transparency=0)
        path = tmp_path / "p.png"
        ink = np.where(ink > 127, 255, 0).astype(np.uint8)
    expected = load_image(_save(255 - ink, tmp_path / "paper.png"), (1, 8, 8))
    np.testing.assert_allclose(load_image(path, (1, 8, 8)), expected, atol=2 / 255)


def test_white_ink_on_transparent_reads_as_ink(tmp_path):
    ink = _digit()
    rgba = np.full(ink.shape + (4,), 255, np.uint8)
    rgba[..., 3] = ink
    expected = load_image(_save(ink, tmp_path / "dark.png"), (1, 8, 8))  # white digit on black
    np.testing.assert_allclose(load_image(_save(rgba, tmp_path / "ink.png"), (1, 8, 8)), expected, atol=2 / 255)


@pytest.mark.parametrize(
    "orientation, stored", [(3, "ROTATE_180"), (6, "ROTATE_90"), (8, "ROTATE_270"), (2, "FLIP_LEFT_RIGHT")]
)
def test_exif_orientation_is_applied(tmp_path, orientation, stored):
    from PIL import Image

    upright = Image.fromarray(255 - _digit(4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(getattr(Image.Transpose, stored)).save(tmp_path / "phone.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    np.testing.assert_allclose(
        load_image(tmp_path / "phone.png", (1, 8, 8)), load_image(tmp_path / "upright.png", (1, 8, 8)), atol=1e-6
    )


def test_sixteen_bit_gray_reads_like_eight_bit(tmp_path):
    ink = _digit(2)
    np.testing.assert_allclose(
        load_image(_save(ink.astype(np.uint16) * 257, tmp_path / "16.png"), (1, 8, 8)),
        load_image(_save(ink, tmp_path / "8.png"), (1, 8, 8)),
        atol=2 / 255,
    )


def _png_header_only(path, width, height):
    """A PNG that declares width x height and holds one tiny IDAT: what a decompression bomb's header says."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "width, height, fragment",
    [
        (9000, 8000, f"the image has 9000 x 8000 = 72000000 pixels, more than the limit of {MAX_IMAGE_PIXELS}"),
        (20000, 20000, f"the image has 400000000 pixels, more than the limit of {MAX_IMAGE_PIXELS}"),  # PIL's check
    ],
)
def test_decompression_bomb_image_is_refused(tmp_path, capsys, checkpoint, width, height, fragment):
    path = _png_header_only(tmp_path / "bomb.png", width, height)
    assert main(["predict", str(checkpoint), str(path)]) == 1
    one_line_error(capsys, f"{path}: {fragment}")


@pytest.mark.parametrize("damage", ["truncated", "bad-crc", "empty", "text"])
def test_unreadable_image_is_one_line(tmp_path, capsys, checkpoint, damage):
    data = _save(_digit(), tmp_path / "good.png").read_bytes()
    bad = {
        "truncated": data[: len(data) // 2],
        "bad-crc": data[:30] + bytes([data[30] ^ 0xFF]) + data[31:],
        "empty": b"",
        "text": b"P5 not really\n",
    }[damage]
    (tmp_path / "bad.png").write_bytes(bad)
    assert main(["predict", str(checkpoint), str(tmp_path / "bad.png")]) == 1
    one_line_error(capsys, f"{tmp_path / 'bad.png'}: cannot read the image")


def test_missing_image(tmp_path, capsys, checkpoint):
    assert main(["predict", str(checkpoint), str(tmp_path / "nope.png")]) == 1
    one_line_error(capsys, f"{tmp_path / 'nope.png'}: no such image file")


def test_a_system_error_prints_the_path_and_reason_without_errno(tmp_path, capsys, monkeypatch):
    import errno

    from handgrad.app import cli

    def no_permission(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "runs"))

    monkeypatch.setitem(cli.COMMANDS, "datasets", no_permission)
    assert main(["datasets"]) == 1
    one_line_error(capsys, f"handgrad: error: {tmp_path / 'runs'}: Permission denied\n")
