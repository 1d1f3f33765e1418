"""float32 end to end: no silent upcast anywhere in a training step (forward, loss, backward, SGD)."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import nn, optim
from handgrad.models import build_model


def _record_dtypes(model):
    """Wrap every layer's forward and backward to log (layer, direction, dtype) of what it returns."""
    seen = []
    for i, layer in enumerate(model):

        def forward(x, _f=layer.forward, _i=i):
            out = _f(x)
            seen.append((f"layer {_i} ({model[_i]!r}) forward", out.dtype))
            return out

        def backward(g, input_grad=True, _b=layer.backward, _i=i):
            grad = _b(g, input_grad=input_grad)
            if grad is not None:
                seen.append((f"layer {_i} ({model[_i]!r}) backward", grad.dtype))
            return grad

        object.__setattr__(layer, "forward", forward)
        object.__setattr__(layer, "backward", backward)
    return seen


@pytest.mark.parametrize("name", ["mlp", "tiny-cnn", "lenet5", "mlp-sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_step_keeps_dtype(name, dtype):
    handgrad.manual_seed(0)
    model = build_model(name).to(dtype)
    seen = _record_dtypes(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 8)
    for _ in range(2):  # the second step runs the momentum buffers
        out = model(x)
        loss_fn(out, y)
        grad = loss_fn.backward()
        seen.append(("loss backward", grad.dtype))
        opt.zero_grad()
        model.backward(grad, input_grad=True)
        opt.step()
    seen += [(f"{k}.grad", p.grad.dtype) for k, p in model.named_parameters()]
    seen += [(f"{k} after step", p.data.dtype) for k, p in model.named_parameters()]
    seen += [(f"{p!r} momentum buffer", s["momentum_buffer"].dtype) for p, s in opt.state.items()]
    wrong = [(where, d.name) for where, d in seen if d != dtype]
    assert not wrong, f"{name} in {np.dtype(dtype).name}: other dtypes at {wrong}"
