"""A 784-250-250-10 MLP in Python and C++: trained by one, evaluated and trained further by the other.

The tutorial builds the same MLP in Python and in C++. handgrad has both halves (``cpp/`` is the
C++ twin) and one checkpoint format, so this script makes the round trip:

1. Python trains the MLP (ReLU, SGD lr 0.05, momentum 0.9, batch 64) and saves a checkpoint.
2. The C++ program evaluates that checkpoint on the 10,000 test images: the same accuracy as Python.
3. The C++ program trains it one more epoch from those weights (``train --init``).
4. Python loads the C++ checkpoint and evaluates it: the same accuracy as C++ reports.

The C++ program is ``cpp/build/handgrad-cpp`` (``make cpp`` builds it) or ``--cpp PATH``; without
it, steps 2-4 are skipped with a message.

Measured (full MNIST, 3 Python epochs, float32, seed 0): 96.83% test accuracy in Python and in C++;
after one more C++ epoch 98.21% in C++ and in Python.

    python examples/mlp_cpp_roundtrip.py --data-dir /path/to/data --epochs 3
    python examples/mlp_cpp_roundtrip.py --subset 2000 --epochs 1          # the test suite's run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import handgrad
from handgrad import nn, optim
from handgrad.data import DataLoader, Normalizer, load_dataset
from handgrad.models import build_model

CPP = Path(__file__).resolve().parent.parent / "cpp" / "build" / "handgrad-cpp"
MEAN, STD = 0.1307, 0.3081


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $HANDGRAD_DATA_DIR)")
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help="train on the first N training images (both programs test on all 10,000)",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpp", type=Path, default=CPP, help=f"the C++ program (default: {CPP})")
    parser.add_argument("--out", type=Path, help="folder for the checkpoints (default: a temporary one)")
    return parser.parse_args(argv)


def accuracy(model, x, y, batch_size=1000) -> float:
    model.eval()
    with handgrad.no_grad():
        correct = sum(
            int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(y), batch_size)
        )
    return correct / len(y)


def cpp(program, *args) -> str:
    done = subprocess.run([str(program), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{program} {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout


def main(argv=None) -> dict:
    """Run the round trip; return the accuracies {"python", "cpp_of_python", "cpp_trained",
    "python_of_cpp"} (the last three None without the C++ program)."""
    args = parse_args(argv)
    ds = load_dataset("mnist", data_dir=args.data_dir)
    normalize = Normalizer(MEAN, STD)
    x, y = normalize(ds.train_images[: args.subset]), ds.train_labels[: args.subset]
    test_x, test_y = normalize(ds.test_images), ds.test_labels

    handgrad.manual_seed(args.seed)
    model = build_model("mlp", input_shape=(1, 28, 28), num_classes=10)
    print(f"1. Python: MLP 784-250-250-10, {model.num_parameters():,} parameters")
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(x, y, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    for epoch in range(1, args.epochs + 1):
        total, seen = 0.0, 0
        for images, labels in loader:
            loss = loss_fn(model(images), labels)
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            total, seen = total + loss * len(labels), seen + len(labels)
        print(f"   epoch {epoch}: mean loss {total / seen:.4f}")
    result = {
        "python": accuracy(model, test_x, test_y),
        "cpp_of_python": None,
        "cpp_trained": None,
        "python_of_cpp": None,
    }
    print(f"   test accuracy {result['python']:.2%}")

    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="handgrad-roundtrip-") as tmp:
            return round_trip(args, model, Path(tmp), result, test_x, test_y, len(y))
    args.out.mkdir(parents=True, exist_ok=True)
    return round_trip(args, model, args.out, result, test_x, test_y, len(y))


def round_trip(args, model, out, result, test_x, test_y, train_size) -> dict:
    """Steps 2-4, with the checkpoints in ``out``."""
    checkpoint = out / "python.safetensors"
    handgrad.save(
        model,
        checkpoint,
        input_shape=[1, 28, 28],
        normalization={"mean": MEAN, "std": STD},
        classes=[str(c) for c in range(10)],
        dataset="mnist",
        loss="cross_entropy",
        model="mlp",
    )
    print(f"   saved {checkpoint}")
    if not args.cpp.is_file():
        print(f"2-4. skipped: no C++ program at {args.cpp} (build it with `make cpp`, or give --cpp PATH)")
        return result

    data = ["--data-dir", args.data_dir] if args.data_dir else []
    result["cpp_of_python"] = json.loads(cpp(args.cpp, "eval", checkpoint, "--json", *data))["accuracy"]
    print(
        f"2. C++ evaluates the Python checkpoint: test accuracy {result['cpp_of_python']:.2%} "
        f"({'the same as' if result['cpp_of_python'] == result['python'] else 'DIFFERENT from'} Python's)"
    )
    run = out / "cpp-run"
    size = ["--train-size", train_size] if args.subset else []
    cpp(
        args.cpp,
        "train",
        "--init",
        checkpoint,
        "--epochs",
        1,
        "--schedule",
        "none",
        "--lr",
        0.01,
        "--seed",
        args.seed,
        "--out",
        run,
        "--quiet",
        *size,
        *data,
    )
    trained = run / "last.safetensors"
    result["cpp_trained"] = json.loads(cpp(args.cpp, "eval", trained, "--json", *data))["accuracy"]
    print(f"3. C++ trains one more epoch from those weights: test accuracy {result['cpp_trained']:.2%}")
    result["python_of_cpp"] = accuracy(handgrad.load(trained), test_x, test_y)
    print(
        f"4. Python evaluates the C++ checkpoint: test accuracy {result['python_of_cpp']:.2%} "
        f"({'the same as' if result['python_of_cpp'] == result['cpp_trained'] else 'DIFFERENT from'} C++'s)"
    )
    return result


if __name__ == "__main__":
    main()
