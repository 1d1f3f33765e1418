"""Inverted dropout: zero each element with probability p and scale the survivors by 1/(1-p), so
the expected output equals the input and evaluation needs no rescaling."""
from __future__ import annotations

import numpy as np


def dropout_forward(x, p, generator: np.random.Generator):
    """y = x * mask,  mask = [u >= p] / (1 - p) with u ~ U[0, 1) per element (all zeros when p = 1)."""
    if p >= 1:
        mask = np.zeros_like(x)
    else:
        keep = generator.random(x.shape, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64) >= p
        mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, mask  # backward needs only the mask


def dropout_backward(grad_output, mask):
    """dL/dx = G * mask"""
    return grad_output * mask
