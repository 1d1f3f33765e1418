"""The PyTorch bridge: every handgrad op as a ``torch.autograd.Function`` whose forward and backward
run handgrad's own NumPy math (``handgrad.functional``), and ``torch.nn`` twins that swap in one for
one. The only module of handgrad that imports torch; ``import handgrad`` never loads it.

Three layers, each wrapping the one below and adding no math:

1. Functions (``LinearFunction``, ``Conv2dFunction``, ``MaxPool2dFunction``, ``AvgPool2dFunction``,
   ``ReLUFunction``, ``LeakyReLUFunction``, ``SigmoidFunction``, ``TanhFunction``,
   ``CrossEntropyFunction``, ``MSELossFunction``, ``ElementwiseFunction``). forward turns the
   tensors into NumPy arrays that share their memory, calls ``<op>_forward``, hands the arrays of the
   cache to ``ctx.save_for_backward`` (as the very input/output tensors where they are those) and
   returns the output as a tensor over the same memory. backward rebuilds the cache from
   ``ctx.saved_tensors`` and calls ``<op>_backward`` with ``ctx.needs_input_grad``.
2. Lower-case functions (``linear``, ``conv2d``, ``max_pool2d``, ..., ``cross_entropy``) taking
   torch.nn.functional's arguments.
3. Modules: ``Linear``, ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``ReLU``, ``LeakyReLU``,
   ``Sigmoid``, ``Tanh``, ``CrossEntropyLoss``, ``MSELoss`` are subclasses of their ``torch.nn``
   namesakes that replace only ``forward``: same constructor, parameters, initialisation, repr and
   state_dict keys. ``Activation`` wraps a user-defined element-wise activation. ``convert(model)``
   switches every supported layer of a torch model to its twin.

Checkpoints: ``save(module, path)`` writes a handgrad checkpoint from a torch Sequential and
``load(path)`` rebuilds one as a torch Sequential of twins (``to_handgrad`` / ``from_handgrad``).

Tensors must be on the CPU, strided, float32 or float64 (class targets: integer); double backward is
refused with a message saying so.

Example::

    >>> import torch, handgrad.torch as ht
    >>> model = ht.convert(torch.nn.Sequential(torch.nn.Linear(784, 10)))
    >>> loss = ht.CrossEntropyLoss()(model(torch.randn(32, 784)), torch.randint(0, 10, (32,)))
    >>> loss.backward()          # runs functional.linear_backward and cross_entropy_backward
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from . import functional as F
from . import kernels
from . import nn as hnn
from .errors import DTypeError, HandgradError, ShapeError, fmt_shape
from .nn.conv import check_window_fits
from .nn.loss import check_class_targets

FLOAT_DTYPES = (torch.float32, torch.float64)


class DeviceError(HandgradError, RuntimeError):
    """A tensor handed to the bridge is not a strided CPU tensor."""


class UnsupportedError(HandgradError):
    """A torch.nn option the bridge does not implement (e.g. Conv2d's dilation or groups)."""


# -- tensors <-> arrays -------------------------------------------------------------------------------
def _array(where, name, tensor, floating=True) -> np.ndarray:
    """The tensor's data as a NumPy array over the same memory (no copy)."""
    if not isinstance(tensor, torch.Tensor):
        raise HandgradError(where, f"expected {name} to be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise DeviceError(where, f"{name} is on {tensor.device}, but handgrad runs on the CPU: move the tensor "
                                 f"with .cpu() (and the model with model.cpu()), or keep this layer as torch.nn")
    if tensor.layout != torch.strided:
        raise DeviceError(where, f"expected {name} to be a dense (strided) tensor, got layout {tensor.layout}; "
                                 f"use .to_dense()")
    if floating and tensor.dtype not in FLOAT_DTYPES:
        raise DTypeError(where, f"expected {name} of dtype float32 or float64, got {tensor.dtype}; "
                                f"convert it with .float() or .double()")
    return tensor.detach().numpy()


def _same_dtype(where, reference: str, arrays: dict) -> None:
    """Every floating array must have the dtype of ``arrays[reference]`` (handgrad never casts)."""
    dtype = arrays[reference].dtype
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise DTypeError(where, f"expected {name} of dtype {dtype.name} (the {reference}'s), got {a.dtype.name}; "
                                    f"convert the model or the input with .to() so they agree")


def _tensor(a, avoid=()) -> torch.Tensor:
    """A NumPy result as a tensor over the same memory. Copied only when torch may not own it as it
    is: read-only, or sharing memory with an input (an output must not alias an input)."""
    a = np.asarray(a)
    if not a.flags.writeable or any(np.may_share_memory(a, other) for other in avoid):
        a = a.copy()
    return torch.from_numpy(a)


def _upstream(grad_output) -> np.ndarray:
    """dL/doutput as an array over the tensor's memory (read only by every functional backward)."""
    return grad_output.detach().numpy()


def _grads(*grads):
    return tuple(None if g is None else _tensor(g) for g in grads)


# -- the cache through save_for_backward ---------------------------------------------------------------
class _Slot:
    """Where the i-th saved tensor goes back into the cache."""
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


def _save_cache(ctx, cache, known) -> None:
    """Save every array of ``cache`` with ``ctx.save_for_backward``; the rest (shapes, flags,
    strides) stays on ``ctx``. An array that *is* an input's or the output's view is saved as that
    tensor, so autograd's version check catches an in-place change made before backward."""
    tensors = []

    def pack(item):
        if isinstance(item, tuple):
            return tuple(pack(part) for part in item)
        if isinstance(item, np.ndarray):
            tensor = next((t for a, t in known if a is item), None)
            tensors.append(_tensor(item) if tensor is None else tensor)
            return _Slot(len(tensors) - 1)
        return item

    ctx.cache_layout = pack(cache)
    ctx.save_for_backward(*tensors)


def _load_cache(ctx):
    arrays = [t.detach().numpy() for t in ctx.saved_tensors]

    def unpack(item):
        if isinstance(item, tuple):
            return tuple(unpack(part) for part in item)
        return arrays[item.index] if isinstance(item, _Slot) else item

    return unpack(ctx.cache_layout)


def _finish(ctx, out, cache, inputs) -> torch.Tensor:
    """Wrap the forward's output and save its cache. ``inputs``: (array, tensor) pairs."""
    out = np.asarray(out)
    # contiguous like torch's own outputs (Conv2d's arrives as a transposed view), so .view() works
    out_tensor = _tensor(out if out.flags.c_contiguous else np.ascontiguousarray(out), avoid=[a for a, _ in inputs])
    _save_cache(ctx, cache, list(inputs) + [(out, out_tensor)])
    return out_tensor


# -- double backward -------------------------------------------------------------------------------
def _double_backward_message(name):
    return (f"handgrad.torch.{name}: double backward is not supported. Its backward is handgrad's "
            f"hand-written NumPy code, which autograd cannot differentiate again (create_graph=True, "
            f"torch.autograd.grad of a gradient, gradient penalties, Hessians). Use the torch.nn layer "
            f"for this part of the model: handgrad.torch.convert leaves any layer you do not convert alone.")


class _RefuseDoubleBackward(torch.autograd.Function):
    """Identity on the gradients a hand-written backward returned under create_graph=True; raises
    if autograd ever tries to differentiate through them."""

    @staticmethod
    def forward(ctx, name, anchor, *grads):
        ctx.name = name
        return tuple(g.clone() for g in grads)

    @staticmethod
    def backward(ctx, *grad_grads):
        raise RuntimeError(_double_backward_message(ctx.name))


_ANCHOR = torch.zeros((), requires_grad=True)  # makes the refusing node part of any second graph


def hand_written(name):
    """Decorate a Function's backward: run it without recording a graph and, when autograd is asked
    to record one (create_graph=True), return gradients whose own backward raises a clear error.
    The same contract as ``torch.autograd.function.once_differentiable``, with a message that
    names the op and says what to do."""
    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grad_outputs):
            with torch.no_grad():
                grads = backward(ctx, *grad_outputs)
            grads = grads if isinstance(grads, tuple) else (grads,)
            if not torch.is_grad_enabled():
                return grads
            present = [g for g in grads if g is not None]
            refused = iter(_RefuseDoubleBackward.apply(name, _ANCHOR, *present)) if present else iter(())
            return tuple(None if g is None else next(refused) for g in grads)
        return wrapper
    return decorate


