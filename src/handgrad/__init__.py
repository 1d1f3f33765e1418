"""handgrad: a NumPy deep-learning library in which every layer's backward pass is written by hand."""
from . import functional, nn, optim
from ._grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._random import default_generator, manual_seed
from .errors import HandgradError
from .gradcheck import GradcheckReport, gradcheck
from .serialization import load, save

__version__ = "0.1.0"


def __getattr__(name):
    # The bridge imports torch, so it loads only when first used: ``handgrad.torch.convert(...)``.
    if name == "torch":
        import importlib
        return importlib.import_module("handgrad.torch")
    raise AttributeError(f"module 'handgrad' has no attribute {name!r}")
