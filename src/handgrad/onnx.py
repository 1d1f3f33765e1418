"""Export a handgrad model to ONNX, so that a trained model runs in onnxruntime (or any ONNX
runtime) with neither handgrad nor Python.

The graph computes the model in eval mode: Dropout is the identity, BatchNorm normalises with its
running statistics (or, without them, with the batch's own, as handgrad's eval does). Each layer
becomes one ONNX node (a few for BatchNorm without running statistics), named after its index;
the initializers keep handgrad's state_dict names (``"0.weight"``). The input is ``"input"`` of
shape (N, *input_shape) and the output ``"output"``; N is symbolic, so one file serves every batch
size. Opset 17 (IR version 8), in the model's dtype. The ``onnx`` package is imported only when
a model is exported.

Example::

    >>> model = handgrad.load("runs/digits-mlp/best.safetensors")
    >>> handgrad.onnx.export(model, "model.onnx")                      # input shape from the checkpoint
    >>> handgrad.onnx.export(net, "net.onnx", input_shape=(1, 28, 28))

A layer type with no exporter (a user-defined activation, say) is refused, naming it;
``register_exporter`` adds one.
"""

from __future__ import annotations

import json

import numpy as np

from . import nn
from .errors import HandgradError, fmt_shape
from .models import MAX_ELEMENTS

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17, so that runtimes older than the onnx package read it
INPUT, OUTPUT, BATCH = "input", "output", "N"
#: protobuf refuses to serialise a message of 2 GiB or more.
MAX_BYTES = (1 << 31) - (1 << 20)


class ExportError(HandgradError):
    """A model that cannot be written as ONNX: a layer with no exporter, a wrong input shape, ..."""


