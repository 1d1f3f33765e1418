"""Dropout: inverted dropout in training, identity in eval."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._random import default_generator
from ..errors import check_floating, check_ndim
from .module import Module


class Dropout(Module):
    """Train: y = x * mask, mask = [u >= p] / (1 - p), u ~ U[0, 1) drawn from handgrad's generator.
    Eval: y = x.  dL/dx = G * mask (G in eval)."""

    op = "dropout"

    arguments = {"p": ("probability", False)}

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)

    def forward(self, x) -> np.ndarray:
        check_ndim(self, "input", x, range(0, 33), "(*)")
        check_floating(self, "input", x)
        if self.training and self.p > 0:
            out, mask = F.dropout_forward(x, self.p, default_generator())
        else:
            out, mask = x, None
        self._save_for_backward(mask, out.shape)
        return out

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        mask = self._saved(grad_output)
        if not input_grad:
            return None
        return grad_output if mask is None else F.dropout_backward(grad_output, mask)

    def constructor_args(self) -> dict:
        return dict(p=self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
