"""The math of every op, once: ``<op>_forward(...) -> (out, cache)`` and
``<op>_backward(grad_output, cache, ...) -> gradients``. The NumPy layers in ``handgrad.nn`` and the
PyTorch bridge both wrap these; no derivative is written anywhere else.
Each op also has a spec (``SPECS``, see ``spec.py``): its torch reference, its check cases and what the
PyTorch bridge needs, read by everything that iterates the ops."""

from .activation import (
    elementwise_backward,
    elementwise_forward,
    elu_backward,
    elu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax_backward,
    log_softmax_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .conv import col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col, pair
from .dropout import dropout2d_backward, dropout2d_forward, dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .loss import (
    cross_entropy_backward,
    cross_entropy_forward,
    mse_loss_backward,
    mse_loss_forward,
    nll_loss_backward,
    nll_loss_forward,
)
from .normalization import batch_norm_backward, batch_norm_forward, layer_norm_backward, layer_norm_forward
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from .shape import flatten_backward, flatten_dims, flatten_forward, identity_backward, identity_forward
from .spec import REQUIRED, SPECS, Bridge, Case, OpSpec

__all__ = [
    "elementwise_backward",
    "elementwise_forward",
    "elu_backward",
    "elu_forward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax_backward",
    "softmax_forward",
    "tanh_backward",
    "tanh_forward",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_size",
    "im2col",
    "pair",
    "dropout2d_backward",
    "dropout2d_forward",
    "dropout_backward",
    "dropout_forward",
    "linear_backward",
    "linear_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "mse_loss_backward",
    "mse_loss_forward",
    "nll_loss_backward",
    "nll_loss_forward",
    "batch_norm_backward",
    "batch_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "flatten_backward",
    "flatten_dims",
    "flatten_forward",
    "identity_backward",
    "identity_forward",
    "REQUIRED",
    "SPECS",
    "Bridge",
    "Case",
    "OpSpec",
]