class Graph:
    """What exporters write into: the nodes and initializers of one ONNX graph, in ``dtype``."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.nodes, self.initializers = [], []

    def constant(self, name: str, value, dtype=None) -> str:
        """Store ``value`` as an initializer called ``name`` (in the graph's dtype unless ``dtype``)."""
        from onnx import numpy_helper

        value = np.ascontiguousarray(value, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs, name: str, **attributes) -> str:
        """Add one node; its single output is a tensor called ``name``, which is returned."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attributes))
        return name


#: layer class -> exporter(graph, layer, x, name, in_shape, out_shape) -> output tensor name. ``x``
#: is the input tensor's name, ``name`` the layer's state_dict prefix ("3", or "2.0" when nested),
#: the shapes are batched, with None where a size follows the batch size.
EXPORTERS: dict = {}


def register_exporter(cls):
    """Decorator: ``@register_exporter(MyLayer)`` over ``def f(graph, layer, x, name, in_shape,
    out_shape) -> str`` makes ``export`` write ``MyLayer`` with ``f``."""

    def register(fn):
        EXPORTERS[cls] = fn
        return fn

    return register


def _weights(graph, layer, name, *keys):
    return [graph.constant(f"{name}.{k}", getattr(layer, k).data) for k in keys if getattr(layer, k) is not None]


@register_exporter(nn.Linear)
def _linear(graph, layer, x, name, in_shape, out_shape):
    """y = x @ weight.T + bias: Gemm on (N, in_features); MatMul on the last axis of larger ranks."""
    if len(in_shape) == 2:
        return graph.node("Gemm", [x] + _weights(graph, layer, name, "weight", "bias"), name, transB=1)
    weight_t = graph.constant(f"{name}.weight.T", layer.weight.data.T)
    if layer.bias is None:
        return graph.node("MatMul", [x, weight_t], name)
    product = graph.node("MatMul", [x, weight_t], f"{name}.matmul")
    return graph.node("Add", [product, graph.constant(f"{name}.bias", layer.bias.data)], name)


@register_exporter(nn.Conv2d)
def _conv2d(graph, layer, x, name, in_shape, out_shape):
    (ph, pw) = layer.padding
    return graph.node(
        "Conv",
        [x] + _weights(graph, layer, name, "weight", "bias"),
        name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=[ph, pw, ph, pw],
    )


def _check_ceil_mode(layer, in_shape, out_shape) -> None:
    """ONNX (opset 17) rounds the output size up as torch's ceil_mode does, but keeps a last window
    that would start in the right padding, which torch drops: refused where that happens."""
    if not layer.ceil_mode:
        return
    dilation = getattr(layer, "dilation", (1, 1))
    for a in (0, 1):
        room = in_shape[2 + a] + 2 * layer.padding[a] - dilation[a] * (layer.kernel_size[a] - 1) - 1
        if -(-room // layer.stride[a]) + 1 != out_shape[2 + a]:
            raise ExportError(
                layer,
                f"with ceil_mode its last window on the {in_shape[2 + a]}-wide axis {2 + a} would start in the "
                f"right padding, which torch (and handgrad) drop but ONNX keeps; use ceil_mode=False or more padding",
            )


@register_exporter(nn.MaxPool2d)
def _max_pool2d(graph, layer, x, name, in_shape, out_shape):
    """ONNX's MaxPool ignores the padding, as handgrad's -inf padding does; dilations and ceil_mode
    as torch's."""
    _check_ceil_mode(layer, in_shape, out_shape)
    (ph, pw) = layer.padding
    return graph.node(
        "MaxPool",
        [x],
        name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=[ph, pw, ph, pw],
        dilations=list(layer.dilation),
        ceil_mode=int(layer.ceil_mode),
    )


@register_exporter(nn.AvgPool2d)
def _avg_pool2d(graph, layer, x, name, in_shape, out_shape):
    """AveragePool with count_include_pad and ceil_mode as the layer's; divisor_override has no
    ONNX attribute, so the sum is rescaled: AveragePool(count_include_pad=1) * kH*kW / divisor."""
    (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
    _check_ceil_mode(layer, in_shape, out_shape)
    if layer.divisor_override is not None and layer.ceil_mode:
        raise ExportError(
            layer, "divisor_override with ceil_mode does not export (ONNX's divisor of a clipped window differs)"
        )
    pooled = graph.node(
        "AveragePool",
        [x],
        name if layer.divisor_override is None else f"{name}.mean",
        kernel_shape=[kh, kw],
        strides=list(layer.stride),
        pads=[ph, pw, ph, pw],
        count_include_pad=int(layer.count_include_pad or layer.divisor_override is not None),
        ceil_mode=int(layer.ceil_mode),
    )
    if layer.divisor_override is None:
        return pooled
    scale = graph.constant(f"{name}.scale", np.array(kh * kw / layer.divisor_override))
    return graph.node("Mul", [pooled, scale], name)


@register_exporter(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool2d(graph, layer, x, name, in_shape, out_shape):
    """GlobalAveragePool for a 1 x 1 output; AveragePool of kernel = stride = H / oH where the output
    divides the input (the windows are then disjoint and equal, so exact); refused otherwise."""
    (h, w), (oh, ow) = in_shape[-2:], out_shape[-2:]
    if (oh, ow) == (1, 1):
        return graph.node("GlobalAveragePool", [x], name)
    if h % oh or w % ow:
        raise ExportError(
            layer,
            f"an adaptive pool of {h}x{w} maps to {oh}x{ow} has uneven windows, which ONNX has no operator "
            f"for; use an output size that divides the maps, or AvgPool2d",
        )
    return graph.node("AveragePool", [x], name, kernel_shape=[h // oh, w // ow], strides=[h // oh, w // ow])


@register_exporter(nn.Flatten)
def _flatten(graph, layer, x, name, in_shape, out_shape):
    """Flatten(axis=1) for the usual (start_dim=1, end_dim=-1); otherwise a Reshape that copies the
    axes before start_dim (0), merges start_dim..end_dim (-1) and keeps the static axes after."""
    rank = len(in_shape)
    start, end = layer.start_dim % rank, layer.end_dim % rank
    if start == 1 and end == rank - 1:
        return graph.node("Flatten", [x], name, axis=1)
    target = [0] * start + [-1] + [int(d) for d in in_shape[end + 1 :]]
    return graph.node("Reshape", [x, graph.constant(f"{name}.shape", target, np.int64)], name)


@register_exporter(nn.Dropout)
@register_exporter(nn.Dropout2d)
@register_exporter(nn.Identity)
def _identity(graph, layer, x, name, in_shape, out_shape):
    return graph.node("Identity", [x], name)


@register_exporter(nn.BatchNorm1d)
@register_exporter(nn.BatchNorm2d)
def _batch_norm(graph, layer, x, name, in_shape, out_shape):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel (axis 1). With running statistics
    one BatchNormalization node; without, the batch's mean and (biased) var, computed as handgrad does."""
    c = layer.num_features
    weight = layer.weight.data if layer.affine else np.ones(c)
    bias = layer.bias.data if layer.bias is not None else np.zeros(c)  # bias=False: a weight alone
    if layer.track_running_stats:
        inputs = [
            x,
            graph.constant(f"{name}.weight", weight),
            graph.constant(f"{name}.bias", bias),
            graph.constant(f"{name}.running_mean", layer.running_mean),
            graph.constant(f"{name}.running_var", layer.running_var),
        ]
        return graph.node("BatchNormalization", inputs, name, epsilon=layer.eps)
    axes = [0] + list(range(2, len(in_shape)))
    per_channel = (1, c) + (1,) * (len(in_shape) - 2)
    mean = graph.node("ReduceMean", [x], f"{name}.mean", axes=axes, keepdims=1)
    centred = graph.node("Sub", [x, mean], f"{name}.centred")
    var = graph.node(
        "ReduceMean", [graph.node("Mul", [centred, centred], f"{name}.square")], f"{name}.var", axes=axes, keepdims=1
    )
    std = graph.node(
        "Sqrt", [graph.node("Add", [var, graph.constant(f"{name}.eps", layer.eps)], f"{name}.var_eps")], f"{name}.std"
    )
    xhat = graph.node("Div", [centred, std], f"{name}.xhat")
    if not layer.affine:
        return graph.node("Identity", [xhat], name)
    scaled = graph.node("Mul", [xhat, graph.constant(f"{name}.weight", weight.reshape(per_channel))], f"{name}.scaled")
    return graph.node("Add", [scaled, graph.constant(f"{name}.bias", bias.reshape(per_channel))], name)


@register_exporter(nn.LayerNorm)
def _layer_norm(graph, layer, x, name, in_shape, out_shape):
    """LayerNormalization (opset 17) over the last len(normalized_shape) axes; without affine
    parameters, a weight of ones (and a bias of zeros where there is none)."""
    shape = layer.normalized_shape
    weight = layer.weight.data if layer.weight is not None else np.ones(shape)
    inputs = [x, graph.constant(f"{name}.weight", weight)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{name}.bias", layer.bias.data))
    return graph.node("LayerNormalization", inputs, name, axis=len(in_shape) - len(shape), epsilon=layer.eps)


def _elementwise(op, **attributes):
    def export_activation(graph, layer, x, name, in_shape, out_shape):
        return graph.node(op, [x], name, **{k: f(layer) for k, f in attributes.items()})

    return export_activation


EXPORTERS[nn.ReLU] = _elementwise("Relu")
EXPORTERS[nn.LeakyReLU] = _elementwise("LeakyRelu", alpha=lambda m: m.negative_slope)
EXPORTERS[nn.ELU] = _elementwise("Elu", alpha=lambda m: m.alpha)
EXPORTERS[nn.Sigmoid] = _elementwise("Sigmoid")
EXPORTERS[nn.Tanh] = _elementwise("Tanh")
EXPORTERS[nn.Softmax] = _elementwise("Softmax", axis=lambda m: m.dim)  # opset >= 13: along one axis, as handgrad
EXPORTERS[nn.LogSoftmax] = _elementwise("LogSoftmax", axis=lambda m: m.dim)


@register_exporter(nn.GELU)
def _gelu(graph, layer, x, name, in_shape, out_shape):
    """y = x * (1 + erf(x / sqrt(2))) / 2, or x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2: the
    formula in Erf or Tanh nodes (ONNX's own Gelu needs opset 20)."""
    if layer.approximate == "tanh":
        cube = graph.node("Mul", [x, graph.node("Mul", [x, x], f"{name}.square")], f"{name}.cube")
        cubic = graph.node("Mul", [cube, graph.constant(f"{name}.cubic", 0.044715)], f"{name}.cubic_term")
        inner = graph.node("Add", [x, cubic], f"{name}.inner")
        scaled = graph.node("Mul", [inner, graph.constant(f"{name}.scale", np.sqrt(2 / np.pi))], f"{name}.scaled")
        curve = graph.node("Tanh", [scaled], f"{name}.tanh")
    else:
        scaled = graph.node("Mul", [x, graph.constant(f"{name}.sqrt_half", np.sqrt(0.5))], f"{name}.scaled")
        curve = graph.node("Erf", [scaled], f"{name}.erf")
    one_plus = graph.node("Add", [curve, graph.constant(f"{name}.one", 1.0)], f"{name}.one_plus")
    half = graph.node("Mul", [one_plus, graph.constant(f"{name}.half", 0.5)], f"{name}.halved")
    return graph.node("Mul", [x, half], name)


@register_exporter(nn.SiLU)
def _silu(graph, layer, x, name, in_shape, out_shape):
    """y = x * sigmoid(x)"""
    return graph.node("Mul", [x, graph.node("Sigmoid", [x], f"{name}.sigmoid")], name)


@register_exporter(nn.Softplus)
def _softplus(graph, layer, x, name, in_shape, out_shape):
    """y = softplus(beta x) / beta, and x where beta x > threshold (ONNX's Softplus has no beta)."""
    bx = graph.node("Mul", [x, graph.constant(f"{name}.beta", layer.beta)], f"{name}.bx")
    curve = graph.node("Div", [graph.node("Softplus", [bx], f"{name}.softplus"), f"{name}.beta"], f"{name}.curve")
    linear = graph.node("Greater", [bx, graph.constant(f"{name}.threshold", layer.threshold)], f"{name}.linear")
    return graph.node("Where", [linear, x, curve], name)


def _layers(module, prefix=""):
    """(state_dict prefix, layer) for every layer, nested plain Sequentials opened up."""
    if type(module).forward is nn.Sequential.forward:
        for key, child in module.named_children():
            yield from _layers(child, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".") or type(module).__name__, module


def _trace(layers, input_shape, dtype):
    """Each layer's batched input and output shapes, None where a size follows the batch size: the
    model runs in eval mode on zero batches of 2 and 3 samples (2: BatchNorm on batch statistics
    needs more than one value per channel)."""
    from ._grad_mode import no_grad

    shapes = []
    for batch in (2, 3):
        x, seen = np.zeros((batch,) + input_shape, dtype), []
        with no_grad(), np.errstate(all="ignore"):
            for index, (_, layer) in enumerate(layers):
                try:
                    y = layer(x)
                except ValueError as e:  # HandgradError and NumPy's own shape errors
                    raise ExportError(
                        None,
                        f"input_shape {fmt_shape(input_shape)} does not fit the model at layer "
                        f"{index} (run on a batch of {batch}): {e}",
                    ) from None
                if isinstance(y, tuple):  # MaxPool2d(return_indices=True): the next layer would get a pair
                    raise ExportError(
                        layer,
                        f"layer {index} returns {len(y)} outputs, but a model passes on one tensor; "
                        "build it with return_indices=False to export",
                    )
                seen.append((x.shape, y.shape))
                x = y
        shapes.append(seen)

    def merge(a, b):
        if len(a) != len(b):
            raise ExportError(
                None,
                f"the model's output rank changes with the batch size ({fmt_shape(a)} for 2 "
                f"samples, {fmt_shape(b)} for 3)",
            )
        return tuple(d if d == e else None for d, e in zip(a, b))

    return [(merge(i2, i3), merge(o2, o3)) for (i2, o2), (i3, o3) in zip(*shapes)]


def _rename(graph, old, new) -> None:
    """Call the last layer's tensor ``new`` (the graph's output), through an Identity if it is the input."""
    if old == INPUT:
        graph.node("Identity", [old], new)
        return
    for node in graph.nodes:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new


def _value_info(name, elem_type, shape):
    from onnx import helper

    dims = [BATCH if d is None and i == 0 else d for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, elem_type, dims)


def to_onnx(model, input_shape=None, metadata: dict | None = None):
    """The ONNX ModelProto of ``model`` (an nn.Sequential or a single layer), checked by
    ``onnx.checker.check_model``; ``export`` writes it to a file.

    ``input_shape``: one sample's shape, e.g. (1, 28, 28); by default the checkpoint's
    (``model.metadata["input_shape"]``). ``metadata``: JSON-able values stored in the file's
    metadata_props (by default the checkpoint's input shape, normalisation, classes, loss, dataset
    and model name). Raises ExportError naming the layer that has no exporter, or the argument.
    """
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise ExportError(None, "ONNX export needs the onnx package: pip install 'handgrad[onnx]'") from None

    from . import __version__

    if not isinstance(model, nn.Module):
        raise ExportError(None, f"export takes a handgrad nn.Module, got {type(model).__name__}")
    stored = dict(getattr(model, "metadata", None) or {})
    if input_shape is None:
        if "input_shape" not in stored:
            raise ExportError(
                None,
                "export needs one sample's shape, such as (1, 28, 28) or (784,) (input_shape, "
                "or --input-shape on the command line): the model carries none",
            )
        input_shape = stored["input_shape"]
    if (
        not isinstance(input_shape, (list, tuple))
        or not input_shape
        or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    ):
        raise ExportError(
            None,
            f"input_shape must be one sample's shape, a tuple of positive integers such as "
            f"(1, 28, 28), got {input_shape!r}",
        )
    input_shape = tuple(int(d) for d in input_shape)
    if np.prod(input_shape, dtype=np.float64) > MAX_ELEMENTS:
        raise ExportError(
            None, f"input_shape {fmt_shape(input_shape)} holds more than {MAX_ELEMENTS} values per sample, the limit"
        )
    dtype = np.dtype(model.dtype)
    if dtype not in (np.float32, np.float64):
        raise ExportError(model, f"export writes float32 or float64 models, got {dtype.name}; convert with .to()")
    layers = list(_layers(model))
    if not layers:
        raise ExportError(model, "the model has no layers to export")
    for index, (_, layer) in enumerate(layers):
        if type(layer) not in EXPORTERS:
            known = ", ".join(sorted(cls.__name__ for cls in EXPORTERS))
            raise ExportError(
                layer,
                f"no ONNX exporter for layer type {type(layer).__name__} (layer {index}); "
                f"exportable: {known}; add one with handgrad.onnx.register_exporter",
            )
    size = sum(p.data.nbytes for p in model.parameters()) + sum(b.nbytes for b in model.buffers())
    if size > MAX_BYTES:
        raise ExportError(model, f"its {size / 2**30:.2f} GiB of weights exceed the 2 GiB an ONNX file can hold")

    was_training = model.training
    model.eval()
    try:
        shapes = _trace(layers, input_shape, dtype)
        graph, x = Graph(dtype), INPUT
        for (name, layer), (in_shape, out_shape) in zip(layers, shapes):
            x = EXPORTERS[type(layer)](graph, layer, x, name, in_shape, out_shape)
    finally:
        model.train(was_training)
    _rename(graph, x, OUTPUT)
    elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "handgrad",
        [_value_info(INPUT, elem_type, (None,) + input_shape)],
        [_value_info(OUTPUT, elem_type, shapes[-1][1])],
        graph.initializers,
    )
    proto = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="handgrad",
        producer_version=__version__,
        doc_string=repr(model),
    )
    proto.ir_version = IR_VERSION
    if metadata is None:
        metadata = {
            k: stored[k]
            for k in ("input_shape", "normalization", "classes", "loss", "dataset", "model")
            if stored.get(k) is not None
        }
        metadata["input_shape"] = list(input_shape)
    helper.set_model_props(proto, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, input_shape=None, metadata: dict | None = None):
    """Write ``model`` as an ONNX file at ``path``, atomically (``to_onnx`` says what is written);
    returns the ModelProto.

    Example::

        >>> from handgrad.models import build_model
        >>> handgrad.onnx.export(build_model("lenet5"), "lenet5.onnx", input_shape=(1, 28, 28))
    """
    from .files import atomic_write_bytes

    proto = to_onnx(model, input_shape, metadata)
    atomic_write_bytes(path, proto.SerializeToString())
    return proto


__all__ = ["export", "to_onnx", "register_exporter", "EXPORTERS", "ExportError", "Graph", "OPSET"]
