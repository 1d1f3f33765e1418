"""handgrad: a NumPy deep-learning library in which every layer's backward pass is written by hand."""

import os as _os
import sys as _sys

if "numpy" not in _sys.modules:
    # After each product OpenBLAS keeps its idle threads spinning for 2^28 cycles (~0.1 s), on the
    # very cores handgrad's own threads need (see _threads.py). 2^16 (~30 us) still bridges the
    # gaps between the products of one step. Read when NumPy loads OpenBLAS, so it works only
    # before `import numpy`; a value already set wins.
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from . import _moved, functional, nn, optim, plugins  # noqa: F401  (_moved: the old module names)
from ._grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._random import default_generator, manual_seed
from ._threads import get_num_threads, set_num_threads
from .errors import HandgradError
from .gradcheck import GradcheckReport, gradcheck
from .serialization import load, save

__all__ = [
    "functional",
    "nn",
    "optim",
    "plugins",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "default_generator",
    "manual_seed",
    "get_num_threads",
    "set_num_threads",
    "HandgradError",
    "GradcheckReport",
    "gradcheck",
    "load",
    "save",
]

__version__ = "0.1.0"

_moved.install()  # handgrad.cli, handgrad.training, handgrad.explain: the old names of handgrad.app.*


def __getattr__(name):
    # The bridge imports torch and the exporter onnx, so each loads only when first used:
    # ``handgrad.torch.convert(...)``, ``handgrad.onnx.export(...)``.
    if name in ("torch", "onnx"):
        import importlib

        return importlib.import_module(f"handgrad.{name}")
    raise AttributeError(f"module 'handgrad' has no attribute {name!r}")
