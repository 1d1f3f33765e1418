"""Dropout and Dropout2d: inverted dropout in training, identity in eval."""

from __future__ import annotations

import warnings

import numpy as np

from .. import kernels
from .._random import default_generator
from ..errors import check_floating, check_ndim
from .module import Module


class Dropout(Module):
    """Train: y = x * mask, mask = [u >= p] / (1 - p), u ~ U[0, 1) drawn from handgrad's generator.
    Eval: y = x.  dL/dx = G * mask (G in eval)."""

    op = "dropout"
    _ndims: range | tuple[int, ...] = range(0, 33)
    _layout = "(*)"

    arguments = {"p": ("probability", False)}

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, self._ndims, self._layout)
        check_floating(self, "input", x)
        if self.training and self.p > 0:
            out, mask = kernels.op(f"{self.op}_forward")(x, self.p, default_generator())
        else:
            out, mask = x, None
        self._save_for_backward(mask, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        mask = self._saved(grad_output)
        if not input_grad:
            return None
        return grad_output if mask is None else kernels.op(f"{self.op}_backward")(grad_output, mask)

    def constructor_args(self) -> dict:
        return dict(p=self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel-wise dropout: in training each channel of each sample is zeroed with probability p
    (all its positions together) and the rest scaled by 1 / (1 - p); eval: y = x.

    Shape: (N, C, H, W); a 3-D input is taken as (N, C, L), as torch.nn.Dropout2d does (with its
    warning). Gradient: dL/dx = G * mask, the mask broadcast over each channel's positions.
    """

    op = "dropout2d"
    _ndims, _layout = (3, 4), "(N, C, H, W) or (N, C, L)"

    def forward(self, x) -> np.ndarray:
        if isinstance(x, np.ndarray) and x.ndim == 3:
            warnings.warn(
                f"{self!r}: a 3-D input is taken as (N, C, L), channel-wise 1D dropout, as torch.nn.Dropout2d",
                UserWarning,
                stacklevel=2,
            )
        return super().forward(x)