def _needs(ctx, count=1):
    return tuple(ctx.needs_input_grad[:count])


def _pair_arg(where, name, value, minimum=1):
    try:
        v = F.pair(value)
    except (TypeError, ValueError):
        raise HandgradError(where, f"expected {name} to be an int or a pair of ints, got {value!r}") from None
    if min(v) < minimum:
        raise HandgradError(where, f"expected {name} >= {minimum}, got {value!r}")
    return v


# -- Functions ---------------------------------------------------------------------------------------
class LinearFunction(torch.autograd.Function):
    """y = x @ weight.T + bias with handgrad's backward (``functional/linear.py``):
    grad_input = G @ weight, grad_weight = G.T @ x, grad_bias = G.sum(rows), each only if asked.

    ``LinearFunction.apply(input (*, in), weight (out, in), bias (out,) or None) -> (*, out)``
    """

    @staticmethod
    def forward(ctx, input, weight, bias=None):
        where = "LinearFunction"
        x, w = _array(where, "input", input), _array(where, "weight", weight)
        b = None if bias is None else _array(where, "bias", bias)
        _same_dtype(where, "input", {"input": x, "weight": w, "bias": b})
        if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1] or (b is not None and b.shape != w.shape[:1]):
            raise ShapeError(where, f"expected input (*, in_features), weight (out_features, in_features) and bias "
                                    f"(out_features,); got input {fmt_shape(x.shape)}, weight {fmt_shape(w.shape)}, "
                                    f"bias {None if b is None else fmt_shape(b.shape)}")
        out, cache = kernels.op("linear_forward")(x, w, b)
        return _finish(ctx, out, cache, [(x, input), (w, weight)])

    @staticmethod
    @hand_written("LinearFunction")
    def backward(ctx, grad_output):
        return _grads(*kernels.op("linear_backward")(_upstream(grad_output), _load_cache(ctx), _needs(ctx, 3)))


