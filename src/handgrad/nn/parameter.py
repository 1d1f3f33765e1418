"""Parameter: a trainable array and the gradient accumulated into it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """Holds ``data`` (the values) and ``grad`` (dL/ddata, None until a backward pass).

    Gradients accumulate across backward passes until ``zero_grad``, as in PyTorch.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        self.data = np.asarray(data)
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def accumulate_grad(self, grad: np.ndarray, owned: bool = False) -> None:
        """grad += ``grad`` (or grad = ``grad`` after zero_grad).

        The first gradient is stored as a private copy, because later passes add into it in place
        and must never write into an array someone else holds (a cache, the caller's grad_output).
        ``owned=True`` says the caller hands over a fresh array nobody else holds: no copy needed.
        """
        if grad is None:
            return
        if self.grad is None:
            keep = owned and grad.dtype == self.dtype and grad.flags.writeable
            self.grad = grad if keep else np.array(grad, dtype=self.dtype, copy=True)
        else:
            self.grad += grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad.fill(0)

    def numpy(self) -> np.ndarray:
        return self.data

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype.name}, requires_grad={self.requires_grad})"
