"""Layers, activations and losses with hand-written backward passes, under PyTorch's names."""

from . import init
from .activation import (
    ACTIVATIONS,
    ELU,
    GELU,
    ActivationDerivativeError,
    ElementwiseActivation,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    check_derivative,
    define_activation,
    get_activation,
    register_activation,
)
from .container import ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout, Dropout2d
from .linear import Flatten, Identity, Linear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import LAYERS, Module
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d

__all__ = [
    "init",
    "ACTIVATIONS",
    "ELU",
    "GELU",
    "ActivationDerivativeError",
    "ElementwiseActivation",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "Sigmoid",
    "SiLU",
    "Softmax",
    "Softplus",
    "Tanh",
    "check_derivative",
    "define_activation",
    "get_activation",
    "register_activation",
    "ModuleList",
    "Sequential",
    "Conv2d",
    "Dropout",
    "Dropout2d",
    "Flatten",
    "Identity",
    "Linear",
    "CrossEntropyLoss",
    "MSELoss",
    "NLLLoss",
    "LAYERS",
    "Module",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "Parameter",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "MaxPool2d",
    "MaxUnpool2d",
]
