"""One-layer MNIST classifier, the classic custom ``torch.autograd.Function`` exercise, on handgrad.

The model is a ``torch.nn.Module`` with its own weight and bias; its forward calls
``handgrad.torch.LinearFunction`` and the loss ``handgrad.torch.CrossEntropyFunction``, so every
gradient comes from handgrad's hand-written backward (functional/linear.py, functional/loss.py),
not from autograd. torch supplies the parameters, the optimizer (SGD, lr 0.01, momentum 0.9) and
the loop.

Measured (full run: 60,000 training images, 5 epochs, batch 64, float32, seed 0): 92.2% test
accuracy on the 10,000 MNIST test images. On 5,000 training images for 1 epoch: 85.5% on the
first 2,000 test images (tests/test_examples.py requires 80%).

    python examples/one_layer_mnist.py --data-dir /path/to/data --epochs 5
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import handgrad.data
from handgrad.torch import CrossEntropyFunction, LinearFunction


class OneLayer(torch.nn.Module):
    """logits = flatten(x) @ weight.T + bias, with torch.nn.Linear's initialisation."""

    def __init__(self, in_features=784, num_classes=10):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = torch.nn.Parameter(torch.empty(num_classes))
        bound = 1 / math.sqrt(in_features)
        torch.nn.init.uniform_(self.weight, -bound, bound)
        torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return LinearFunction.apply(x.flatten(1), self.weight, self.bias)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None,
                        help="folder holding mnist/ (default: $HANDGRAD_DATA_DIR, then the download cache)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def evaluate(model, images, labels, batch_size=1000):
    with torch.no_grad():
        correct = sum(int((model(torch.from_numpy(images[i:i + batch_size])).argmax(1).numpy()
                           == labels[i:i + batch_size]).sum()) for i in range(0, len(labels), batch_size))
    return correct / len(labels)


def main(argv=None) -> float:
    """Train, print the test accuracy per epoch, and return the final one (a fraction)."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    ds = handgrad.data.load_dataset("mnist", data_dir=args.data_dir)
    normalize = handgrad.data.Normalizer(0.1307, 0.3081)
    train_x, train_y = normalize(ds.train_images[:args.train_size]), ds.train_labels[:args.train_size]
    test_x, test_y = normalize(ds.test_images[:args.test_size]), ds.test_labels[:args.test_size]

    model = OneLayer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = handgrad.data.DataLoader(train_x, train_y, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        loss_sum, seen = 0.0, 0
        for images, labels in loader:
            loss = CrossEntropyFunction.apply(model(torch.from_numpy(images)), torch.from_numpy(labels), "mean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum, seen = loss_sum + loss.item() * len(labels), seen + len(labels)
        accuracy = evaluate(model, test_x, test_y)
        print(f"epoch {epoch}: mean train loss {loss_sum / seen:.4f}, test accuracy {accuracy:.2%}")
    return accuracy


if __name__ == "__main__":
    main()
