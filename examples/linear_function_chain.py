"""A Linear Function, a backward chain written out by hand against autograd, and a [128, 64, 10] MLP.

The tutorial's three steps, on handgrad:

1. A Linear layer as a ``torch.autograd.Function``: ``handgrad.torch.LinearFunction`` (forward
   y = x @ W.T + b; backward grad_input = G @ W, grad_weight = G.T @ x, grad_bias = G.sum(rows)),
   checked by ``torch.autograd.gradcheck`` in float64.
2. The backward pass of a 784-128-64-10 ReLU MLP walked by hand: each layer's functional pair
   (``linear_forward`` / ``linear_backward``, ``relu_forward`` / ``relu_backward``,
   ``cross_entropy_forward`` / ``cross_entropy_backward``) called in reverse order, and every
   gradient compared with torch autograd on the same weights.
3. That MLP trained with handgrad (``nn.Sequential``, SGD lr 0.05, momentum 0.9): one line of
   statistics per epoch (mean loss, train and test accuracy, seconds), and with ``--stats
   stats.json`` the same as a JSON list to explore (HiPlot, ``handgrad report``'s epochs view...).

Measured (full MNIST, 5 epochs, float32, seed 0): the hand-written chain within 1.3e-15 of autograd
(float64); mean loss 0.256 in epoch 1, 0.066 in epoch 5; 96.91% test accuracy.

    python examples/linear_function_chain.py --data-dir /path/to/data --epochs 5
    python examples/linear_function_chain.py --subset 2000 --epochs 1          # the test suite's run
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import handgrad
from handgrad import functional as F, nn, optim
from handgrad.data import DataLoader, Normalizer, load_dataset
from handgrad.torch import LinearFunction

SIZES = (784, 128, 64, 10)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $HANDGRAD_DATA_DIR)")
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help="train on the first N training images and test on the first N test images",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", metavar="JSON", help="write the per-epoch statistics here")
    return parser.parse_args(argv)


def check_linear_function(seed) -> bool:
    """Step 1: gradcheck of the Linear Function in float64."""
    gen = torch.Generator().manual_seed(seed)
    x, w, b = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True) for s in ((4, 5), (3, 5), (3,)))
    return torch.autograd.gradcheck(LinearFunction.apply, (x, w, b))


def manual_chain(model, x, y) -> dict:
    """Step 2: forward through the model's Linear and ReLU layers with the functional pairs, then
    backward by hand, last layer first; returns {parameter name: gradient}."""
    caches, h = [], x.reshape(len(x), -1)
    positions = [j for j, m in enumerate(model) if isinstance(m, nn.Linear)]  # state_dict prefixes
    linears = [model[j] for j in positions]
    for i, layer in enumerate(linears):
        h, cache = F.linear_forward(h, layer.weight.data, layer.bias.data)
        caches.append(("linear", cache))
        if i < len(linears) - 1:
            h, cache = F.relu_forward(h)
            caches.append(("relu", cache))
    _, loss_cache = F.cross_entropy_forward(h, y)
    grad = F.cross_entropy_backward(np.asarray(1.0), loss_cache)  # dL/dlogits = (softmax - onehot) / N
    grads, index = {}, len(linears) - 1
    for kind, cache in reversed(caches):
        if kind == "relu":
            grad = F.relu_backward(grad, cache)  # G * [x > 0]
        else:
            grad, grad_weight, grad_bias = F.linear_backward(grad, cache)  # G @ W, G.T @ x, G.sum(rows)
            grads[f"{positions[index]}.weight"], grads[f"{positions[index]}.bias"] = grad_weight, grad_bias
            index -= 1
    return grads


def autograd_chain(model, x, y) -> dict:
    """The same gradients from torch autograd on copies of the weights."""
    params = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in model.state_dict().items()}
    h = torch.from_numpy(x).flatten(1)
    linear_names = sorted({k.split(".")[0] for k in params}, key=int)
    for i, name in enumerate(linear_names):
        h = torch.nn.functional.linear(h, params[f"{name}.weight"], params[f"{name}.bias"])
        if i < len(linear_names) - 1:
            h = torch.relu(h)
    torch.nn.functional.cross_entropy(h, torch.from_numpy(y)).backward()
    return {k: p.grad.numpy() for k, p in params.items()}


def evaluate(model, x, y, batch_size=1000) -> float:
    model.eval()
    with handgrad.no_grad():
        correct = sum(
            int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(y), batch_size)
        )
    model.train()
    return correct / len(y)


def main(argv=None) -> dict:
    """Run the three steps; return {"gradcheck": bool, "max_rel_error": float, "epochs": [stats]}."""
    args = parse_args(argv)
    ds = load_dataset("mnist", data_dir=args.data_dir)
    normalize = Normalizer(0.1307, 0.3081)
    x, y = normalize(ds.train_images[: args.subset]), ds.train_labels[: args.subset]
    test_x, test_y = normalize(ds.test_images[: args.subset]), ds.test_labels[: args.subset]

    passed = check_linear_function(args.seed)
    print(f"1. LinearFunction gradcheck (float64): {'passed' if passed else 'FAILED'}")

    handgrad.manual_seed(args.seed)
    layers = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if i < len(SIZES) - 2 else [])
    model = nn.Sequential(*layers)
    batch_x, batch_y = x[:64].astype(np.float64), y[:64]
    hand, auto = manual_chain(model.double(), batch_x, batch_y), autograd_chain(model, batch_x, batch_y)
    worst = 0.0
    for name in auto:
        rel = float(np.abs(hand[name] - auto[name]).max() / max(np.abs(auto[name]).max(), 1e-300))
        worst = max(worst, rel)
        print(f"2. {name:<9} {str(auto[name].shape):<11} hand-written chain vs autograd: max rel. error {rel:.1e}")
    model.float()

    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loader = DataLoader(x, y, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    print(f"3. MLP {'-'.join(map(str, SIZES))}: {model.num_parameters():,} parameters")
    stats = []
    for epoch in range(1, args.epochs + 1):
        start, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        for images, labels in loader:
            logits = model(images)
            loss = loss_fn(logits, labels)
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            total, seen = total + loss * len(labels), seen + len(labels)
            correct += int((logits.argmax(1) == labels).sum())
        row = {
            "epoch": epoch,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "train_loss": total / seen,
            "train_acc": correct / seen,
            "test_acc": evaluate(model, test_x, test_y),
            "seconds": time.perf_counter() - start,
        }
        stats.append(row)
        print(
            f"   epoch {epoch}: mean loss {row['train_loss']:.4f}, train acc {row['train_acc']:.2%}, "
            f"test acc {row['test_acc']:.2%}, {row['seconds']:.1f} s"
        )
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
    return {"gradcheck": passed, "max_rel_error": worst, "epochs": stats}


if __name__ == "__main__":
    main()
