"""Optimizers and learning-rate schedulers with torch.optim's names, defaults and state_dict layout."""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lr_scheduler import *  # noqa: F403 (the schedulers, listed once: lr_scheduler.__all__)
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
__all__ += lr_scheduler.__all__
