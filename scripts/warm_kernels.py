"""Compile (and cache) the kernels most tests run, in one process: `make test` runs this while mypy
and ctest run, so that the two pytest workers load the kernels from Numba's cache instead of each
compiling the same ones from a fresh clone's empty cache."""

from __future__ import annotations

import numpy as np

import handgrad
from handgrad import nn, optim
from handgrad.models import build_model


def main() -> None:
    rng = np.random.default_rng(0)
    for name in ("mlp", "tiny-cnn"):  # the two paths the tests take most: Linear and Conv2d kernels
        model = build_model(name)
        for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=1e-3)):
            opt = make(model.parameters())
            loss = nn.CrossEntropyLoss()
            x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
            loss(model(x), rng.integers(0, 10, len(x)))
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
            with handgrad.no_grad():
                model(x)


if __name__ == "__main__":
    main()
