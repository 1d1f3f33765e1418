"""Every configuration PyTorch's own tests use for the layers handgrad has (torch.testing's module and
op databases, see torch_configs.py), run through handgrad and through torch in float64: the output,
the gradient of every input and parameter, and the buffers agree to 1e-6 relative.

Three ways in are checked: the bridge's twin of each ``torch.nn`` class (same constructor call as
torch's), the bridge's functional form of each op, and handgrad's own nn layer built from the torch
layer (``handgrad.torch.to_handgrad``), which is what a checkpoint's architecture goes through.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest", reason="torch.testing's databases import expecttest")

from torch_configs import Case, module_cases, op_cases  # noqa: E402

import handgrad.nn as hnn  # noqa: E402
import handgrad.torch as ht  # noqa: E402

RTOL, ATOL = 1e-6, 1e-10

#: The torch.nn classes and torch ops whose configurations are checked.
MODULES = (
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
)
OPS = (
    ("nn.functional.linear", ""),
    ("nn.functional.conv2d", ""),
    ("nn.functional.max_pool2d", ""),
    ("nn.functional.max_unpool2d", ""),
    ("nn.functional.max_unpool2d", "grad"),
    ("nn.functional.avg_pool2d", ""),
    ("nn.functional.adaptive_avg_pool2d", ""),
    ("nn.functional.batch_norm", ""),
    ("nn.functional.layer_norm", ""),
    ("nn.functional.relu", ""),
    ("nn.functional.leaky_relu", ""),
    ("nn.functional.elu", ""),
    ("nn.functional.gelu", ""),
    ("nn.functional.silu", ""),
    ("nn.functional.softplus", ""),
    ("sigmoid", ""),
    ("tanh", ""),
    ("softmax", ""),
    ("softmax", "with_dtype"),
    ("log_softmax", ""),
    ("log_softmax", "with_dtype"),
    ("nn.functional.cross_entropy", ""),
    ("nn.functional.nll_loss", ""),
    ("nn.functional.mse_loss", ""),
)

#: Classes and ops some of whose configurations handgrad does not take yet: their cases are expected
#: to fail (not strictly: those that pass, pass). Each name leaves this set when all of its pass.
PENDING: set[str] = set()


def _params(cases: list[Case]) -> list:
    marks = []
    for case in cases:
        pending = case.name in PENDING
        mark = [pytest.mark.xfail(reason=f"{case.name}: not every configuration is supported yet")] if pending else []
        marks.append(pytest.param(case, id=case.id, marks=mark))
    return marks


MODULE_CASES = _params([case for name in MODULES for case in module_cases(name)])
OP_CASES = _params([case for name, variant in OPS for case in op_cases(name, variant)])


# -- comparing ----------------------------------------------------------------------------------------------
def _flat(tree) -> list:
    return list(torch.utils._pytree.tree_leaves(tree))


def _leaves_needing_grad(*trees) -> list:
    return [x for tree in trees for x in _flat(tree) if isinstance(x, torch.Tensor) and x.requires_grad]


def _assert_close(what, got, expected):
    got = torch.as_tensor(got)
    if expected.is_floating_point():
        torch.testing.assert_close(
            got.to(expected.dtype), expected, rtol=RTOL, atol=ATOL, equal_nan=True, msg=lambda m: f"{what}: {m}"
        )
    else:
        assert torch.equal(got.to(expected.dtype), expected), f"{what}: {got} != {expected}"


def _grad_outputs(outputs) -> list:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(out.shape, dtype=out.dtype, generator=generator) for out in outputs]


def _compare_runs(run_torch, run_handgrad, leaves_torch, leaves_handgrad):
    """Outputs of both runs equal; then the gradients of every leaf, for the same dL/doutput."""
    expected, got = _flat(run_torch()), _flat(run_handgrad())
    assert len(got) == len(expected), f"{len(got)} outputs, torch gives {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        _assert_close(f"output {i}", g, e)
    differentiable = [i for i, e in enumerate(expected) if e.requires_grad]
    if not differentiable or not leaves_torch:
        return
    upstream = _grad_outputs([expected[i] for i in differentiable])
    grads_e = torch.autograd.grad([expected[i] for i in differentiable], leaves_torch, upstream, allow_unused=True)
    grads_g = torch.autograd.grad([got[i] for i in differentiable], leaves_handgrad, upstream, allow_unused=True)
    for i, (g, e) in enumerate(zip(grads_g, grads_e, strict=True)):
        e = torch.zeros_like(leaves_torch[i]) if e is None else e
        g = torch.zeros_like(leaves_handgrad[i]) if g is None else g
        _assert_close(f"gradient of leaf {i} {tuple(leaves_torch[i].shape)}", g, e)


# -- the bridge's twins -------------------------------------------------------------------------------------
def _torch_and_twin(case: Case):
    args, kwargs, _, _ = case.build()
    torch.manual_seed(0)
    reference = getattr(torch.nn, case.name)(*args, **kwargs).double().train(case.training)
    twin = getattr(ht, case.name)(*args, **kwargs).double().train(case.training)
    twin.load_state_dict(reference.state_dict())
    return reference, twin


@pytest.mark.parametrize("case", MODULE_CASES)
def test_twin_agrees_with_torch(case):
    reference, twin = _torch_and_twin(case)
    _, _, inputs_t, options_t = case.build()
    _, _, inputs_h, options_h = case.build()
    _compare_runs(
        lambda: reference(*inputs_t, **options_t),
        lambda: twin(*inputs_h, **options_h),
        _leaves_needing_grad(inputs_t, options_t) + list(reference.parameters()),
        _leaves_needing_grad(inputs_h, options_h) + list(twin.parameters()),
    )
    for (name, expected), got in zip(reference.state_dict().items(), twin.state_dict().values(), strict=True):
        _assert_close(f"buffer {name} after forward", got, expected)


# -- the bridge's functional forms --------------------------------------------------------------------------
@pytest.mark.parametrize("case", OP_CASES)
def test_functional_form_agrees_with_torch(case):
    fn_name = case.name.rsplit(".", 1)[-1]
    reference = getattr(torch.nn.functional, fn_name, None) or getattr(torch, fn_name)
    handgrad_fn = getattr(ht, fn_name)
    args_t, kwargs_t = case.build()
    args_h, kwargs_h = case.build()
    _compare_runs(
        lambda: reference(*args_t, **kwargs_t),
        lambda: handgrad_fn(*args_h, **kwargs_h),
        _leaves_needing_grad(args_t, kwargs_t),
        _leaves_needing_grad(args_h, kwargs_h),
    )


# -- handgrad's own layers ----------------------------------------------------------------------------------
def _numpy(tree):
    return torch.utils._pytree.tree_map(lambda x: x.detach().numpy() if isinstance(x, torch.Tensor) else x, tree)


@pytest.mark.parametrize("case", MODULE_CASES)
def test_nn_layer_agrees_with_torch(case):
    """The layer a checkpoint would rebuild (or, for a loss, the loss built with the same options)
    runs forward and backward in NumPy to torch's numbers."""
    args, kwargs, inputs, options = case.build()
    torch.manual_seed(0)
    reference = getattr(torch.nn, case.name)(*args, **kwargs).double().train(case.training)
    is_loss = isinstance(reference, torch.nn.modules.loss._Loss)
    if is_loss:
        layer = getattr(hnn, case.name)(*_numpy(args), **_numpy(kwargs))
    else:
        layer = ht.to_handgrad(torch.nn.Sequential(reference))[0]
    layer.train(case.training)
    inputs = (*inputs, *options.values())  # handgrad's layers take their inputs by position
    outputs, got = _flat(reference(*inputs)), _flat(layer(*_numpy(inputs)))
    assert len(got) == len(outputs), f"{len(got)} outputs, torch gives {len(outputs)}"
    for i, (mine, theirs) in enumerate(zip(got, outputs, strict=True)):
        _assert_close(f"output {i}", mine, theirs)
    expected = outputs[0]  # any others (MaxPool2d's indices) have no gradient
    if not is_loss:  # a loss's state is its constructor's weight, not something forward changes
        for (name, buffer), mine in zip(reference.state_dict().items(), layer.state_dict().values(), strict=True):
            _assert_close(f"buffer {name} after forward", mine, buffer)
    if not expected.requires_grad:
        return
    (upstream,) = _grad_outputs([expected])
    leaves = [x for x in inputs[:1] if x.requires_grad] + list(reference.parameters())
    grads = torch.autograd.grad(expected, leaves, upstream, allow_unused=True)
    grad_input = layer.backward(upstream.numpy())
    if inputs[0].requires_grad:
        _assert_close("input gradient", grad_input, grads[0])
        grads = grads[1:]
    for (name, _), parameter, grad in zip(reference.named_parameters(), layer.parameters(), grads, strict=True):
        _assert_close(f"gradient of {name}", parameter.grad, grad)