class Conv2dFunction(torch.autograd.Function):
    """2-D cross-correlation through im2col, with handgrad's backward (``functional/conv.py``):
    grad_weight = G.T @ cols, grad_bias = G.sum(rows), grad_input = col2im(G @ W). Only the unfolded
    input (cols) and the weight are saved, not the input.

    ``Conv2dFunction.apply(input (N, C, H, W), weight (O, C, kH, kW), bias (O,) or None, stride, padding)``
    """

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0):
        where = "Conv2dFunction"
        x, w = _array(where, "input", input), _array(where, "weight", weight)
        b = None if bias is None else _array(where, "bias", bias)
        _same_dtype(where, "input", {"input": x, "weight": w, "bias": b})
        stride, padding = _pair_arg(where, "stride", stride), _pair_arg(where, "padding", padding, minimum=0)
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] or (b is not None and b.shape != w.shape[:1]):
            raise ShapeError(where, f"expected input (N, C, H, W), weight (O, C, kH, kW) and bias (O,) with one C; "
                                    f"got input {fmt_shape(x.shape)}, weight {fmt_shape(w.shape)}, "
                                    f"bias {None if b is None else fmt_shape(b.shape)}")
        check_window_fits(where, x, w.shape[2:], padding)
        out, cache = F.conv2d_forward(x, w, b, stride, padding)
        return _finish(ctx, out, cache, [(x, input), (w, weight)])

    @staticmethod
    @hand_written("Conv2dFunction")
    def backward(ctx, grad_output):
        grads = F.conv2d_backward(_upstream(grad_output), _load_cache(ctx), _needs(ctx, 3))
        return _grads(*grads) + (None, None)


def _pool_args(where, x, kernel_size, stride, padding):
    kernel_size = _pair_arg(where, "kernel_size", kernel_size)
    stride = kernel_size if stride is None or stride == [] else _pair_arg(where, "stride", stride)
    padding = _pair_arg(where, "padding", padding, minimum=0)
    if x.ndim != 4:
        raise ShapeError(where, f"expected input of shape (N, C, H, W) (4-D), got {fmt_shape(x.shape)}")
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise HandgradError(where, f"padding {padding} should be at most half of kernel_size {kernel_size}")
    check_window_fits(where, x, kernel_size, padding)
    return kernel_size, stride, padding


