"""A sigmoid MLP trained on MSE with backpropagation written out by hand, and top-k accuracy.

The tutorial's network: 784 inputs, 100 sigmoid hidden units, 10 sigmoid outputs, no biases
(79,400 weights), trained on one-hot targets with the squared error, gradients derived by hand.
With t the one-hot target and N the batch size, the loss is the CLI's "mse" reduction (summed
over the classes, averaged over the batch):

    h = sigmoid(x @ W1.T)                 dL/dy   = 2 (y - t) / N
    y = sigmoid(h @ W2.T)                 dL/dz2  = dL/dy * y (1 - y)      grad_W2 = dL/dz2.T @ h
    L = sum_n sum_c (y - t)^2 / N         dL/dh   = dL/dz2 @ W2
                                          dL/dz1  = dL/dh * h (1 - h)      grad_W1 = dL/dz1.T @ x

Before training, those hand-written gradients are compared with handgrad's layers
(``nn.Linear(bias=False)``, ``nn.Sigmoid``, ``nn.MSELoss``) on one batch. Then plain SGD (lr 1.0,
as ``handgrad train --model mlp-sigmoid``) with the hand-written gradients; each epoch prints its
mean loss and the top-1, top-3 and top-5 test accuracy (the true class among the k largest outputs).

Measured (full MNIST, 10 epochs, float32, seed 0): mean loss 0.188 in epoch 1, 0.028 in epoch 10;
test top-1 97.55%, top-3 99.60%, top-5 99.89%.

    python examples/sigmoid_mse_topk.py --data-dir /path/to/data --epochs 10
    python examples/sigmoid_mse_topk.py --subset 2000 --epochs 1          # the test suite's run
"""

from __future__ import annotations

import argparse

import numpy as np

import handgrad
from handgrad import nn
from handgrad.data import DataLoader, Normalizer, load_dataset

TOP_K = (1, 3, 5)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $HANDGRAD_DATA_DIR)")
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help="train on the first N training images and test on the first N test images",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def forward(w1, w2, x):
    h = sigmoid(x @ w1.T)
    return h, sigmoid(h @ w2.T)


def backward(w1, w2, x, h, y, t):
    """The hand-derived gradients of L = sum_n sum_c (y - t)^2 / N (see the module docstring)."""
    dz2 = 2 * (y - t) / len(x) * y * (1 - y)
    dz1 = (dz2 @ w2) * h * (1 - h)
    return dz1.T @ x, dz2.T @ h


def top_k_accuracy(scores, labels, ks=TOP_K) -> dict:
    """{k: fraction of rows whose label is among the k largest scores}."""
    order = np.argsort(-scores, axis=1)
    return {k: float((order[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def check_against_layers(w1, w2, x, t) -> float:
    """The largest relative difference between the hand-written gradients and handgrad's layers'."""
    model = nn.Sequential(
        nn.Linear(w1.shape[1], w1.shape[0], bias=False),
        nn.Sigmoid(),
        nn.Linear(w2.shape[1], w2.shape[0], bias=False),
        nn.Sigmoid(),
    ).double()
    model.load_state_dict({"0.weight": w1, "2.weight": w2})
    loss_fn = nn.MSELoss(reduction="sum")
    loss_fn(model(x), t)
    model.backward(loss_fn.backward(1.0 / len(x)))  # sum over everything, / N
    h, y = forward(w1, w2, x)
    grads = backward(w1, w2, x, h, y, t)
    return max(
        float(np.abs(mine - layer.weight.grad).max() / np.abs(layer.weight.grad).max())
        for mine, layer in zip(grads, (model[0], model[2]))
    )


def main(argv=None) -> dict:
    """Train; return {"parameters", "epoch_losses", "top_k": {k: accuracy} after the last epoch}."""
    args = parse_args(argv)
    ds = load_dataset("mnist", data_dir=args.data_dir)
    normalize = Normalizer(0.1307, 0.3081)
    x, y = normalize(ds.train_images[: args.subset]).reshape(-1, 784), ds.train_labels[: args.subset]
    test_x, test_y = normalize(ds.test_images[: args.subset]).reshape(-1, 784), ds.test_labels[: args.subset]
    eye = np.eye(10, dtype=np.float32)

    rng = np.random.default_rng(args.seed)
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as handgrad's and PyTorch's Linear
    w1 = rng.uniform(-1, 1, (args.hidden, 784)).astype(np.float32) / np.float32(np.sqrt(784))
    w2 = rng.uniform(-1, 1, (10, args.hidden)).astype(np.float32) / np.float32(np.sqrt(args.hidden))
    print(f"784-{args.hidden}-10 sigmoid MLP, no biases: {w1.size + w2.size:,} parameters")
    error = check_against_layers(
        w1.astype(np.float64), w2.astype(np.float64), x[:32].astype(np.float64), eye[y[:32]].astype(np.float64)
    )
    print(f"hand-written gradients vs handgrad's layers (float64, one batch): max rel. error {error:.1e}")

    loader = DataLoader(x, y, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    losses, top = [], {}
    for epoch in range(1, args.epochs + 1):
        total, seen = 0.0, 0
        for images, labels in loader:
            t = eye[labels]
            h, out = forward(w1, w2, images)
            total += float(np.square(out - t).sum())
            seen += len(images)
            grad_w1, grad_w2 = backward(w1, w2, images, h, out, t)
            w1 -= np.float32(args.lr) * grad_w1
            w2 -= np.float32(args.lr) * grad_w2
        losses.append(total / seen)
        top = top_k_accuracy(forward(w1, w2, test_x)[1], test_y)
        print(
            f"epoch {epoch}: mean loss {losses[-1]:.4f}, test top-1 {top[1]:.2%}, top-3 {top[3]:.2%}, "
            f"top-5 {top[5]:.2%}"
        )
    return {"parameters": w1.size + w2.size, "epoch_losses": losses, "top_k": top, "gradient_error": error}


if __name__ == "__main__":
    main()
