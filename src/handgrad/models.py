"""The named models, each built for the dataset's input shape, and the architecture description
stored in checkpoints so ``handgrad.load`` can rebuild a model with no code from the user."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import nn
from .errors import HandgradError, fmt_shape


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

    ``conv<C>[k<K>]`` (KxK 'same' conv + ReLU, K = 3 unless given), ``pool`` / ``avgpool`` (2x2),
    ``bn`` (BatchNorm), ``fc<N>`` (Linear + ReLU), ``dropout<P>``, or an activation name replacing
    the default ReLU of the previous layer (``fc128-tanh``). The final Linear to the classes is added.
    Sizes must be 1 to ``MAX_SIZE``; a token that would shrink the maps to nothing, or make a layer
    larger than ``MAX_ELEMENTS`` values per sample, is refused, naming it.
    """
    layers, shape = [], tuple(input_shape)
    tokens = [t for t in spec.replace(",", "-").split("-") if t.strip()]
    if not tokens:
        raise ValueError(f"empty layer spec {spec!r}; expected tokens such as conv16-pool-fc128")
    for position, token in enumerate(tokens, 1):
        t = token.strip().lower()
        try:
            if t.startswith("conv"):
                body, _, k = t[4:].partition("k")
                channels, k = _spec_int(body, "conv<C>[k<K>]", "conv16 or conv16k5"), _spec_int(k or "3", "k<K>", "k5")
                if len(shape) != 3:
                    raise ValueError("a conv must come before any fc")
                _check_parameters(channels * shape[0] * k * k)
                layers += [nn.Conv2d(shape[0], channels, k, padding=k // 2), nn.ReLU()]
                shape = (channels, shape[1] + 2 * (k // 2) - k + 1, shape[2] + 2 * (k // 2) - k + 1)
            elif t in ("pool", "maxpool", "avgpool"):
                if len(shape) != 3:
                    raise ValueError("a pool must come before any fc")
                if min(shape[1:]) < 2:
                    raise ValueError(f"it shrinks the {shape[1]}x{shape[2]} maps to nothing (input "
                                     f"{input_shape[-2]}x{input_shape[-1]}); use fewer pools")
                layers.append(nn.AvgPool2d(2) if t == "avgpool" else nn.MaxPool2d(2))
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
            elif t == "bn":
                layers.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
            elif t.startswith("fc"):
                width = _spec_int(t[2:], "fc<N>", "fc128")
                if len(shape) != 1:
                    layers.append(nn.Flatten())
                    shape = (_flat(shape),)
                _check_parameters(width * shape[0])
                layers += [nn.Linear(shape[0], width), nn.ReLU()]
                shape = (width,)
            elif t.startswith("dropout"):
                try:
                    p = float(t[7:] or 0.5)
                except ValueError:
                    raise ValueError("expected dropout<P> with 0 <= P < 1, e.g. dropout0.2") from None
                if not 0 <= p < 1:
                    raise ValueError(f"dropout probability must be from 0 to below 1, got {p}")
                layers.append(nn.Dropout(p))
            else:
                if not layers or not isinstance(layers[-1], nn.ReLU):
                    raise ValueError("an activation must follow conv or fc")
                layers[-1] = nn.get_activation(t)()
            if _flat(shape) > MAX_ELEMENTS:
                raise ValueError(f"it makes {_flat(shape)} values per sample {shape}, more than the limit {MAX_ELEMENTS}")
        except ValueError as e:
            raise ValueError(f"bad layer spec token {token!r} (number {position}) in {spec!r}: {e}") from None
    if len(shape) != 1:
        layers.append(nn.Flatten())
    return layers + [nn.Linear(_flat(shape), num_classes)]


def _check_parameters(count) -> None:
    if count > MAX_ELEMENTS:
        raise ValueError(f"it makes a layer of {count} weights, more than the limit {MAX_ELEMENTS}")


def _spec_int(text, form, example) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SIZE:
        raise ValueError(f"expected {form} with a size from 1 to {MAX_SIZE} (e.g. {example}), "
                         f"got {text!r}" if text else f"expected {form} (e.g. {example}), the size is missing")
    return int(text)


def build_model(name: str = "mlp", input_shape=(1, 28, 28), num_classes: int = 10, hidden=None,
                activation: str = "relu", layers: str | None = None) -> nn.Sequential:
    """A named model for inputs of ``input_shape`` (C, H, W); or, with ``hidden`` (e.g. (512, 256))
    or a ``layers`` spec, a custom one (name is then ignored)."""
    input_shape = tuple(int(s) for s in input_shape)
    if layers:
        return nn.Sequential(*parse_layer_spec(layers, input_shape, num_classes))
    if hidden:
        bad = [h for h in hidden if not 1 <= int(h) <= MAX_SIZE]
        if bad:
            raise ValueError(f"hidden sizes must be from 1 to {MAX_SIZE}, got {bad[0]} in {list(hidden)}")
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
    """Rebuild a Sequential from ``architecture(model)``; user activations are found by name.
    The description is checked first (``check_architecture``), so a bad one raises HandgradError."""
    check_architecture(layers)
    built = []
    for spec in layers:
        spec = dict(spec)
        cls = _layer_class(spec.pop("type"))
        built.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}))
    return nn.Sequential(*built)


# -- checking a stored architecture before anything is built --------------------------------------------
#: Limits on a stored architecture, so that a small file cannot ask for a large allocation: layers in
#: a model; any one size (features, channels, kernel, stride, padding, image side); values per sample
#: in any layer's output, and in a convolution's unfolded input.
MAX_LAYERS = 1024
MAX_SIZE = 1 << 20
MAX_ELEMENTS = 1 << 26

class _LayerArguments(Mapping):
    """Each storable layer type's keywords, name -> {keyword: (kind, required)}, read live from the
    layers' own ``arguments`` (``nn.LAYERS``), so a new layer needs no entry here. Kinds are checked
    by ``_check_value``."""

    def _table(self) -> dict:
        return {name: cls.arguments for name, cls in nn.LAYERS.items()
                if cls.arguments is not None and getattr(nn, name, None) is cls}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())


