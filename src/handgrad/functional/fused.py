"""Layers that ``nn.Sequential`` runs as one op when the compiled kernels are on: the plain
composition of their references, which is the definition the fused kernels are tested against.

    linear_relu_forward(x, weight, bias) -> (y, cache)
        y = relu(linear(x, weight, bias)) = max(0, x @ weight.T + bias)
    linear_relu_backward(grad_output, cache, needs_input_grad)
        -> (grad_input, grad_weight, grad_bias): the ReLU's backward, then the Linear's.

    conv2d_relu_max_pool2d_forward(x, weight, bias, stride, padding, pool_kernel, pool_stride,
                                   pool_padding) -> (y, cache)
        y = max_pool2d(relu(conv2d(x, weight, bias, stride, padding)), pool_kernel, pool_stride,
                       pool_padding)
    conv2d_relu_max_pool2d_backward(grad_output, cache, needs_input_grad)
        -> (grad_input, grad_weight, grad_bias): the three backwards in reverse order.

These are not ops of their own (no spec, no bridge Function): each layer keeps its own pair.
"""

from __future__ import annotations

from .activation import relu_backward, relu_forward
from .conv import ALL, conv2d_backward, conv2d_forward
from .linear import linear_backward, linear_forward
from .pool import max_pool2d_backward, max_pool2d_forward


def linear_relu_forward(x, weight, bias, keep_cache=True):
    """y = relu(x @ weight.T + bias): the two forwards in order, each cache kept for backward."""
    z, linear_cache = linear_forward(x, weight, bias)
    y, relu_cache = relu_forward(z)
    return y, (linear_cache, relu_cache) if keep_cache else None


def linear_relu_backward(grad_output, cache, needs_input_grad=ALL):
    """dL/dx, dL/dweight, dL/dbias through the ReLU (G where y > 0, else 0), then the Linear."""
    linear_cache, relu_cache = cache
    return linear_backward(relu_backward(grad_output, relu_cache), linear_cache, needs_input_grad)


def conv2d_relu_max_pool2d_forward(
    x, weight, bias, stride, padding, pool_kernel, pool_stride, pool_padding, keep_cache=True
):
    """y = max_pool2d(relu(conv2d(x))): the three forwards in order, each cache kept for backward."""
    z, conv_cache = conv2d_forward(x, weight, bias, stride, padding, keep_cache=keep_cache)
    r, relu_cache = relu_forward(z)
    y, pool_cache = max_pool2d_forward(r, pool_kernel, pool_stride, pool_padding, keep_cache=keep_cache)
    return y, (conv_cache, relu_cache, pool_cache) if keep_cache else None


def conv2d_relu_max_pool2d_backward(grad_output, cache, needs_input_grad=ALL):
    """dL/dx, dL/dweight, dL/dbias through the pool, the ReLU and the convolution, in that order."""
    conv_cache, relu_cache, pool_cache = cache
    grad = relu_backward(max_pool2d_backward(grad_output, pool_cache), relu_cache)
    return conv2d_backward(grad, conv_cache, needs_input_grad)