# -- dropout: random, so checked by what every draw must satisfy ------------------------------------------
DROPOUT_CASES = _params(
    [case for name in ("nn.functional.dropout", "nn.functional.dropout2d") for case in op_cases(name)]
)


@pytest.mark.parametrize("case", DROPOUT_CASES)
def test_dropout_takes_every_configuration_and_keeps_or_scales_each_element(case):
    """Each element is 0 or x / (1 - p) (x itself in eval or at p = 0, 0 at p = 1), and the gradient
    is the same mask: 1 / (1 - p) where kept, 0 where dropped."""
    (x, *args), kwargs = case.build()
    out = getattr(ht, case.name.rsplit(".", 1)[-1])(x, *args, **kwargs)
    p, training = kwargs.get("p", 0.5), kwargs.get("training", True)
    y, data = out.detach(), x.detach()
    if not training or p == 0:
        _assert_close("output", y, data)
    elif p == 1:
        assert torch.count_nonzero(y) == 0
    else:
        kept = y != 0
        _assert_close("kept elements", y[kept], data[kept] / (1 - p))
    (grad,) = torch.autograd.grad(out.sum(), x)
    if not training or p == 0:
        expected = torch.ones_like(grad)
    else:  # at p = 1 nothing is kept
        expected = torch.where(y != 0, torch.ones_like(grad) / (1 - p) if p < 1 else 0.0, torch.zeros_like(grad))
    _assert_close("gradient", grad, expected)