class MaxPool2dFunction(torch.autograd.Function):
    """Max over each window; backward (``functional/pool.py``) sends each window's gradient to its
    first maximum, kept from forward as a small integer index.

    ``MaxPool2dFunction.apply(input (N, C, H, W), kernel_size, stride=None, padding=0)``
    """

    @staticmethod
    def forward(ctx, input, kernel_size, stride=None, padding=0):
        x = _array("MaxPool2dFunction", "input", input)
        out, cache = F.max_pool2d_forward(x, *_pool_args("MaxPool2dFunction", x, kernel_size, stride, padding))
        return _finish(ctx, out, cache, [(x, input)])

    @staticmethod
    @hand_written("MaxPool2dFunction")
    def backward(ctx, grad_output):
        return _grads(F.max_pool2d_backward(_upstream(grad_output), _load_cache(ctx))) + (None, None, None)


class AvgPool2dFunction(torch.autograd.Function):
    """Mean over each window (zero padding counted, as torch's default); backward spreads
    G / (kH*kW) over each window (``functional/pool.py``). Nothing but shapes is saved."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride=None, padding=0):
        x = _array("AvgPool2dFunction", "input", input)
        out, cache = F.avg_pool2d_forward(x, *_pool_args("AvgPool2dFunction", x, kernel_size, stride, padding))
        return _finish(ctx, out, cache, [(x, input)])

    @staticmethod
    @hand_written("AvgPool2dFunction")
    def backward(ctx, grad_output):
        return _grads(F.avg_pool2d_backward(_upstream(grad_output), _load_cache(ctx))) + (None, None, None)


class _ActivationFunction(torch.autograd.Function):
    """An activation whose math is a functional ``_forward``/``_backward`` pair of one argument."""

    @classmethod
    def _run(cls, ctx, input, *args):
        x = _array(cls.__name__, "input", input)
        out, cache = cls._forward(x, *args)
        return _finish(ctx, out, cache, [(x, input)])

    @classmethod
    def _grad(cls, ctx, grad_output, extra):
        return _grads(cls._backward(_upstream(grad_output), _load_cache(ctx))) + (None,) * extra


class ReLUFunction(_ActivationFunction):
    """y = max(x, 0);  dL/dx = G * [y > 0]  (the output is saved, not the input)."""
    _forward, _backward = staticmethod(F.relu_forward), staticmethod(F.relu_backward)

    @staticmethod
    def forward(ctx, input):
        return ReLUFunction._run(ctx, input)

    @staticmethod
    @hand_written("ReLUFunction")
    def backward(ctx, grad_output):
        return ReLUFunction._grad(ctx, grad_output, 0)


class LeakyReLUFunction(_ActivationFunction):
    """y = x if x > 0 else negative_slope * x;  dL/dx = G * (1 if x > 0 else negative_slope)."""
    _forward, _backward = staticmethod(F.leaky_relu_forward), staticmethod(F.leaky_relu_backward)

    @staticmethod
    def forward(ctx, input, negative_slope=0.01):
        return LeakyReLUFunction._run(ctx, input, float(negative_slope))

    @staticmethod
    @hand_written("LeakyReLUFunction")
    def backward(ctx, grad_output):
        return LeakyReLUFunction._grad(ctx, grad_output, 1)


class SigmoidFunction(_ActivationFunction):
    """y = 1 / (1 + exp(-x));  dL/dx = G * y * (1 - y)  (the output is saved)."""
    _forward, _backward = staticmethod(F.sigmoid_forward), staticmethod(F.sigmoid_backward)

    @staticmethod
    def forward(ctx, input):
        return SigmoidFunction._run(ctx, input)

    @staticmethod
    @hand_written("SigmoidFunction")
    def backward(ctx, grad_output):
        return SigmoidFunction._grad(ctx, grad_output, 0)


class TanhFunction(_ActivationFunction):
    """y = tanh(x);  dL/dx = G * (1 - y^2)  (the output is saved)."""
    _forward, _backward = staticmethod(F.tanh_forward), staticmethod(F.tanh_backward)

    @staticmethod
    def forward(ctx, input):
        return TanhFunction._run(ctx, input)

    @staticmethod
    @hand_written("TanhFunction")
    def backward(ctx, grad_output):
        return TanhFunction._grad(ctx, grad_output, 0)


class ElementwiseFunction(torch.autograd.Function):
    """A user-defined activation y = function(x), dL/dx = G * derivative(x), both element-wise on
    NumPy arrays (``functional.elementwise_forward/backward``).

    ``ElementwiseFunction.apply(input, function, derivative)``
    """

    @staticmethod
    def forward(ctx, input, function, derivative):
        x = _array("ElementwiseFunction", "input", input)
        out, cache = F.elementwise_forward(x, function)
        if out.shape != x.shape:
            raise ShapeError("ElementwiseFunction", f"the activation function must be element-wise: input "
                                                    f"{fmt_shape(x.shape)} gave {fmt_shape(out.shape)}")
        ctx.derivative = derivative
        return _finish(ctx, out, cache, [(x, input)])

    @staticmethod
    @hand_written("ElementwiseFunction")
    def backward(ctx, grad_output):
        return _grads(F.elementwise_backward(_upstream(grad_output), _load_cache(ctx), ctx.derivative)) + (None, None)


def _reduction(where, reduction):
    if reduction not in F.loss.REDUCTIONS:
        raise HandgradError(where, f"reduction must be one of {F.loss.REDUCTIONS}, got {reduction!r}")
    return reduction


class CrossEntropyFunction(torch.autograd.Function):
    """Softmax cross-entropy, fused: loss_n = logsumexp(x_n) - x_n[target_n]. Backward
    (``functional/loss.py``): dL/dx_n = (softmax(x_n) - onehot(target_n)) * dL/dloss_n (/ N for mean).
    softmax(x) and the targets are saved, not the logits.

    ``CrossEntropyFunction.apply(input (N, C), target (N,) integer, reduction='mean')``
    """

    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        where = "CrossEntropyFunction"
        x, t = _array(where, "input", input), _array(where, "target", target, floating=False)
        check_class_targets(where, x, t)
        loss, cache = kernels.op("cross_entropy_forward")(x, t, _reduction(where, reduction))
        return _finish(ctx, loss, cache, [(x, input), (t, target)])

    @staticmethod
    @hand_written("CrossEntropyFunction")
    def backward(ctx, grad_output):
        return _grads(kernels.op("cross_entropy_backward")(_upstream(grad_output), _load_cache(ctx))) + (None, None)


class MSELossFunction(torch.autograd.Function):
    """loss = mean (or sum) of (input - target)^2; backward (``functional/loss.py``):
    dL/dinput = 2 (input - target) * dL/dloss (/ numel for mean), and dL/dtarget = -dL/dinput.

    ``MSELossFunction.apply(input, target (same shape and dtype), reduction='mean')``
    """

    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        where = "MSELossFunction"
        x, t = _array(where, "input", input), _array(where, "target", target)
        _same_dtype(where, "input", {"input": x, "target": t})
        if x.shape != t.shape:
            raise ShapeError(where, f"expected target of the input's shape {fmt_shape(x.shape)}, "
                                    f"got {fmt_shape(t.shape)}")
        loss, cache = F.mse_loss_forward(x, t, _reduction(where, reduction))
        return _finish(ctx, loss, cache, [(x, input), (t, target)])

    @staticmethod
    @hand_written("MSELossFunction")
    def backward(ctx, grad_output):
        need_input, need_target = _needs(ctx, 2)
        grad_input = F.mse_loss_backward(_upstream(grad_output), _load_cache(ctx))
        # the loss depends on input - target only, so its gradient in the target is the negative
        return _grads(grad_input if need_input else None, -grad_input if need_target else None) + (None,)


# -- torch.nn.functional-style calls ---------------------------------------------------------------
def linear(input, weight, bias=None):
    """``torch.nn.functional.linear`` on handgrad's math."""
    return LinearFunction.apply(input, weight, bias)


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """``torch.nn.functional.conv2d`` (dilation 1, groups 1, numeric padding) on handgrad's math."""
    return Conv2dFunction.apply(input, weight, bias, stride, padding)


