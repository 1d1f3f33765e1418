"""Ops that move no value: Flatten (a reshape) and Identity. Their backward gives the upstream
gradient the input's shape."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import HandgradError
from .spec import Bridge, Case, OpSpec, register


def flatten_dims(where, ndim, start_dim, end_dim) -> tuple[int, int]:
    """start_dim and end_dim as non-negative axes of an input of ``ndim`` axes (a 0-d input
    flattens as if it had one), as torch.flatten checks them."""
    rank = max(ndim, 1)
    for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -rank <= dim < rank:
            raise HandgradError(
                where, f"{name} must be an integer in [{-rank}, {rank - 1}] for input of {ndim} dimensions, got {dim!r}"
            )
    start, end = start_dim % rank, end_dim % rank
    if start > end:
        raise HandgradError(where, f"start_dim {start_dim} comes after end_dim {end_dim} (axes {start} > {end})")
    return start, end


def flatten_forward(x, start_dim=0, end_dim=-1) -> tuple[np.ndarray, Any]:
    """y = x with axes start_dim..end_dim merged into one: (N, C, H, W) -> (N, C*H*W) for (1, -1)."""
    shape = x.shape or (1,)
    start, end = start_dim % len(shape), end_dim % len(shape)
    out = x.reshape(shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])
    return out, x.shape  # backward needs only the input's shape


def flatten_backward(grad_output, input_shape) -> np.ndarray:
    """dL/dx = G reshaped to the input's shape"""
    return grad_output.reshape(input_shape)


def identity_forward(x) -> tuple[np.ndarray, Any]:
    """y = x"""
    return x, None


def identity_backward(grad_output, cache) -> np.ndarray:
    """dL/dx = G"""
    return grad_output.copy()  # a new array: the caller may accumulate into the input's gradient in place


# -- specs ------------------------------------------------------------------------------------------
def _check_flatten(where, arrays, options):
    start, end = flatten_dims(where, arrays["input"].ndim, options["start_dim"], options["end_dim"])
    return {"start_dim": start, "end_dim": end}


def _flatten_cases(rng):
    for shape, start, end in (((2, 3, 4), 1, -1), ((2, 3, 4), 0, -1), ((2, 3, 4, 5), 1, 2), ((3, 4), -1, -1)):
        yield Case(
            f"x {shape}, start_dim {start}, end_dim {end}",
            (rng.standard_normal(shape),),
            {"start_dim": start, "end_dim": end},
        )


def _identity_cases(rng):
    yield Case("x (3, 5)", (rng.standard_normal((3, 5)),))


register(
    OpSpec(
        "flatten",
        flatten_forward,
        flatten_backward,
        lambda torch: torch.flatten,
        _flatten_cases,
        options=(("start_dim", 0), ("end_dim", -1)),
        bridge=Bridge("Flatten", check=_check_flatten),
    ),
    OpSpec(
        "identity",
        identity_forward,
        identity_backward,
        lambda torch: torch.nn.Identity(),
        _identity_cases,
        bridge=Bridge("Identity"),
    ),
)
