"""Compile (and cache) the kernels most tests run, in one process: `make test` runs this while mypy
and ctest run, so that the two pytest workers load the kernels from Numba's cache instead of each
compiling the same ones from a fresh clone's empty cache."""

from __future__ import annotations

import numpy as np

import handgrad
from handgrad import nn, optim


def main() -> None:
    rng = np.random.default_rng(0)
    models = [
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), (8, 1, 8, 8)),
        (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32, 10),
            ),
            (8, 1, 8, 8),
        ),  # fmt: skip
    ]
    for model, shape in models:
        for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=1e-3)):
            opt = make(model.parameters())
            loss = nn.CrossEntropyLoss()
            x = rng.standard_normal(shape).astype(np.float32)
            loss(model(x), rng.integers(0, 10, shape[0]))
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
            with handgrad.no_grad():
                model(x)


if __name__ == "__main__":
    main()
