"""The named models, each built for the dataset's input shape, and the architecture description
stored in checkpoints so ``handgrad.load`` can rebuild a model with no code from the user."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import nn
from .errors import HandgradError, fmt_shape
from .functional.pool import pool_output_size


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
    return [
        nn.Conv2d(c, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 42, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(42 * _pooled(input_shape[1], 3) * _pooled(input_shape[2], 3), num_classes),
    ]


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
    return [
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=pad2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * h2 * w2, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    ]


#: name -> (builder, description, training defaults)
MODELS = {
    "linear": (
        _linear,
        "one Linear layer + softmax cross-entropy",
        TrainDefaults(lr=0.01, momentum=0.9, schedule="none"),
    ),
    "mlp-sigmoid": (
        _mlp_sigmoid,
        "784-100-10, sigmoid, MSE on one-hot targets",
        TrainDefaults(lr=1.0, momentum=0.0, loss="mse"),
    ),  # momentum saturates the sigmoids early
    "mlp": (lambda s, n: _mlp(s, n, (250, 250)), "784-250-250-10, ReLU", TrainDefaults(lr=0.05, weight_decay=1e-3)),
    "mlp-small": (lambda s, n: _mlp(s, n, (128, 64)), "784-128-64-10, ReLU", TrainDefaults(lr=0.05)),
    "tiny-mlp": (lambda s, n: _mlp(s, n, (16,)), "784-16-10, ReLU (~12.7k parameters)", TrainDefaults(lr=0.05)),
    "tiny-cnn": (_tiny_cnn, "3 conv blocks 8-16-42 + Linear (~11.1k parameters)", TrainDefaults(lr=0.05)),
    "lenet5": (_lenet5, "LeNet-5: conv5-pool-conv5-pool-120-84, ReLU", TrainDefaults(lr=0.05, weight_decay=5e-4)),
}


# -- layer specs ------------------------------------------------------------------------------------
#: The layer tokens of a spec: kind -> (form, what it builds, example). The README's table says the same.
SPEC_TOKENS = {
    "conv": (
        "conv<C>[k<K>][s<S>][p<P>][nb]",
        "Conv2d to C channels, K x K kernel (default 3), stride S (1), zero "
        "padding P (K//2, 'same' at stride 1), then ReLU; nb: no bias",
        "conv16k5s1p2",
    ),
    "maxpool": (
        "maxpool[<K>][s<S>][p<P>]",
        "max pooling over K x K windows (default 2), stride S (K), padding P (0, at most K//2); pool is maxpool",
        "maxpool3s2p1",
    ),
    "avgpool": ("avgpool[<K>][s<S>][p<P>]", "average pooling, as maxpool (padding counts as zeros)", "avgpool2"),
    "adaptiveavg": (
        "adaptiveavg<N>",
        "adaptive average pooling to N x N maps (or <H>x<W>) whatever the size of the maps before",
        "adaptiveavg1",
    ),
    "fc": ("fc<N>[nb]", "Linear to N features (flattening the maps first), then ReLU; nb: no bias", "fc128"),
    "out": (
        "out[nb]",
        "the final Linear to the classes, appended when the spec has none; only an activation may follow it",
        "out-sigmoid",
    ),
    "bn": ("bn", "BatchNorm2d after a conv or pool, BatchNorm1d after an fc", "bn"),
    "ln": ("ln", "LayerNorm over each sample's features (all of C, H, W after maps)", "ln"),
    "dropout": ("dropout[<P>]", "Dropout with probability P (default 0.5)", "dropout0.2"),
}
#: Token heads, longest first so that ``maxpool3`` is not read as ``max`` + ...
_SPEC_HEADS = ("adaptiveavg", "maxpool", "avgpool", "dropout", "conv", "pool", "out", "fc", "bn", "ln")
#: Each layer's options after its size: letters with a value (``k5``, ``s2``, ``p1x0``), and ``nb``.
_SPEC_OPTIONS = {
    "conv": "ksp",
    "maxpool": "sp",
    "avgpool": "sp",
    "adaptiveavg": "",
    "fc": "",
    "out": "",
    "bn": "",
    "ln": "",
}
_OPTION_FORMS = {"k": ("k<K>", "k5 or k3x5", 1), "s": ("s<S>", "s2 or s2x1", 1), "p": ("p<P>", "p0 or p2x1", 0)}
_OPTION_RE = re.compile(r"nb|([a-z])(\d+(?:x\d+)?)?")


@dataclass(frozen=True)
class SpecToken:
    """One token of a layer spec: ``kind`` is a key of SPEC_TOKENS, "activation" or "none"; sizes
    are (h, w) pairs, None where the token leaves the default; ``position`` counts from 1."""

    position: int
    text: str
    kind: str
    size: int | None = None
    kernel: tuple | None = None
    stride: tuple | None = None
    padding: tuple | None = None
    bias: bool = True
    value: float | None = None  # dropout probability or leaky_relu slope
    activation: type | None = None
    output_size: tuple | None = None  # adaptiveavg's (h, w)


def spec_grammar() -> str:
    """What a spec token may be, in one line (used by the errors and ``--help``)."""
    acts = ", ".join(sorted(nn.ACTIVATIONS))
    return ", ".join(form for form, _, _ in SPEC_TOKENS.values()) + f", none, or an activation ({acts})"


def tokenize_layer_spec(spec: str) -> list:
    """The tokens of a layer spec, checked for syntax and order without any input shape (so a
    command can refuse a bad spec before loading data). Raises ValueError naming the token, its
    position and what is allowed there."""
    if not isinstance(spec, str):
        raise ValueError(f"a layer spec must be a string such as conv16-pool-fc128, got {type(spec).__name__}")
    texts = [t.strip() for t in spec.replace(",", "-").split("-") if t.strip()]
    if not texts:
        raise ValueError(f"empty layer spec {spec!r}; expected tokens such as conv16-pool-fc128")
    tokens: list[SpecToken] = []
    for position, text in enumerate(texts, 1):
        try:
            token = _parse_spec_token(position, text)
            _check_spec_order(token, tokens[-1] if tokens else None, any(t.kind == "out" for t in tokens))
        except ValueError as e:
            raise ValueError(f"bad layer spec token {text!r} (number {position}) in {spec!r}: {e}") from None
        tokens.append(token)
    return tokens


def _leading(pattern: str, text: str) -> str:
    """The start of ``text`` that ``pattern`` (which may match nothing) matches."""
    match = re.match(pattern, text)
    return match.group() if match else ""


def _parse_spec_token(position, text) -> SpecToken:
    t = text.lower()
    if t == "none":
        return SpecToken(position, text, "none")
    activation = _spec_activation(t)
    if activation is not None:
        return SpecToken(position, text, "activation", activation=activation[0], value=activation[1])
    head = next((h for h in _SPEC_HEADS if t.startswith(h)), None)
    if head is None:
        letters = _leading(r"[a-z_]*", t)
        close = difflib.get_close_matches(letters, list(_SPEC_HEADS) + ["none"] + sorted(nn.ACTIVATIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close and letters else ""
        raise ValueError(f"unknown token; expected {spec_grammar()}{hint}")
    kind, rest = ("maxpool" if head == "pool" else head), t[len(head) :]
    if kind == "dropout":
        try:
            p = float(rest or 0.5)
        except ValueError:
            raise ValueError("expected dropout<P> with 0 <= P < 1, e.g. dropout0.2") from None
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be from 0 to below 1, got {p}")
        return SpecToken(position, text, kind, value=p)
    size_text = _leading(r"(?:\d+(?:x\d+)?)?" if kind in ("maxpool", "avgpool", "adaptiveavg") else r"\d*", rest)
    fields: dict[str, Any] = {}
    if kind in ("conv", "fc"):
        symbol = "C" if kind == "conv" else "N"
        example = "conv16 or conv16k5" if kind == "conv" else "fc128"
        fields["size"] = _spec_int(size_text or rest, f"{kind}<{symbol}>", example)
    elif kind in ("maxpool", "avgpool"):
        fields["kernel"] = _spec_pair(size_text, f"{head}<K>", f"{head}3 or {head}2x1", 1) if size_text else (2, 2)
    elif kind == "adaptiveavg":
        fields["output_size"] = _spec_pair(size_text, "adaptiveavg<N>", "adaptiveavg1 or adaptiveavg4x3", 1)
    elif size_text:
        raise ValueError(f"{kind} takes no size" + (" (it has one output per class)" if kind == "out" else ""))
    fields.update(_spec_options(kind, rest[len(size_text) :], text[: len(head) + len(size_text)]))
    return SpecToken(position, text, kind, **fields)


def _spec_activation(t):
    """(class, slope or None) when ``t`` names an activation, ``leaky_relu0.2`` with its slope; else None."""
    try:
        return nn.get_activation(t), None
    except ValueError:
        pass
    m = re.fullmatch(r"([a-z_]+)(\d*\.?\d+)", t)
    if not m or m[1] not in nn.ACTIVATIONS:
        return None
    if nn.ACTIVATIONS[m[1]] is not nn.LeakyReLU:
        raise ValueError(f"{m[1]} takes no parameter; only leaky_relu takes one, its slope (e.g. leaky_relu0.1)")
    return nn.LeakyReLU, float(m[2])


def _spec_options(kind, rest, before) -> dict:
    """``k5s2p1nb`` -> {"kernel": (5, 5), "stride": (2, 2), "padding": (1, 1), "bias": False}."""
    letters, takes_nb = _SPEC_OPTIONS[kind], kind in ("conv", "fc", "out")
    fields: dict[str, Any] = {}
    i = 0
    names = {"k": "kernel", "s": "stride", "p": "padding", "nb": "bias"}
    while i < len(rest):
        m = _OPTION_RE.match(rest, i)
        key = None if not m else m[0] if m[0] == "nb" else m[1]
        if m is None or key is None or (key == "nb" and not takes_nb) or (key != "nb" and key not in letters):
            allowed = [_OPTION_FORMS[c][0] for c in letters] + (["nb"] if takes_nb else [])
            takes = f"{kind} takes {', '.join(allowed)}" if allowed else f"{kind} takes no options"
            raise ValueError(
                f"unexpected {rest[i:]!r} after {before + rest[:i]!r}; {takes} (the form is {SPEC_TOKENS[kind][0]})"
            )
        if names[key] in fields:
            raise ValueError(f"{key} is given twice")
        if key == "nb":
            fields["bias"] = False
        else:
            form, example, low = _OPTION_FORMS[key]
            fields[names[key]] = _spec_pair(m[2] or "", form, example, low)
        i = m.end()
    return fields


def _check_spec_order(token, previous, after_out) -> None:
    """The order rules that need no shapes: an activation replaces the ReLU of the conv or fc right
    before it (``none`` removes it), or follows ``out``; nothing else follows ``out``."""
    if token.kind in ("activation", "none"):
        follows = previous is not None and (
            previous.kind in ("conv", "fc") or previous.kind == "out" and token.kind == "activation"
        )
        if not follows:
            what = (
                "none must follow a conv or fc directly (it removes their ReLU)"
                if token.kind == "none"
                else "an activation must follow conv, fc or out directly "
                "(it replaces their ReLU, or is added after out)"
            )
            raise ValueError(what)
    elif after_out:
        raise ValueError("out must be the last layer token (only an activation may follow it)")


def _spec_int(text, form, example) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SIZE:
        raise ValueError(
            f"expected {form} with a size from 1 to {MAX_SIZE} (e.g. {example}), got {text!r}"
            if text
            else f"expected {form} (e.g. {example}), the size is missing"
        )
    return int(text)


def _spec_pair(text, form, example, low) -> tuple:
    """``"5"`` -> (5, 5); ``"3x5"`` -> (3, 5); each from ``low`` to MAX_SIZE."""
    parts = text.split("x")
    if not text or len(parts) > 2 or not all(p.isdigit() and low <= int(p) <= MAX_SIZE for p in parts):
        shown = f"got {text!r}" if text else "the value is missing"
        raise ValueError(
            f"expected {form} with a size from {low} to {MAX_SIZE}, or {form[:-3]}<H>x<W> (e.g. {example}), {shown}"
        )
    return (int(parts[0]), int(parts[-1]))


def parse_layer_spec(spec: str, input_shape, num_classes, bias: bool = True) -> list[nn.Module]:
    """The layers of a spec such as ``"conv8k5s1p2-maxpool3s2p1-fc120-sigmoid"``, for inputs of
    ``input_shape`` and ``num_classes`` outputs. Tokens are joined by ``-`` (or ``,``):

    - ``conv<C>[k<K>][s<S>][p<P>][nb]``: Conv2d to C channels, kernel K (3), stride S (1), padding
      P (K//2, which keeps the size at stride 1), then ReLU. K, S, P are ``<N>`` or ``<H>x<W>``.
    - ``maxpool[<K>][s<S>][p<P>]`` (``pool``) and ``avgpool[...]``: K x K windows (2), stride S (K),
      padding P (0). ``adaptiveavg<N>`` (or ``<H>x<W>``): adaptive average pooling to N x N maps.
    - ``fc<N>[nb]``: Linear to N features, then ReLU. ``bn``: BatchNorm. ``ln``: LayerNorm over
      each sample's features. ``dropout[<P>]`` (0.5).
    - an activation name (``tanh``, ``sigmoid``, ``leaky_relu0.1``...) replaces the ReLU of the conv
      or fc before it; ``none`` removes it.
    - ``out[nb]``: the final Linear to the classes, which is appended when absent; an activation may
      follow it (``fc100-sigmoid-out-sigmoid``).

    ``nb`` drops that layer's bias; ``bias=False`` drops every one. Each map size is
    ``(H + 2P - K) // S + 1``. Sizes must be 1 to ``MAX_SIZE``; a token that would shrink the maps to
    nothing, or make a layer larger than ``MAX_ELEMENTS`` values per sample, is refused, naming it.
    """
    tokens = tokenize_layer_spec(spec)
    input_shape = tuple(input_shape)
    layers: list[nn.Module] = []
    shape = input_shape
    for i, token in enumerate(tokens):
        previous = tokens[i - 1].kind if i else None
        try:
            shape = _add_spec_layer(layers, token, previous, shape, input_shape, num_classes, bias)
            if _flat(shape) > MAX_ELEMENTS:
                raise ValueError(
                    f"it makes {_flat(shape)} values per sample {shape}, more than the limit {MAX_ELEMENTS}"
                )
        except ValueError as e:
            raise ValueError(
                f"bad layer spec token {token.text!r} (number {token.position}) in {spec!r}: {e}"
            ) from None
    if not any(t.kind == "out" for t in tokens):
        _add_spec_layer(layers, SpecToken(0, "out", "out"), None, shape, input_shape, num_classes, bias)
    return layers


def _add_spec_layer(layers, token, previous, shape, input_shape, num_classes, bias) -> tuple:
    """Append ``token``'s layers to ``layers``; the per-sample shape after them."""
    kind = token.kind
    if kind in ("conv", "maxpool", "avgpool", "adaptiveavg") and len(shape) != 3:
        flat = len(input_shape) == 3
        raise ValueError(
            f"a {'pool' if kind != 'conv' else kind} must come before any fc"
            if flat
            else f"a {kind} needs (C, H, W) maps, but the input is {fmt_shape(input_shape)} per sample"
        )
    if kind == "conv":
        kernel = token.kernel or (3, 3)
        stride = token.stride or (1, 1)
        padding = token.padding if token.padding is not None else (kernel[0] // 2, kernel[1] // 2)
        _check_parameters(token.size * shape[0] * kernel[0] * kernel[1])
        h, w = _spec_window(shape, input_shape, kernel, stride, padding)
        if h * w * shape[0] * kernel[0] * kernel[1] > MAX_ELEMENTS:
            raise ValueError(
                f"it unfolds {h * w * shape[0] * kernel[0] * kernel[1]} values per sample, more than "
                f"the limit {MAX_ELEMENTS}"
            )
        layers += [
            nn.Conv2d(shape[0], token.size, kernel, stride=stride, padding=padding, bias=bias and token.bias),
            nn.ReLU(),
        ]
        return (token.size, h, w)
    if kind in ("maxpool", "avgpool"):
        kernel, padding = token.kernel, token.padding or (0, 0)
        stride = token.stride or kernel
        if any(p > k // 2 for p, k in zip(padding, kernel)):
            raise ValueError(
                f"padding {padding[0]}x{padding[1]} must be at most half of the {kernel[0]}x{kernel[1]} window"
            )
        h, w = _spec_window(shape, input_shape, kernel, stride, padding)
        layers.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(kernel, stride=stride, padding=padding))
        return (shape[0], h, w)
    if kind == "adaptiveavg":
        layers.append(nn.AdaptiveAvgPool2d(token.output_size))
        return (shape[0],) + token.output_size
    if kind in ("fc", "out"):
        if len(shape) != 1:
            layers.append(nn.Flatten())
            shape = (_flat(shape),)
        width = token.size if kind == "fc" else num_classes
        _check_parameters(width * shape[0])
        layers.append(nn.Linear(shape[0], width, bias=bias and token.bias))
        if kind == "fc":
            layers.append(nn.ReLU())
        return (width,)
    if kind == "bn":
        layers.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
    elif kind == "ln":
        layers.append(nn.LayerNorm(shape))
    elif kind == "dropout":
        layers.append(nn.Dropout(token.value))
    elif kind == "none":
        layers.pop()  # the ReLU of the conv or fc just before (tokenize_layer_spec checked the order)
    else:
        made = token.activation() if token.value is None else token.activation(token.value)
        if previous == "out":
            layers.append(made)
        else:
            layers[-1] = made
    return shape


def _spec_window(shape, input_shape, kernel, stride, padding) -> tuple:
    """(H, W) after a conv or pool: (H + 2P - K) // S + 1, refusing a window larger than the padded maps."""
    _, h, w = shape
    if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
        padded = f" padded to {h + 2 * padding[0]}x{w + 2 * padding[1]}" if any(padding) else ""
        raise ValueError(
            f"it shrinks the {h}x{w} maps to nothing (input {input_shape[-2]}x{input_shape[-1]}): its "
            f"{kernel[0]}x{kernel[1]} window is larger than the maps{padded}; use fewer pools, a "
            f"smaller kernel or more padding"
        )
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _check_parameters(count) -> None:
    if count > MAX_ELEMENTS:
        raise ValueError(f"it makes a layer of {count} weights, more than the limit {MAX_ELEMENTS}")


# -- initialisation ---------------------------------------------------------------------------------
#: ``--init`` choices: name -> (weight init from nn.init, what it draws). Every choice but
#: "default" sets the biases to 0, as the papers that define them do.
INITS = {
    "default": (
        None,
        "PyTorch's layer default: kaiming_uniform_ with a=sqrt(5), i.e. weight and bias "
        "U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
    ),
    "kaiming_uniform": (
        lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "U(-b, b), b = sqrt(6 / fan_in) (He, for ReLU)",
    ),
    "kaiming_normal": (lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), "N(0, 2 / fan_in) (He, for ReLU)"),
    "xavier_uniform": (nn.init.xavier_uniform_, "U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot)"),
    "xavier_normal": (nn.init.xavier_normal_, "N(0, 2 / (fan_in + fan_out)) (Glorot)"),
    "normal": (lambda w: nn.init.normal_(w, 0.0, 0.01), "N(0, 0.01^2)"),
    "zeros": (nn.init.zeros_, "all 0 (hidden units then stay identical: for one-layer models)"),
}


def init_parameters(model, init: str = "default") -> nn.Sequential:
    """Re-draw every Linear's and Conv2d's weight with ``INITS[init]`` (biases to 0), in layer order
    from handgrad's global generator; "default" keeps the weights the layers drew when built."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    fill = INITS[init][0]
    if fill is None:
        return model
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            fill(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


def build_model(
    name: str = "mlp",
    input_shape=(1, 28, 28),
    num_classes: int = 10,
    hidden=None,
    activation: str = "relu",
    layers: str | None = None,
    bias: bool = True,
    init: str = "default",
) -> nn.Sequential:
    """A named model for inputs of ``input_shape`` (C, H, W); or, with ``hidden`` (e.g. (512, 256))
    or a ``layers`` spec (see ``parse_layer_spec``), a custom one (name is then ignored).
    ``bias=False`` drops every Linear's and Conv2d's bias; ``init`` names how their weights are
    drawn (``INITS``)."""
    input_shape = tuple(int(s) for s in input_shape)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    if layers:
        return init_parameters(nn.Sequential(*parse_layer_spec(layers, input_shape, num_classes, bias=bias)), init)
    if hidden:
        bad = [h for h in hidden if not 1 <= int(h) <= MAX_SIZE]
        if bad:
            raise ValueError(f"hidden sizes must be from 1 to {MAX_SIZE}, got {bad[0]} in {list(hidden)}")
        model = nn.Sequential(*_mlp(input_shape, num_classes, tuple(int(h) for h in hidden), activation))
    elif name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    else:
        model = nn.Sequential(*MODELS[name][0](input_shape, num_classes))
    if not bias:
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                layer.bias = None
    return init_parameters(model, init)


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


def _registered(cls: type) -> bool:
    """Whether ``cls`` is the class a checkpoint's name for it finds (the registries' own)."""
    return nn.LAYERS.get(cls.__name__) is cls or nn.ACTIVATIONS.get(cls.__name__.lower()) is cls


def check_storable(i: int, cls: type[nn.Module]) -> None:
    """A layer class a checkpoint can name: handgrad's own, a user activation, or a user layer that
    says which keywords rebuild it (``arguments``, filled by ``constructor_args()``)."""
    if not _registered(cls):
        raise HandgradError(
            f"layer {i} ({cls.__name__})",
            "another layer class of that name was defined first "
            "(handgrad's or yours): a checkpoint could not tell "
            "them apart; rename the class",
        )
    if cls.arguments is None and not issubclass(cls, nn.ElementwiseActivation):
        raise HandgradError(
            f"layer {i} ({cls.__name__})",
            "cannot be stored in a checkpoint: give the class "
            "'arguments' (keyword -> (kind, required), e.g. "
            "{'features': ('size', True)}) and constructor_args()",
        )


def from_architecture(layers: list) -> nn.Sequential:
    """Rebuild a Sequential from ``architecture(model)``; user activations are found by name.
    The description is checked first (``check_architecture``), so a bad one raises HandgradError."""
    check_architecture(layers)
    built = []
    for i, spec in enumerate(layers):
        spec = dict(spec)
        kind = spec.pop("type")
        cls = _layer_class(kind)
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        if _builtin(cls):
            built.append(cls(**args))
            continue
        try:  # a user's class: its constructor is the plug-in's code, which may refuse these arguments
            built.append(cls(**args))
        except Exception as e:
            raise HandgradError(
                None,
                f"architecture layer {i} ({kind}): its constructor refused {_brief(spec)}: {type(e).__name__}: {e}",
            ) from None
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
        return {
            name: cls.arguments
            for name, cls in nn.LAYERS.items()
            if cls.arguments is not None and getattr(nn, name, None) is cls
        }

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())


LAYER_ARGUMENTS = _LayerArguments()

_KIND_TEXT = {
    "size": f"an integer from 1 to {MAX_SIZE}",
    "size pair": f"an integer from 1 to {MAX_SIZE} or a list of two",
    "padding pair": f"an integer from 0 to {MAX_SIZE} or a list of two",
    "bool": "true or false",
    "dim": "an integer from -8 to 7",
    "probability": "a number from 0 to 1",
    "positive number": "a finite number > 0",
    "momentum": "null or a number from 0 to 1",
    "number": "a finite number",
    "float dtype": 'null, "float32" or "float64"',
    "approximation": '"none" or "tanh"',
    "divisor": "null or a nonzero integer",
    "output size": f"an integer from 0 to {MAX_SIZE}, or a list of two such integers or nulls",
    "shape": f"an integer from 1 to {MAX_SIZE} or a list of 1 to 8 of them",
}


def _layer_class(kind):
    if kind in LAYER_ARGUMENTS:
        return getattr(nn, kind)
    return _user_layer(kind) or nn.get_activation(kind)


def _user_layer(kind):
    """A user's (a plug-in's) layer class of that name that declares its keywords, else None."""
    cls = nn.LAYERS.get(kind)
    return cls if cls is not None and cls.arguments is not None and not _builtin(cls) else None


def _builtin(cls) -> bool:
    return cls.__module__.startswith("handgrad.")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v):
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, (bool, np.bool_))
        and bool(np.isfinite(float(v)))
    )


def _check_value(kind, v) -> bool:
    if kind == "size":
        return _is_int(v) and 1 <= v <= MAX_SIZE
    if kind in ("size pair", "padding pair"):
        low = 1 if kind == "size pair" else 0
        items = v if isinstance(v, (list, tuple)) else [v]
        return (
            len(items) in (1, 2)
            and (len(items) == 2 or not isinstance(v, (list, tuple)))
            and all(_is_int(i) and low <= i <= MAX_SIZE for i in items)
        )
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
    if kind == "float dtype":
        return v in (None, "float32", "float64")
    if kind == "approximation":
        return v in ("none", "tanh")
    if kind == "divisor":
        return v is None or _is_int(v) and v != 0 and abs(v) <= MAX_SIZE
    if kind == "output size":
        items = v if isinstance(v, list) else [v, v]
        return len(items) == 2 and all(i is None or _is_int(i) and 0 <= i <= MAX_SIZE for i in items)
    if kind == "shape":
        items = v if isinstance(v, list) else [v]
        return 1 <= len(items) <= 8 and all(_is_int(i) and 1 <= i <= MAX_SIZE for i in items)
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
    if (
        not isinstance(value, (list, tuple))
        or not 1 <= len(value) <= 3
        or not all(_is_int(v) and 1 <= v <= MAX_SIZE for v in value)
    ):
        raise HandgradError(
            None, f"'input_shape' must be a list of 1 to 3 integers from 1 to {MAX_SIZE}, got {_brief(value)}"
        )
    if _size(value) > MAX_ELEMENTS:
        raise HandgradError(
            None,
            f"'input_shape' {list(value)} holds {_size(value)} values per sample, more than the limit {MAX_ELEMENTS}",
        )
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
    ``None`` is a size the missing input shape leaves open and a leading ``...`` an open rank. A
    plug-in's layer (a user class with ``arguments``) gets the key ``"<i>.*"`` with shape None: any
    floating tensors under its prefix; the shape after it is open.
    Raises HandgradError naming the entry (``architecture layer 3 (Conv2d)``) and the field.
    """
    if not isinstance(layers, list) or not layers:
        raise HandgradError(None, f"'architecture' must be a non-empty list of layers, got {_brief(layers)}")
    if len(layers) > MAX_LAYERS:
        raise HandgradError(None, f"'architecture' has {len(layers)} layers, more than the limit {MAX_LAYERS}")
    shape = (...,) if input_shape is None else check_input_shape(input_shape)
    tensors: dict[str, tuple[tuple | None, bool]] = {}
    for i, spec in enumerate(layers):
        where = f"architecture layer {i}"
        if not isinstance(spec, dict):
            raise HandgradError(None, f"{where}: expected an object with a 'type', got {_brief(spec)}")
        kind = spec.get("type")
        if not isinstance(kind, str):
            raise HandgradError(
                None,
                f"{where}: " + ("missing 'type'" if kind is None else f"'type' must be a string, got {_brief(kind)}"),
            )
        try:
            cls = _layer_class(kind)
        except ValueError:
            known = sorted(set(LAYER_ARGUMENTS) | {c.__name__ for c in nn.ACTIVATIONS.values()})
            raise HandgradError(
                None,
                f"{where}: unknown type {_brief(kind)}; known: {', '.join(known)} (a class "
                f"of your own: load its plug-in first, --plugin FILE.py)",
            ) from None
        where = f"architecture layer {i} ({kind})"
        schema = cls.arguments if _user_layer(kind) is cls else LAYER_ARGUMENTS.get(cls.__name__, {})
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
                raise HandgradError(None, f"{where}: {key!r} must be {_KIND_TEXT[schema[key][0]]}, got {_brief(value)}")
        if _user_layer(kind) is cls:
            # A plug-in's layer: its parameters and output shape are its own business. Its tensors
            # are taken as stored ("i.*"), and the strict load_state_dict checks them once built.
            tensors[f"{i}.*"] = (None, True)
            shape = (...,)
            continue
        shape = _next_shape(cls.__name__, args, shape, where, f"{i}.", tensors)
        size = _size(shape)
        if size is not None and size > MAX_ELEMENTS:
            raise HandgradError(
                None,
                f"{where}: outputs {size} values per sample {fmt_shape(shape)}, more than the limit {MAX_ELEMENTS}",
            )
    return tensors, shape


