"""The named models, each built for the dataset's input shape, and the architecture description
stored in checkpoints so ``handgrad.load`` can rebuild a model with no code from the user."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import nn


@dataclass(frozen=True)
class TrainDefaults:
    """Sensible training settings per model (the CLI's defaults)."""
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    schedule: str = "cosine"
    loss: str = "cross_entropy"  # or "mse" (on one-hot targets)


def _flat(shape):
    return int(np.prod(shape))


def _mlp(input_shape, num_classes, hidden, activation="relu"):
    act = nn.get_activation(activation)
    layers, width = [nn.Flatten()], _flat(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    return layers + [nn.Linear(width, num_classes)]


def _linear(input_shape, num_classes):
    return [nn.Flatten(), nn.Linear(_flat(input_shape), num_classes)]


def _mlp_sigmoid(input_shape, num_classes):
    return [nn.Flatten(), nn.Linear(_flat(input_shape), 100), nn.Sigmoid(), nn.Linear(100, num_classes), nn.Sigmoid()]


def _tiny_cnn(input_shape, num_classes):
    """Three 3x3 conv blocks (8, 16, 42 channels) and one Linear: ~11.1k parameters on 28x28."""
    c = input_shape[0]
    return [nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 42, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(42 * _pooled(input_shape[1], 3) * _pooled(input_shape[2], 3), num_classes)]


def _pooled(size, times):
    for _ in range(times):
        size //= 2
    return size


def _lenet5(input_shape, num_classes):
    """LeNet-5 with ReLU and max pooling: conv 5x5 (6) - pool - conv 5x5 (16) - pool - 120 - 84.
    On inputs smaller than 28x28 the second conv is padded so the maps do not vanish."""
    c, h, w = input_shape
    pad2 = 0 if min(h, w) // 2 >= 10 else 2
    h2, w2 = (h // 2 + 2 * pad2 - 4) // 2, (w // 2 + 2 * pad2 - 4) // 2
    return [nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * h2 * w2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes)]


#: name -> (builder, description, training defaults)
MODELS = {
    "linear": (_linear, "one Linear layer + softmax cross-entropy",
               TrainDefaults(lr=0.01, momentum=0.9, schedule="none")),
    "mlp-sigmoid": (_mlp_sigmoid, "784-100-10, sigmoid, MSE on one-hot targets",
                    TrainDefaults(lr=1.0, momentum=0.0, loss="mse")),  # momentum saturates the sigmoids early
    "mlp": (lambda s, n: _mlp(s, n, (250, 250)), "784-250-250-10, ReLU", TrainDefaults(lr=0.05, weight_decay=1e-3)),
    "mlp-small": (lambda s, n: _mlp(s, n, (128, 64)), "784-128-64-10, ReLU", TrainDefaults(lr=0.05)),
    "tiny-mlp": (lambda s, n: _mlp(s, n, (16,)), "784-16-10, ReLU (~12.7k parameters)", TrainDefaults(lr=0.05)),
    "tiny-cnn": (_tiny_cnn, "3 conv blocks 8-16-42 + Linear (~11.1k parameters)", TrainDefaults(lr=0.05)),
    "lenet5": (_lenet5, "LeNet-5: conv5-pool-conv5-pool-120-84, ReLU", TrainDefaults(lr=0.05, weight_decay=5e-4)),
}


def parse_layer_spec(spec: str, input_shape, num_classes):
    """A short layer spec, e.g. ``"conv16-pool-conv32-pool-fc128-dropout0.2"``:

    ``conv<C>[k<K>]`` (3x3 'same' conv + ReLU unless k is given), ``pool`` / ``avgpool`` (2x2),
    ``bn`` (BatchNorm), ``fc<N>`` (Linear + ReLU), ``dropout<P>``, or an activation name replacing
    the default ReLU of the previous layer (``fc128-tanh``). The final Linear to the classes is added.
    """
    layers, shape = [], tuple(input_shape)
    for token in [t for t in spec.replace(",", "-").split("-") if t]:
        t = token.lower()
        try:
            if t.startswith("conv"):
                body, _, k = t[4:].partition("k")
                k = int(k or 3)
                if len(shape) != 3:
                    raise ValueError("conv after fc")
                layers += [nn.Conv2d(shape[0], int(body), k, padding=k // 2), nn.ReLU()]
                shape = (int(body), shape[1] + 2 * (k // 2) - k + 1, shape[2] + 2 * (k // 2) - k + 1)
            elif t in ("pool", "maxpool", "avgpool"):
                layers.append(nn.AvgPool2d(2) if t == "avgpool" else nn.MaxPool2d(2))
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
            elif t == "bn":
                layers.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
            elif t.startswith("fc"):
                if len(shape) != 1:
                    layers.append(nn.Flatten())
                layers += [nn.Linear(_flat(shape), int(t[2:])), nn.ReLU()]
                shape = (int(t[2:]),)
            elif t.startswith("dropout"):
                layers.append(nn.Dropout(float(t[7:] or 0.5)))
            else:
                if not layers or not isinstance(layers[-1], nn.ReLU):
                    raise ValueError("an activation must follow conv or fc")
                layers[-1] = nn.get_activation(t)()
        except ValueError as e:
            raise ValueError(f"bad layer spec token {token!r} in {spec!r}: {e}") from None
    if len(shape) != 1:
        layers.append(nn.Flatten())
    return layers + [nn.Linear(_flat(shape), num_classes)]


def build_model(name: str = "mlp", input_shape=(1, 28, 28), num_classes: int = 10, hidden=None,
                activation: str = "relu", layers: str | None = None) -> nn.Sequential:
    """A named model for inputs of ``input_shape`` (C, H, W); or, with ``hidden`` (e.g. (512, 256))
    or a ``layers`` spec, a custom one (name is then ignored)."""
    input_shape = tuple(int(s) for s in input_shape)
    if layers:
        return nn.Sequential(*parse_layer_spec(layers, input_shape, num_classes))
    if hidden:
        return nn.Sequential(*_mlp(input_shape, num_classes, tuple(int(h) for h in hidden), activation))
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return nn.Sequential(*MODELS[name][0](input_shape, num_classes))


def defaults_for(name: str) -> TrainDefaults:
    return MODELS[name][2] if name in MODELS else TrainDefaults()


# -- architecture <-> JSON --------------------------------------------------------------------------
class _ConstructorArgs(Mapping):
    """Layer name -> ``constructor_args`` of that layer class, read from the layers' registry
    (``nn.LAYERS``, filled as each layer class is defined), so it is never out of date."""

    def __getitem__(self, name):
        return nn.LAYERS[name].constructor_args

    def __iter__(self):
        return iter(nn.LAYERS)

    def __len__(self):
        return len(nn.LAYERS)


#: ``CONSTRUCTOR_ARGS[name](layer) -> dict``: the arguments that rebuild a layer of that name.
CONSTRUCTOR_ARGS = _ConstructorArgs()


def architecture(model: nn.Sequential) -> list:
    """The model as a JSON-able list of ``{"type": ..., **constructor arguments}``."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"only nn.Sequential models can be described, got {type(model).__name__}")
    layers = []
    for layer in model:
        name = type(layer).__name__
        args = CONSTRUCTOR_ARGS.get(name, lambda m: {})(layer)
        layers.append({"type": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}})
    return layers


def from_architecture(layers: list) -> nn.Sequential:
    """Rebuild a Sequential from ``architecture(model)``; user activations are found by name."""
    built = []
    for spec in layers:
        spec = dict(spec)
        kind = spec.pop("type")
        cls = getattr(nn, kind, None)
        if cls is None or not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            cls = nn.get_activation(kind)
        built.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}))
    return nn.Sequential(*built)


def summary(model: nn.Sequential, input_shape) -> str:
    """A table of layers, output shapes and parameter counts (one forward of a zero batch)."""
    from ._grad_mode import no_grad

    x = np.zeros((1,) + tuple(input_shape), dtype=model.dtype)
    rows = [("layer", "output shape", "params")]
    was_training = model.training
    model.eval()
    with no_grad():
        for i, layer in enumerate(model):
            x = layer(x)
            rows.append((f"{i}: {layer!r}", str((None,) + x.shape[1:]).replace("None", "N"),
                         f"{layer.num_parameters():,}"))
    model.train(was_training)
    rows.append(("total", "", f"{model.num_parameters():,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


__all__ = ["MODELS", "TrainDefaults", "build_model", "defaults_for", "architecture", "from_architecture",
           "summary", "parse_layer_spec"]