LAYER_ARGUMENTS = _LayerArguments()

_KIND_TEXT = {"size": f"an integer from 1 to {MAX_SIZE}", "size pair": f"an integer from 1 to {MAX_SIZE} or a "
              f"list of two", "padding pair": f"an integer from 0 to {MAX_SIZE} or a list of two",
              "bool": "true or false", "dim": "an integer from -8 to 7", "probability": "a number from 0 to 1",
              "positive number": "a finite number > 0", "momentum": "null or a number from 0 to 1",
              "number": "a finite number"}


def _layer_class(kind):
    if kind in LAYER_ARGUMENTS:
        return getattr(nn, kind)
    return nn.get_activation(kind)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and bool(np.isfinite(float(v)))


def _check_value(kind, v) -> bool:
    if kind == "size":
        return _is_int(v) and 1 <= v <= MAX_SIZE
    if kind in ("size pair", "padding pair"):
        low = 1 if kind == "size pair" else 0
        items = v if isinstance(v, (list, tuple)) else [v]
        return len(items) in (1, 2) and (len(items) == 2 or not isinstance(v, (list, tuple))) \
            and all(_is_int(i) and low <= i <= MAX_SIZE for i in items)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "dim":
        return _is_int(v) and -8 <= v < 8
    if kind == "probability":
        return _is_number(v) and 0 <= v <= 1
    if kind == "positive number":
        return _is_number(v) and v > 0
    if kind == "momentum":
        return v is None or _is_number(v) and 0 <= v <= 1
    return _is_number(v)


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pair(value, default):
    value = default if value is None else value
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _size(shape):
    """Values per sample, or None while a size is open."""
    return None if any(d is None or d is Ellipsis for d in shape) else int(np.prod(shape, dtype=np.int64))