def _next_shape(name, a, shape, where, prefix, tensors) -> tuple:
    """The per-sample output shape of one checked layer; its parameters' shapes go into ``tensors``."""

    def given():
        return "shape " + ("unknown" if shape == (...,) else fmt_shape(shape).replace("Ellipsis", "..."))

    open_rank = shape[0] is Ellipsis
    if name == "Linear":
        fin, fout = a["in_features"], a["out_features"]
        if shape[-1] is not Ellipsis and shape[-1] is not None and shape[-1] != fin:
            raise HandgradError(
                None, f"{where}: 'in_features' is {fin}, but the layer before gives {shape[-1]} features ({given()})"
            )
        tensors[prefix + "weight"] = ((fout, fin), True)
        if a.get("bias", True):
            tensors[prefix + "bias"] = ((fout,), True)
        return (shape if shape[-1] is Ellipsis else shape[:-1]) + (fout,)
    if name in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d"):
        if not open_rank and len(shape) != 3:
            raise HandgradError(
                None, f"{where}: expects (C, H, W) maps per sample, but the layer before gives {given()}"
            )
        c, h, w = (None, None, None) if open_rank else shape
    if name == "BatchNorm2d" or name == "BatchNorm1d":
        nf = a["num_features"]
        if name == "BatchNorm1d" and not open_rank and len(shape) not in (1, 2):
            raise HandgradError(
                None, f"{where}: expects (C,) or (C, L) per sample, but the layer before gives {given()}"
            )
        channels = None if open_rank else shape[0]
        if channels is not None and channels != nf:
            raise HandgradError(
                None, f"{where}: 'num_features' is {nf}, but the layer before gives {channels} channels ({given()})"
            )
        if a.get("affine", True):
            tensors[prefix + "weight"] = ((nf,), True)
            if a.get("bias", True):
                tensors[prefix + "bias"] = ((nf,), True)
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
                raise HandgradError(
                    None,
                    f"{where}: 'in_channels' is {a['in_channels']}, but the layer before "
                    f"gives {c} channels ({given()})",
                )
            channels = a["out_channels"]
            tensors[prefix + "weight"] = ((channels, a["in_channels"]) + k, True)
            if a.get("bias", True):
                tensors[prefix + "bias"] = ((channels,), True)
        out: list[int | None] = []
        d, ceil_mode = _pair(a.get("dilation"), 1), bool(a.get("ceil_mode", False))
        for axis, size, ki, si, pi, di in (("height", h, k[0], s[0], p[0], d[0]), ("width", w, k[1], s[1], p[1], d[1])):
            if size is None:
                out.append(None)
                continue
            if size + 2 * pi < di * (ki - 1) + 1:
                raise HandgradError(
                    None,
                    f"{where}: the kernel ({ki}{f', dilation {di}' if di > 1 else ''}) is larger than the padded "
                    f"{axis} ({size + 2 * pi}): the maps shrink to nothing ({given()})",
                )
            out.append(pool_output_size(size, ki, si, pi, di, ceil_mode))
        rows, cols = out
        if name == "Conv2d" and rows is not None and cols is not None:
            unfolded = rows * cols * a["in_channels"] * k[0] * k[1]
            if unfolded > MAX_ELEMENTS:
                raise HandgradError(
                    None, f"{where}: unfolds {unfolded} values per sample, more than the limit {MAX_ELEMENTS}"
                )
        return (channels, rows, cols)
    if name == "AdaptiveAvgPool2d":
        if not open_rank and len(shape) != 3:
            raise HandgradError(
                None, f"{where}: expects (C, H, W) maps per sample, but the layer before gives {given()}"
            )
        c, h, w = (None, None, None) if open_rank else shape
        o = _pair(a["output_size"], None)
        return (c, h if o[0] is None else o[0], w if o[1] is None else o[1])
    if name == "Flatten":
        start, end = a.get("start_dim", 1), a.get("end_dim", -1)
        if open_rank:
            return (None,) if (start, end) == (1, -1) else (...,)
        batched = (0,) + shape
        rank = len(batched)
        if not (-rank <= start < rank and -rank <= end < rank) or start % rank > end % rank:
            raise HandgradError(
                None,
                f"{where}: 'start_dim' {start} and 'end_dim' {end} do not fit inputs of rank {rank} (N and {given()})",
            )
        start, end = start % rank, end % rank
        if start == 0:
            return (...,)
        merged = _size(batched[start : end + 1])
        return batched[1:start] + (merged,) + batched[end + 1 :]
    if name == "LayerNorm":
        normalized = a["normalized_shape"]
        normalized = tuple(normalized) if isinstance(normalized, list) else (normalized,)
        tail = shape[max(len(shape) - len(normalized), 0) :]
        if not open_rank and (
            len(tail) != len(normalized) or any(s is not None and s != n for s, n in zip(tail, normalized))
        ):
            raise HandgradError(
                None, f"{where}: 'normalized_shape' is {list(normalized)}, but the layer before gives {given()}"
            )
        if a.get("elementwise_affine", True):
            tensors[prefix + "weight"] = (normalized, True)
            if a.get("bias", True):
                tensors[prefix + "bias"] = (normalized, True)
        return shape
    if name in ("Softmax", "LogSoftmax") and not open_rank:
        dim, rank = a.get("dim", -1), len(shape) + 1
        if not -rank <= dim < rank:
            raise HandgradError(
                None, f"{where}: 'dim' {dim} is out of range for inputs of rank {rank} (N and {given()})"
            )
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
            rows.append(
                (f"{i}: {layer!r}", str((None,) + x.shape[1:]).replace("None", "N"), f"{layer.num_parameters():,}")
            )
    model.train(was_training)
    rows.append(("total", "", f"{model.num_parameters():,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


__all__ = [
    "MODELS",
    "TrainDefaults",
    "build_model",
    "defaults_for",
    "architecture",
    "from_architecture",
    "summary",
    "parse_layer_spec",
    "tokenize_layer_spec",
    "spec_grammar",
    "SpecToken",
    "SPEC_TOKENS",
    "INITS",
    "init_parameters",
    "check_architecture",
    "check_input_shape",
    "MAX_LAYERS",
    "MAX_SIZE",
    "MAX_ELEMENTS",
]
