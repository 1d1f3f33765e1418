"""Inverted dropout: zero each element with probability p and scale the survivors by 1/(1-p), so
the expected output equals the input and evaluation needs no rescaling."""

from __future__ import annotations

from typing import Any

import numpy as np

from .spec import REQUIRED, Case, OpSpec, register


def dropout_forward(x, p, generator: np.random.Generator) -> tuple[np.ndarray, Any]:
    """y = x * mask,  mask = [u >= p] / (1 - p) with u ~ U[0, 1) per element (all zeros when p = 1)."""
    if p >= 1:
        mask = np.zeros_like(x)
    else:
        keep = generator.random(x.shape, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64) >= p
        mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, mask  # backward needs only the mask


def dropout_backward(grad_output, mask) -> np.ndarray:
    """dL/dx = G * mask"""
    return grad_output * mask


# -- spec -------------------------------------------------------------------------------------------
def _dropout_reference(torch):
    def dropout(input, p=0.5, generator=None):
        """x * mask, with the mask handgrad draws from the same generator state."""
        return input * torch.from_numpy(dropout_forward(np.ones(tuple(input.shape)), p, generator)[1])

    return dropout


def _dropout_cases(rng):
    for p in (0.0, 0.5):
        yield Case(f"x (4, 6), p {p}", (rng.standard_normal((4, 6)),), {"p": p, "generator": np.random.default_rng(7)})


register(
    OpSpec(
        "dropout",
        dropout_forward,
        dropout_backward,
        _dropout_reference,
        _dropout_cases,
        options=(("p", 0.5), ("generator", REQUIRED)),
    )
)
