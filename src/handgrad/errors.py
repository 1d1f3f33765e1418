"""Errors raised at handgrad's public boundary, and the checks that word them.

Every message names the layer as it prints (``Conv2d(1, 8, kernel_size=(3, 3), ...)``), what was
expected and what came, so a user can find the mistake without reading a traceback.
"""

from __future__ import annotations

import numpy as np


class HandgradError(ValueError):
    """Bad input to a handgrad layer, loss, optimizer or file. ``where`` is the layer (or file)."""

    def __init__(self, where, message: str):
        self.where = where
        prefix = f"{where!r}: " if not isinstance(where, str) else f"{where}: "
        super().__init__(prefix + message if where is not None else message)

    def __reduce__(self):
        # Pickle and deepcopy (data-loader workers) rebuild from the full text; ``where`` is not kept.
        return type(self), (None, str(self))


class ShapeError(HandgradError):
    """An array has the wrong rank, size or number of channels."""


class DTypeError(HandgradError):
    """An array has the wrong dtype (handgrad never casts inputs silently)."""


class StateDictError(HandgradError):
    """A state_dict has missing, unexpected or mis-shaped keys."""


class WriteError(HandgradError, OSError):
    """A file could not be written (full disk, no permission, ...); the message names the file."""


class BackwardBeforeForwardError(HandgradError, RuntimeError):
    """``backward`` was called on a layer that has not run ``forward`` with gradients enabled."""


def fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(where, name: str, x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise HandgradError(where, f"expected {name} to be a numpy.ndarray, got {type(x).__name__}")
    return x


def check_ndim(where, name: str, x: np.ndarray, ndims, layout: str) -> None:
    """``ndims``: allowed ranks; ``layout``: how the expected shape reads, e.g. ``(N, C, H, W)``."""
    check_array(where, name, x)
    if x.ndim not in ndims:
        rank = f"at least {ndims.start}-D" if isinstance(ndims, range) else " or ".join(f"{d}-D" for d in ndims)
        raise ShapeError(
            where, f"expected {name} of shape {layout} ({rank}), got shape {fmt_shape(x.shape)} ({x.ndim}-D)"
        )


def check_floating(where, name: str, x: np.ndarray, dtype=None) -> None:
    """``x`` must be floating; when ``dtype`` is given (the layer's), exactly that dtype."""
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(
            where,
            f"expected {name} of dtype {np.dtype(dtype).name} (the layer's dtype), got "
            f"{x.dtype.name}; convert the input with .astype() or the layer with .to()",
        )
    if x.dtype.kind != "f":  # np.issubdtype(x.dtype, np.floating), read off the dtype: this runs on every layer call
        raise DTypeError(where, f"expected {name} of a floating dtype, got {x.dtype.name}")


def check_grad_output(where, grad_output, expected_shape) -> np.ndarray:
    check_array(where, "grad_output", grad_output)
    if tuple(grad_output.shape) != tuple(expected_shape):
        raise ShapeError(
            where,
            f"expected grad_output of shape {fmt_shape(expected_shape)} (the forward output's), "
            f"got {fmt_shape(grad_output.shape)}",
        )
    return grad_output