def max_pool2d(input, kernel_size, stride=None, padding=0):
    return MaxPool2dFunction.apply(input, kernel_size, stride, padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    return AvgPool2dFunction.apply(input, kernel_size, stride, padding)


def relu(input):
    return ReLUFunction.apply(input)


def leaky_relu(input, negative_slope=0.01):
    return LeakyReLUFunction.apply(input, negative_slope)


def sigmoid(input):
    return SigmoidFunction.apply(input)


def tanh(input):
    return TanhFunction.apply(input)


def cross_entropy(input, target, reduction="mean"):
    """Class-index targets only (no weight, ignore_index or label_smoothing)."""
    return CrossEntropyFunction.apply(input, target, reduction)


def mse_loss(input, target, reduction="mean"):
    """The target is cast to the input's dtype first (through autograd, so its gradient flows)."""
    if isinstance(target, torch.Tensor) and target.dtype != input.dtype and target.dtype.is_floating_point:
        target = target.to(input.dtype)
    return MSELossFunction.apply(input, target, reduction)


# -- nn.Module twins ----------------------------------------------------------------------------------
class _Twin:
    """Mixin for the twins: ``unsupported(module)`` says why a torch.nn layer's configuration cannot
    run on handgrad's math (None when it can); the constructor refuses such a configuration."""

    @staticmethod
    def unsupported(module):
        return None

    def _get_name(self):  # the repr says which layers run on handgrad: "handgrad.Linear(...)"
        return "handgrad." + type(self).__name__

    def _check_supported(self):
        reason = type(self).unsupported(self)
        if reason is not None:
            raise UnsupportedError(f"handgrad.torch.{type(self).__name__}", reason)


class Linear(_Twin, torch.nn.Linear):
    """``torch.nn.Linear`` (same signature, parameters, init and state_dict) whose forward and
    backward are handgrad's: y = x @ weight.T + bias; grad_weight = G.T @ x, grad_input = G @ weight."""

    def forward(self, input):
        return LinearFunction.apply(input, self.weight, self.bias)


def _numeric_padding(padding, kernel_size, stride):
    """torch's 'valid' is 0; 'same' is k // 2 where that is symmetric (odd kernels, stride 1)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same" and all(k % 2 == 1 for k in kernel_size) and tuple(stride) == (1, 1):
        return tuple(k // 2 for k in kernel_size)
    return padding


class Conv2d(_Twin, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` whose forward and backward are handgrad's im2col convolution.

    Supported: any kernel_size, stride and padding (ints, pairs, 'valid', and 'same' for odd kernels
    at stride 1), bias or not; refused: dilation != 1, groups != 1, padding_mode other than 'zeros'.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()

    @staticmethod
    def unsupported(module):
        if tuple(module.dilation) != (1, 1):
            return f"dilation {module.dilation} is not supported (only 1)"
        if module.groups != 1:
            return f"groups={module.groups} is not supported (only 1)"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} is not supported (only 'zeros')"
        if isinstance(_numeric_padding(module.padding, module.kernel_size, module.stride), str):
            return f"padding={module.padding!r} needs asymmetric padding here; give the padding as numbers"
        return None

    def forward(self, input):
        padding = _numeric_padding(self.padding, self.kernel_size, self.stride)
        return Conv2dFunction.apply(input, self.weight, self.bias, self.stride, padding)


class MaxPool2d(_Twin, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on handgrad's math (dilation 1, no return_indices, no ceil_mode)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()

    @staticmethod
    def unsupported(module):
        if F.pair(module.dilation) != (1, 1):
            return f"dilation {module.dilation} is not supported (only 1)"
        if module.return_indices:
            return "return_indices=True is not supported"
        if module.ceil_mode:
            return "ceil_mode=True is not supported"
        return None

    def forward(self, input):
        return MaxPool2dFunction.apply(input, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Twin, torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on handgrad's math (count_include_pad=True, no ceil_mode or divisor_override)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()

    @staticmethod
    def unsupported(module):
        if module.ceil_mode:
            return "ceil_mode=True is not supported"
        if not module.count_include_pad:
            return "count_include_pad=False is not supported"
        if module.divisor_override is not None:
            return "divisor_override is not supported"
        return None

    def forward(self, input):
        return AvgPool2dFunction.apply(input, self.kernel_size, self.stride, self.padding)


def _not_inplace(module):
    return "inplace=True is not supported (handgrad writes a new output)" if module.inplace else None


class ReLU(_Twin, torch.nn.ReLU):
    """``torch.nn.ReLU`` on handgrad's math (inplace=False only)."""
    unsupported = staticmethod(_not_inplace)

    def __init__(self, inplace: bool = False):
        super().__init__(inplace)
        self._check_supported()

    def forward(self, input):
        return ReLUFunction.apply(input)


class LeakyReLU(_Twin, torch.nn.LeakyReLU):
    """``torch.nn.LeakyReLU`` on handgrad's math (inplace=False only)."""
    unsupported = staticmethod(_not_inplace)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__(negative_slope, inplace)
        self._check_supported()

    def forward(self, input):
        return LeakyReLUFunction.apply(input, self.negative_slope)


class Sigmoid(_Twin, torch.nn.Sigmoid):
    """``torch.nn.Sigmoid`` on handgrad's math."""

    def forward(self, input):
        return SigmoidFunction.apply(input)


class Tanh(_Twin, torch.nn.Tanh):
    """``torch.nn.Tanh`` on handgrad's math."""

    def forward(self, input):
        return TanhFunction.apply(input)


class CrossEntropyLoss(_Twin, torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` on handgrad's fused softmax cross-entropy: (N, C) logits and
    (N,) class indices, reduction 'mean', 'sum' or 'none'. Refused: weight, label_smoothing, an
    ignore_index other than the default, probability targets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()

    @staticmethod
    def unsupported(module):
        if module.weight is not None:
            return "class weights are not supported"
        if module.label_smoothing != 0.0:
            return "label_smoothing is not supported"
        if module.ignore_index != -100:
            return "ignore_index is not supported (targets must be class indices in [0, C))"
        return None

    def forward(self, input, target):
        return CrossEntropyFunction.apply(input, target, self.reduction)


class MSELoss(_Twin, torch.nn.MSELoss):
    """``torch.nn.MSELoss`` on handgrad's math (input and target of the same shape)."""

    def forward(self, input, target):
        return mse_loss(input, target, self.reduction)


class Activation(torch.nn.Module):
    """A user-defined element-wise activation as a torch module, running handgrad's
    ``elementwise_forward/backward`` (no parameters, so nothing in the state_dict).

    ``activation``: a handgrad ``nn.ElementwiseActivation`` subclass (or instance), e.g. one made by
    ``handgrad.nn.define_activation``, or a ``(function, derivative)`` pair of NumPy functions; a
    pair's derivative is checked against finite differences here, as handgrad checks its classes.

    Example::

        >>> swish = Activation((lambda x: x / (1 + np.exp(-x)),
        ...                     lambda x: (s := 1 / (1 + np.exp(-x))) * (1 + x * (1 - s))), name="Swish")
    """

    def __init__(self, activation, name: str | None = None):
        super().__init__()
        if isinstance(activation, hnn.ElementwiseActivation):
            activation = type(activation)
        if isinstance(activation, type) and issubclass(activation, hnn.ElementwiseActivation):
            self.name = name or activation.__name__
            self.function, self.derivative = activation.function, activation.derivative
            self.activation = activation
        elif isinstance(activation, (tuple, list)) and len(activation) == 2 and all(map(callable, activation)):
            self.name = name or "Activation"
            self.function, self.derivative = activation
            hnn.check_derivative(self.name, self.function, self.derivative)
            self.activation = None
        else:
            raise HandgradError("handgrad.torch.Activation", f"expected a handgrad nn.ElementwiseActivation subclass "
                                                             f"or a (function, derivative) pair, got {activation!r}")

    def forward(self, input):
        return ElementwiseFunction.apply(input, self.function, self.derivative)

    def extra_repr(self):
        return self.name


#: torch.nn class -> its twin
TWINS = {torch.nn.Linear: Linear, torch.nn.Conv2d: Conv2d, torch.nn.MaxPool2d: MaxPool2d,
         torch.nn.AvgPool2d: AvgPool2d, torch.nn.ReLU: ReLU, torch.nn.LeakyReLU: LeakyReLU,
         torch.nn.Sigmoid: Sigmoid, torch.nn.Tanh: Tanh, torch.nn.CrossEntropyLoss: CrossEntropyLoss,
         torch.nn.MSELoss: MSELoss}


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Swap every supported layer of ``model`` (the model itself included) for its handgrad twin and
    leave the rest alone: subclasses of torch.nn layers (their forward may be the user's) and
    configurations the twin refuses (see each twin's ``unsupported``) stay on autograd.

    The twin is a subclass of the torch.nn layer that replaces only ``forward``, so the swap keeps the
    same parameters, buffers, hooks and state_dict. ``inplace=False`` (default) converts a deep copy.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        twin = TWINS.get(type(module))
        if twin is not None and twin.unsupported(module) is None:
            module.__class__ = twin
    return model


# -- handgrad models and checkpoints <-> torch ------------------------------------------------------------
def from_handgrad(model) -> torch.nn.Sequential:
    """A handgrad ``nn.Sequential`` as a ``torch.nn.Sequential`` of twins with the same weights (copied),
    dtype and state_dict keys. Layers with no twin (Flatten, Dropout, BatchNorm, Softmax, ...) become
    their torch.nn namesakes; user activations become ``Activation``."""
    from .models import architecture

    layers = []
    for spec in architecture(model):
        spec = dict(spec)
        kind = spec.pop("type")
        cls = globals().get(kind) if kind in {c.__name__ for c in TWINS.values()} else getattr(torch.nn, kind, None)
        if cls is None:
            layers.append(Activation(hnn.get_activation(kind)))
            continue
        layers.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}))
    module = torch.nn.Sequential(*layers).to(getattr(torch, np.dtype(model.dtype).name))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    module.train(model.training)
    return module


def to_handgrad(module: torch.nn.Sequential):
    """A ``torch.nn.Sequential`` (twins or torch.nn layers) as a handgrad ``nn.Sequential`` with the same
    weights (copied). Every layer must be one handgrad has; an ``Activation`` must wrap a handgrad class."""
    from .models import CONSTRUCTOR_ARGS, from_architecture

    if not isinstance(module, torch.nn.Sequential):
        raise HandgradError("handgrad.torch.to_handgrad",
                            f"expected a torch.nn.Sequential, got {type(module).__name__}")
    specs = []
    for layer in module:
        if isinstance(layer, Activation):
            if layer.activation is None:
                raise UnsupportedError("handgrad.torch.to_handgrad", f"{layer!r} wraps a (function, derivative) pair; "
                                                                     f"give it a handgrad ElementwiseActivation class")
            specs.append({"type": layer.activation.__name__})
            continue
        kind = type(layer).__name__
        if not hasattr(hnn, kind):
            raise UnsupportedError("handgrad.torch.to_handgrad", f"handgrad has no layer {kind} (in {layer!r})")
        specs.append({"type": kind, **CONSTRUCTOR_ARGS.get(kind, lambda m: {})(layer)})
    params = [p for p in module.parameters()] + [b for b in module.buffers() if b.is_floating_point()]
    dtype = params[0].dtype if params else torch.float32
    model = from_architecture(specs).to(str(dtype).replace("torch.", ""))
    model.load_state_dict({k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()})
    model.train(module.training)
    return model


def save(module: torch.nn.Sequential, path, /, **metadata) -> None:
    """Save a torch Sequential as a handgrad checkpoint (``handgrad.save`` of ``to_handgrad(module)``)."""
    from .serialization import save as save_handgrad
    save_handgrad(to_handgrad(module), path, **metadata)


def load(path) -> torch.nn.Sequential:
    """A handgrad checkpoint as a torch Sequential of twins; ``.metadata`` holds the header."""
    from .serialization import load as load_handgrad
    model = load_handgrad(path)
    module = from_handgrad(model)
    module.metadata = model.metadata
    return module


__all__ = ["LinearFunction", "Conv2dFunction", "MaxPool2dFunction", "AvgPool2dFunction", "ReLUFunction",
           "LeakyReLUFunction", "SigmoidFunction", "TanhFunction", "ElementwiseFunction", "CrossEntropyFunction",
           "MSELossFunction", "linear", "conv2d", "max_pool2d", "avg_pool2d", "relu", "leaky_relu", "sigmoid",
           "tanh", "cross_entropy", "mse_loss", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "CrossEntropyLoss", "MSELoss", "Activation", "TWINS", "convert", "from_handgrad",
           "to_handgrad", "save", "load", "hand_written", "DeviceError", "UnsupportedError"]
