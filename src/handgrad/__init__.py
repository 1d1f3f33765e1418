"""handgrad: a NumPy deep-learning library in which every layer's backward pass is written by hand."""
from . import functional, nn, optim
from ._grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._random import default_generator, manual_seed
from .errors import HandgradError
from .gradcheck import GradcheckReport, gradcheck
from .serialization import load, save

__version__ = "0.1.0"