def check_input_shape(value) -> tuple:
    """A stored input shape: (F,), (H, W) or (C, H, W) of sizes within the limits."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 3 or \
            not all(_is_int(v) and 1 <= v <= MAX_SIZE for v in value):
        raise HandgradError(None, f"'input_shape' must be a list of 1 to 3 integers from 1 to {MAX_SIZE}, "
                                  f"got {_brief(value)}")
    if _size(value) > MAX_ELEMENTS:
        raise HandgradError(None, f"'input_shape' {list(value)} holds {_size(value)} values per sample, more than "
                                  f"the limit {MAX_ELEMENTS}")
    return tuple(int(v) for v in value)


def check_architecture(layers, input_shape=None) -> tuple[dict, tuple]:
    """Check a stored architecture without building anything, so that a bad or hostile one is refused
    before any allocation.

    Every entry must be an object with a known ``type`` and only that type's keywords
    (``LAYER_ARGUMENTS``), each of the right kind and within ``MAX_SIZE``; and the shapes must chain
    layer by layer: a Linear's ``in_features`` is the number of features that reach it, a Conv2d's
    ``in_channels`` the channels, no map shrinks to nothing. With ``input_shape`` ((F,) or (C, H, W))
    every shape is known and each layer's output (and a convolution's unfolded input) is held to
    ``MAX_ELEMENTS`` values per sample.

    Returns ``({state_dict key: (shape, floating)}, output shape per sample)``; in the output shape
    ``None`` is a size the missing input shape leaves open and a leading ``...`` an open rank.
    Raises HandgradError naming the entry (``architecture layer 3 (Conv2d)``) and the field.
    """
    if not isinstance(layers, list) or not layers:
        raise HandgradError(None, f"'architecture' must be a non-empty list of layers, got {_brief(layers)}")
    if len(layers) > MAX_LAYERS:
        raise HandgradError(None, f"'architecture' has {len(layers)} layers, more than the limit {MAX_LAYERS}")
    shape = (...,) if input_shape is None else check_input_shape(input_shape)
    tensors = {}
    for i, spec in enumerate(layers):
        where = f"architecture layer {i}"
        if not isinstance(spec, dict):
            raise HandgradError(None, f"{where}: expected an object with a 'type', got {_brief(spec)}")
        kind = spec.get("type")
        if not isinstance(kind, str):
            raise HandgradError(None, f"{where}: " + ("missing 'type'" if kind is None else
                                                      f"'type' must be a string, got {_brief(kind)}"))
        try:
            cls = _layer_class(kind)
        except ValueError:
            known = sorted(set(LAYER_ARGUMENTS) | {c.__name__ for c in nn.ACTIVATIONS.values()})
            raise HandgradError(None, f"{where}: unknown type {_brief(kind)}; known: {', '.join(known)}") from None
        where = f"architecture layer {i} ({kind})"
        schema = LAYER_ARGUMENTS.get(cls.__name__, {})
        args = {k: v for k, v in spec.items() if k != "type"}
        unknown = [k for k in args if k not in schema]
        if unknown:
            takes = ", ".join(schema) if schema else "no keywords"
            raise HandgradError(None, f"{where}: unknown keyword {_brief(unknown[0])}; {kind} takes {takes}")
        missing = [k for k, (_, required) in schema.items() if required and k not in args]
        if missing:
            raise HandgradError(None, f"{where}: missing {', '.join(repr(k) for k in missing)}")
        for key, value in args.items():
            if not _check_value(schema[key][0], value):
                raise HandgradError(None, f"{where}: {key!r} must be {_KIND_TEXT[schema[key][0]]}, "
                                          f"got {_brief(value)}")
        shape = _next_shape(cls.__name__, args, shape, where, f"{i}.", tensors)
        size = _size(shape)
        if size is not None and size > MAX_ELEMENTS:
            raise HandgradError(None, f"{where}: outputs {size} values per sample {fmt_shape(shape)}, more than the "
                                      f"limit {MAX_ELEMENTS}")
    return tensors, shape


def _next_shape(name, a, shape, where, prefix, tensors) -> tuple:
    """The per-sample output shape of one checked layer; its parameters' shapes go into ``tensors``."""
    def given():
        return "shape " + ("unknown" if shape == (...,) else fmt_shape(shape).replace("Ellipsis", "..."))

    open_rank = shape[0] is Ellipsis
    if name == "Linear":
        fin, fout = a["in_features"], a["out_features"]
        if shape[-1] is not Ellipsis and shape[-1] is not None and shape[-1] != fin:
            raise HandgradError(None, f"{where}: 'in_features' is {fin}, but the layer before gives {shape[-1]} "
                                      f"features ({given()})")
        tensors[prefix + "weight"] = ((fout, fin), True)
        if a.get("bias", True):
            tensors[prefix + "bias"] = ((fout,), True)
        return (shape if shape[-1] is Ellipsis else shape[:-1]) + (fout,)
    if name in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d"):
        if not open_rank and len(shape) != 3:
            raise HandgradError(None, f"{where}: expects (C, H, W) maps per sample, but the layer before gives "
                                      f"{given()}")
        c, h, w = (None, None, None) if open_rank else shape
    if name == "BatchNorm2d" or name == "BatchNorm1d":
        nf = a["num_features"]
        if name == "BatchNorm1d" and not open_rank and len(shape) not in (1, 2):
            raise HandgradError(None, f"{where}: expects (C,) or (C, L) per sample, but the layer before gives "
                                      f"{given()}")
        channels = None if open_rank else shape[0]
        if channels is not None and channels != nf:
            raise HandgradError(None, f"{where}: 'num_features' is {nf}, but the layer before gives {channels} "
                                      f"channels ({given()})")
        if a.get("affine", True):
            tensors[prefix + "weight"] = tensors[prefix + "bias"] = ((nf,), True)
        if a.get("track_running_stats", True):
            tensors[prefix + "running_mean"] = tensors[prefix + "running_var"] = ((nf,), True)
            tensors[prefix + "num_batches_tracked"] = ((), False)
        return shape
    if name in ("Conv2d", "MaxPool2d", "AvgPool2d"):
        k = _pair(a["kernel_size"], None)
        s = _pair(a.get("stride"), 1 if name == "Conv2d" else k)
        p = _pair(a.get("padding"), 0)
        if name != "Conv2d" and any(pi > ki // 2 for pi, ki in zip(p, k)):
            raise HandgradError(None, f"{where}: 'padding' {list(p)} must be at most half of 'kernel_size' {list(k)}")
        channels = c
        if name == "Conv2d":
            if c is not None and c != a["in_channels"]:
                raise HandgradError(None, f"{where}: 'in_channels' is {a['in_channels']}, but the layer before "
                                          f"gives {c} channels ({given()})")
            channels = a["out_channels"]
            tensors[prefix + "weight"] = ((channels, a["in_channels"]) + k, True)
            if a.get("bias", True):
                tensors[prefix + "bias"] = ((channels,), True)
        out = []
        for axis, size, ki, si, pi in (("height", h, k[0], s[0], p[0]), ("width", w, k[1], s[1], p[1])):
            if size is None:
                out.append(None)
                continue
            if size + 2 * pi < ki:
                raise HandgradError(None, f"{where}: the kernel ({ki}) is larger than the padded {axis} "
                                          f"({size + 2 * pi}): the maps shrink to nothing ({given()})")
            out.append((size + 2 * pi - ki) // si + 1)
        if name == "Conv2d" and None not in out:
            unfolded = out[0] * out[1] * a["in_channels"] * k[0] * k[1]
            if unfolded > MAX_ELEMENTS:
                raise HandgradError(None, f"{where}: unfolds {unfolded} values per sample, more than the limit "
                                          f"{MAX_ELEMENTS}")
        return (channels, out[0], out[1])
    if name == "Flatten":
        start, end = a.get("start_dim", 1), a.get("end_dim", -1)
        if open_rank:
            return (None,) if (start, end) == (1, -1) else (...,)
        batched = (0,) + shape
        rank = len(batched)
        if not (-rank <= start < rank and -rank <= end < rank) or start % rank > end % rank:
            raise HandgradError(None, f"{where}: 'start_dim' {start} and 'end_dim' {end} do not fit inputs of "
                                      f"rank {rank} (N and {given()})")
        start, end = start % rank, end % rank
        if start == 0:
            return (...,)
        merged = _size(batched[start:end + 1])
        return batched[1:start] + (merged,) + batched[end + 1:]
    if name in ("Softmax", "LogSoftmax") and not open_rank:
        dim, rank = a.get("dim", -1), len(shape) + 1
        if not -rank <= dim < rank:
            raise HandgradError(None, f"{where}: 'dim' {dim} is out of range for inputs of rank {rank} "
                                      f"(N and {given()})")
    return shape


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
           "summary", "parse_layer_spec", "check_architecture", "check_input_shape", "MAX_LAYERS", "MAX_SIZE",
           "MAX_ELEMENTS"]
