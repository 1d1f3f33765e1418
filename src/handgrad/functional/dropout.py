"""Inverted dropout: zero each element (Dropout) or each channel (Dropout2d) with probability p and
scale the survivors by 1/(1-p), so the expected output equals the input and evaluation needs no
rescaling."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._random import default_generator
from ..errors import HandgradError, ShapeError, fmt_shape
from .spec import REQUIRED, Bridge, Case, OpSpec, refuse_inplace, register


def _mask(shape, p, dtype, generator: np.random.Generator) -> np.ndarray:
    """[u >= p] / (1 - p) with u ~ U[0, 1) per entry of ``shape`` (all zeros when p = 1)."""
    if p >= 1:
        return np.zeros(shape, dtype)
    keep = generator.random(shape, dtype=dtype if dtype in (np.float32, np.float64) else np.float64) >= p
    return keep.astype(dtype) / dtype.type(1 - p)


def dropout_forward(x, p, generator: np.random.Generator) -> tuple[np.ndarray, Any]:
    """y = x * mask,  mask = [u >= p] / (1 - p) with u ~ U[0, 1) per element (all zeros when p = 1)."""
    mask = _mask(x.shape, p, x.dtype, generator)
    return x * mask, mask  # backward needs only the mask


def dropout_backward(grad_output, mask) -> np.ndarray:
    """dL/dx = G * mask"""
    return grad_output * mask


def dropout2d_forward(x, p, generator: np.random.Generator) -> tuple[np.ndarray, Any]:
    """y = x * mask, one mask entry [u >= p] / (1 - p) per (sample, channel), shared by every
    position of that channel: (N, C, H, W) draws (N, C, 1, 1); a 3-D input is (N, C, L), as torch."""
    mask = _mask(x.shape[:2] + (1,) * (x.ndim - 2), p, x.dtype, generator)
    return x * mask, mask  # backward needs only the mask


def dropout2d_backward(grad_output, mask) -> np.ndarray:
    """dL/dx = G * mask   (the mask broadcast over each channel's positions)"""
    return grad_output * mask


# -- specs ------------------------------------------------------------------------------------------
def _dropout_reference(name):
    def reference(torch):
        def dropout(input, p=0.5, generator=None, **unused):
            """x * mask, with the mask handgrad draws from the same generator state."""
            forward = dropout_forward if name == "dropout" else dropout2d_forward
            return input * torch.from_numpy(forward(np.ones(tuple(input.shape)), p, generator)[1])

        return dropout

    return reference


def _dropout_cases(shapes):
    def cases(rng):
        for shape in shapes:
            for p in (0.0, 0.5, 1.0):
                generator = np.random.default_rng(7)
                yield Case(f"x {shape}, p {p}", (rng.standard_normal(shape),), {"p": p, "generator": generator})

    return cases


def _check_dropout(where, arrays, options, channel_wise=False):
    """torch's signature (``training``, ``inplace``) as the pair takes it: eval is p = 0, whose mask
    of ones gives the input exactly; the mask comes from handgrad's generator."""
    p = options["p"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise HandgradError(where, f"dropout probability has to be between 0 and 1, but got {p!r}")
    if options["inplace"]:
        raise HandgradError(
            where, "inplace=True is not supported (handgrad writes a new output and keeps the mask); use inplace=False"
        )
    x = arrays["input"]
    if channel_wise and x.ndim not in (3, 4):
        raise ShapeError(
            where,
            f"expected input of shape (N, C, H, W) or (N, C, L) (4-D or 3-D), got {fmt_shape(x.shape)}; "
            f"for element-wise dropout use dropout",
        )
    if channel_wise and x.ndim == 3:
        warnings.warn(
            f"{where}: a 3-D input is taken as (N, C, L), channel-wise 1D dropout, as torch.nn.functional.dropout2d",
            UserWarning,
            stacklevel=2,
        )
    generator = options["generator"]
    return {"p": float(p) if options["training"] else 0.0, "generator": generator or default_generator()}


def _check_dropout2d(where, arrays, options):
    return _check_dropout(where, arrays, options, channel_wise=True)


# torch.nn.functional's signature, then the generator the mask is drawn from (the bridge: handgrad's)
_DROPOUT_OPTIONS = (("p", 0.5), ("training", True), ("inplace", False), ("generator", REQUIRED))


def _dropout_spec(name, forward, backward, module, shapes, check) -> OpSpec:
    return OpSpec(
        name,
        forward,
        backward,
        _dropout_reference(name),
        _dropout_cases(shapes),
        options=_DROPOUT_OPTIONS,
        bridge=Bridge(module, check=check, unsupported=refuse_inplace, signature=("input", "p", "training", "inplace")),
    )


register(
    _dropout_spec("dropout", dropout_forward, dropout_backward, "Dropout", [(4, 6), (5,)], _check_dropout),
    _dropout_spec("dropout2d", dropout2d_forward, dropout2d_backward, "Dropout2d", [(2, 3, 4, 4)], _check_dropout2d),
)
