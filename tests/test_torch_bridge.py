"""The PyTorch bridge (handgrad.torch): every Function against torch.autograd.gradcheck (float64) over
the core tests' configuration grid and against autograd on its torch.nn twin; the twins, convert,
checkpoints both ways, the boundary errors, and 200 SGD steps on MNIST in lockstep with torch.nn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_close, to_numpy  # noqa: E402

# the same grid as the NumPy core's tests, so both front-ends are checked on the same configurations
from test_layers import CONV_CASES, LINEAR_CASES, POOL_CASES  # noqa: E402

import handgrad  # noqa: E402
import handgrad.data  # noqa: E402
import handgrad.functional as F  # noqa: E402
import handgrad.torch as ht  # noqa: E402
from handgrad import kernels, nn  # noqa: E402

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's intra-op threads fight over shared cores (100x slower float64 convs); one is plenty here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tensor(rng, shape, dtype=D, requires_grad=True):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype).requires_grad_(requires_grad)


def check_twin(module, torch_module, inputs, rng, targets=()):
    """``module`` (a twin) and ``torch_module`` with the same weights: equal outputs, dL/dinputs and
    dL/dparameters for a random upstream gradient."""
    torch_module.load_state_dict(module.state_dict())
    ours = [x.detach().clone().requires_grad_(True) for x in inputs]
    theirs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out, expected = module(*ours, *targets), torch_module(*theirs, *targets)
    assert_close(to_numpy(out), to_numpy(expected), "output")
    upstream = torch.from_numpy(rng.standard_normal(tuple(out.shape))).to(out.dtype)
    out.backward(upstream)
    expected.backward(upstream)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(to_numpy(a.grad), to_numpy(b.grad), f"grad of input {i}")
    expected_params = dict(torch_module.named_parameters())
    for name, p in module.named_parameters():
        assert_close(to_numpy(p.grad), to_numpy(expected_params[name].grad), f"grad of {name}")


def gradcheck(function, *args):
    assert torch.autograd.gradcheck(function.apply, args, eps=1e-6, atol=1e-6, rtol=1e-5)


# -- gradcheck and autograd parity, per Function --------------------------------------------------------
@pytest.mark.parametrize("in_features, out_features, shape, bias", LINEAR_CASES)
def test_linear(in_features, out_features, shape, bias, rng):
    x = tensor(rng, shape)
    w, b = tensor(rng, (out_features, in_features)), tensor(rng, (out_features,)) if bias else None
    gradcheck(ht.LinearFunction, x, w, b)
    check_twin(
        ht.Linear(in_features, out_features, bias=bias, dtype=D),
        torch.nn.Linear(in_features, out_features, bias=bias, dtype=D),
        [x],
        rng,
    )


@pytest.mark.parametrize("cin, cout, kernel_size, stride, padding, shape, bias", CONV_CASES)
def test_conv2d(cin, cout, kernel_size, stride, padding, shape, bias, rng):
    x, w = tensor(rng, shape), tensor(rng, (cout, cin) + F.pair(kernel_size))
    gradcheck(ht.Conv2dFunction, x, w, tensor(rng, (cout,)) if bias else None, stride, padding)
    check_twin(
        ht.Conv2d(cin, cout, kernel_size, stride, padding, bias=bias, dtype=D),
        torch.nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=bias, dtype=D),
        [x],
        rng,
    )


@pytest.mark.parametrize("kernel_size, stride, padding, shape", POOL_CASES)
def test_max_pool2d(kernel_size, stride, padding, shape, rng):
    x = tensor(rng, shape)
    gradcheck(ht.MaxPool2dFunction, x, kernel_size, stride, padding)
    check_twin(ht.MaxPool2d(kernel_size, stride, padding), torch.nn.MaxPool2d(kernel_size, stride, padding), [x], rng)


@pytest.mark.parametrize("kernel_size, stride, padding, shape", POOL_CASES)
def test_avg_pool2d(kernel_size, stride, padding, shape, rng):
    x = tensor(rng, shape)
    gradcheck(ht.AvgPool2dFunction, x, kernel_size, stride, padding)
    check_twin(ht.AvgPool2d(kernel_size, stride, padding), torch.nn.AvgPool2d(kernel_size, stride, padding), [x], rng)


ACTIVATION_CASES = [
    pytest.param(ht.ReLUFunction, (), ht.ReLU(), torch.nn.ReLU(), id="relu"),
    pytest.param(ht.LeakyReLUFunction, (0.2,), ht.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2), id="leaky_relu"),
    pytest.param(ht.SigmoidFunction, (), ht.Sigmoid(), torch.nn.Sigmoid(), id="sigmoid"),
    pytest.param(ht.TanhFunction, (), ht.Tanh(), torch.nn.Tanh(), id="tanh"),
]


@pytest.mark.parametrize("shape", [(1, 5), (2, 3, 4, 4)], ids=["batch1", "4d"])
@pytest.mark.parametrize("function, args, module, torch_module", ACTIVATION_CASES)
def test_activation(function, args, module, torch_module, shape, rng):
    x = tensor(rng, shape)
    gradcheck(function, x, *args)
    check_twin(module, torch_module, [x], rng)


def swish(x):
    return x / (1 + np.exp(-x))


def swish_derivative(x):
    s = 1 / (1 + np.exp(-x))
    return s * (1 + x * (1 - s))


Swish = nn.define_activation("BridgeSwish", swish, swish_derivative)


class TorchSwish(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


@pytest.mark.parametrize("activation", [Swish, Swish(), (swish, swish_derivative)], ids=["class", "instance", "pair"])
def test_user_defined_activation(activation, rng):
    x = tensor(rng, (2, 3, 4))
    gradcheck(ht.ElementwiseFunction, x, swish, swish_derivative)
    check_twin(ht.Activation(activation), TorchSwish(), [x], rng)


def test_user_defined_activation_with_a_wrong_derivative_is_refused():
    with pytest.raises(nn.ActivationDerivativeError, match="finite differences"):
        ht.Activation((np.sin, np.sin))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("batch", [1, 6])
def test_cross_entropy(reduction, batch, rng):
    logits, target = tensor(rng, (batch, 5)), torch.from_numpy(rng.integers(0, 5, batch))
    gradcheck(ht.CrossEntropyFunction, logits, target, None, None, -100, None, reduction)
    check_twin(
        ht.CrossEntropyLoss(reduction=reduction),
        torch.nn.CrossEntropyLoss(reduction=reduction),
        [logits],
        rng,
        targets=(target,),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(1, 3), (4, 2, 3)], ids=["batch1", "3d"])
def test_mse_loss_in_input_and_target(reduction, shape, rng):
    x, target = tensor(rng, shape), tensor(rng, shape)
    gradcheck(ht.MSELossFunction, x, target, None, None, reduction)  # size_average, reduce: torch's order
    check_twin(ht.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), [x, target], rng)


# -- the contract of each Function ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "wants, expected",
    [
        pytest.param((True, False, False), (True, False, False), id="input-only"),
        pytest.param((False, True, True), (False, True, True), id="parameters-only"),
        pytest.param((False, False, True), (False, False, True), id="bias-only"),
    ],
)
@pytest.mark.parametrize("op", ["linear", "conv2d"])
def test_backward_computes_only_the_gradients_asked_for(op, wants, expected, rng, monkeypatch):
    from handgrad import kernels

    seen = []
    lookup = kernels.op

    def watched(backward):
        def spy(grad_output, cache, needs):
            seen.append(tuple(needs))
            return backward(grad_output, cache, needs)

        return spy

    # the backward the bridge runs, looked up through kernels.op (the kernel, or the reference)
    monkeypatch.setattr(kernels, "op", lambda name: watched(lookup(name)) if name == f"{op}_backward" else lookup(name))
    shapes = {"linear": ((3, 4), (2, 4), (2,)), "conv2d": ((2, 1, 5, 5), (3, 1, 3, 3), (3,))}[op]
    args = [tensor(rng, s, requires_grad=w) for s, w in zip(shapes, wants)]
    out = getattr(ht, op)(*args)
    out.sum().backward()
    assert seen == [expected]
    assert [a.grad is not None for a in args] == list(wants)


def test_saved_tensors_are_the_inputs_so_in_place_changes_are_caught(rng):
    x, w = tensor(rng, (3, 4)), tensor(rng, (2, 4))
    out = ht.linear(x, w)
    with torch.no_grad():
        w.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x, w: ht.linear(x.flatten(1), w), id="linear"),
        pytest.param(lambda x, w: ht.relu(x) * w.sum(), id="relu"),
        pytest.param(lambda x, w: ht.conv2d(x, w.reshape(2, 1, 2, 2)), id="conv2d"),
    ],
)
def test_double_backward_is_refused_with_a_clear_message(make, rng):
    x, w = tensor(rng, (2, 1, 2, 2)), tensor(rng, (2, 4))
    grad_x, grad_w = torch.autograd.grad(make(x, w).pow(2).sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported.*hand-written"):
        (grad_x.sum() + grad_w.sum()).backward()


# -- double backward: every Function, every autograd path ---------------------------------------------
def bridge_functions():
    """Every public autograd Function of the bridge, found in the module rather than listed."""
    return sorted(
        (
            f
            for f in vars(ht).values()
            if isinstance(f, type)
            and issubclass(f, torch.autograd.Function)
            and f.__module__ == ht.__name__
            and not f.__name__.startswith("_")
            and f is not ht.HandWrittenFunction
        ),
        key=lambda f: f.__name__,
    )


def spec_example(spec):
    """An op's first case (its spec's): the shapes of its floating tensors, and how to apply its
    Function to them (the other arguments as the case gives them)."""
    args = spec.arguments(spec.make_cases()[0])
    floating = [  # the tensors only: an array among the options (running statistics) has no gradient
        i
        for i, a in enumerate(args[: len(spec.tensors)])
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)
    ]

    def apply(*xs):
        full = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
        for i, x in zip(floating, xs):
            full[i] = x
        return getattr(ht, spec.bridge.function_name).apply(*full)

    return [args[i].shape for i in floating], apply


# Function name -> (shapes of its differentiable inputs, how to apply it to them): every bridged op's, and
# the user-defined activation's
EXAMPLES = {spec.bridge.function_name: spec_example(spec) for spec in F.SPECS.values() if spec.bridge is not None}
EXAMPLES["ElementwiseFunction"] = ([(2, 3)], lambda x: ht.ElementwiseFunction.apply(x, swish, swish_derivative))


def test_every_function_is_hand_written_and_has_a_double_backward_example():
    functions = bridge_functions()
    assert [f for f in functions if not issubclass(f, ht.HandWrittenFunction)] == []
    assert sorted(f.__name__ for f in functions) == sorted(EXAMPLES)


def example(name, rng):
    """Inputs of the Function ``name`` and a scalar of its output, linear in the output so that any
    second derivative can only come from the Function itself."""
    shapes, apply = EXAMPLES[name]
    inputs = tuple(tensor(rng, shape) for shape in shapes)
    weights = {}

    def scalar(*xs):
        out = apply(*xs)
        if "w" not in weights:
            weights["w"] = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        return (out * weights["w"]).sum()

    return inputs, apply, scalar


def second_order_paths(inputs, apply, scalar, rng):
    """Each way of asking autograd for a derivative of a gradient: path -> the calls that take it."""
    v = tuple(torch.from_numpy(rng.standard_normal(tuple(x.shape))) for x in inputs)
    functional = torch.autograd.functional

    def grad_then_grad():
        grads = torch.autograd.grad(scalar(*inputs), inputs, create_graph=True)
        torch.autograd.grad(sum(g.sum() for g in grads), inputs)

    def backward_then_grad_backward(i):
        def run():
            xs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
            scalar(*xs).backward(create_graph=True)
            xs[i].grad.sum().backward()

        return run

    def jacobian_of_gradient():
        functional.jacobian(lambda *xs: torch.autograd.grad(scalar(*xs), xs, create_graph=True), inputs)

    return {
        "hessian": [lambda: functional.hessian(scalar, inputs)],
        "hessian-vectorized": [lambda: functional.hessian(scalar, inputs, vectorize=True)],
        "hvp": [lambda: functional.hvp(scalar, inputs, v)],
        "vhp": [lambda: functional.vhp(scalar, inputs, v)],
        "jvp": [lambda: functional.jvp(apply, inputs, v)],
        "jacobian-of-gradient": [jacobian_of_gradient],
        "grad-create-graph-then-grad": [grad_then_grad],
        "backward-create-graph-then-grad-backward": [backward_then_grad_backward(i) for i in range(len(inputs))],
    }


PATHS = [
    "hessian",
    "hessian-vectorized",
    "hvp",
    "vhp",
    "jvp",
    "jacobian-of-gradient",
    "grad-create-graph-then-grad",
    "backward-create-graph-then-grad-backward",
]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_double_backward_raises_the_bridges_error_on_every_path(name, path, rng):
    """Never a number: not the zeros of a refusing node that hangs off the graph, even where the true
    second derivative is zero (AvgPool2d, ReLU), and not torch's "appears to not have been used"."""
    inputs, apply, scalar = example(name, rng)
    for i, run in enumerate(second_order_paths(inputs, apply, scalar, rng)[path]):
        with pytest.raises(ht.DoubleBackwardError, match=rf"handgrad\.torch\.{name}: double backward is not supported"):
            run()
            pytest.fail(f"{path} (call {i}) returned instead of raising")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_forward_mode_and_torch_func_raise_the_bridges_error(name, rng):
    import torch.autograd.forward_ad as fw

    inputs, apply, scalar = example(name, rng)
    with pytest.raises(ht.DoubleBackwardError, match=rf"{name}: forward-mode AD is not supported"), fw.dual_level():
        apply(*(fw.make_dual(x.detach(), torch.ones_like(x)) for x in inputs))
    with pytest.raises(ht.DoubleBackwardError, match=rf"{name}: a torch.func transform .* is not supported"):
        torch.func.grad(scalar)(*(x.detach() for x in inputs))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_first_order_gradients_are_exact_under_create_graph_for_every_function(name, rng):
    inputs, apply, scalar = example(name, rng)
    plain = torch.autograd.grad(scalar(*inputs), inputs)
    with_graph = torch.autograd.grad(scalar(*inputs), inputs, create_graph=True)
    for i, (a, b) in enumerate(zip(with_graph, plain)):
        assert a.requires_grad, f"input {i}: the refusing node must be on the gradient's graph"
        assert torch.equal(a.detach(), b), f"input {i}"


class Cube(ht.HandWrittenFunction):
    """A user's own Function on NumPy: y = x^3, dL/dx = 3 x^2 G."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.from_numpy(input.detach().numpy() ** 3)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return torch.from_numpy(3 * input.detach().numpy() ** 2 * grad_output.detach().numpy())


def test_a_users_hand_written_function_refuses_double_backward_too(rng):
    x = tensor(rng, (4,))
    (grad,) = torch.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    assert torch.equal(grad.detach(), 3 * x.detach() ** 2)
    with pytest.raises(ht.DoubleBackwardError, match="Cube: double backward is not supported"):
        torch.autograd.functional.hessian(lambda x: Cube.apply(x).sum(), x)


def test_first_order_gradients_are_unchanged_under_create_graph(rng):
    x, w = tensor(rng, (3, 4)), tensor(rng, (2, 4))
    (with_graph,) = torch.autograd.grad(ht.linear(x, w).sum(), w, create_graph=True)
    (plain,) = torch.autograd.grad(ht.linear(x, w).sum(), w)
    assert torch.equal(with_graph.detach(), plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_tensors_share_memory_with_the_numpy_math(dtype, rng, monkeypatch):
    """No copy in or out: the functional forward reads the tensors' memory and its result becomes
    the output tensor as it is."""
    seen = {}
    op_of = kernels.op
    forward = op_of("linear_forward")  # the compiled kernel, or the reference when kernels are off

    def spy(x, weight, bias=None):
        seen["x"], seen["weight"] = x, weight
        seen["out"], cache = forward(x, weight, bias)
        return seen["out"], cache

    monkeypatch.setattr(kernels, "op", lambda wanted: spy if wanted == "linear_forward" else op_of(wanted))
    layer = ht.Linear(4, 3, dtype=dtype)
    x = tensor(rng, (5, 4), dtype=dtype)
    out = layer(x)
    assert out.dtype == dtype
    assert np.shares_memory(seen["x"], x.detach().numpy())
    assert np.shares_memory(seen["weight"], layer.weight.detach().numpy())
    assert np.shares_memory(seen["out"], out.detach().numpy())
    out.sum().backward()
    assert x.grad.dtype == dtype and layer.weight.grad.dtype == dtype


def test_conv2d_output_is_contiguous_like_torch(rng):
    out = ht.Conv2d(2, 3, 3, dtype=D)(tensor(rng, (2, 2, 6, 6)))
    assert out.is_contiguous()
    out.view(2, -1)  # the tutorials' flatten


def test_an_output_never_aliases_its_input(rng):
    x = tensor(rng, (3, 4))
    out = ht.ElementwiseFunction.apply(x, lambda v: v, np.ones_like)
    assert not np.shares_memory(out.detach().numpy(), x.detach().numpy())
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_tensor_off_the_cpu_gets_a_clear_error():
    x = torch.empty(2, 4, device="meta")
    with pytest.raises(ht.DeviceError, match=r"handgrad runs on the CPU: move the tensor with \.cpu\(\)"):
        ht.Linear(4, 3)(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_gets_a_clear_error():
    with pytest.raises(ht.DeviceError, match=r"\.cpu\(\)"):
        ht.relu(torch.ones(3, device="cuda"))


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(
            lambda: ht.linear(torch.ones(2, 4), torch.ones(3, 4, dtype=D)), "weight of dtype float32", id="mixed"
        ),
        pytest.param(lambda: ht.relu(torch.ones(3, dtype=torch.int64)), "float32 or float64", id="integer"),
        pytest.param(lambda: ht.relu(torch.ones(3, dtype=torch.float16)), "float32 or float64", id="half"),
        pytest.param(
            lambda: ht.linear(torch.ones(2, 5), torch.ones(3, 4)), r"input \(2, 5\), weight \(3, 4\)", id="shape"
        ),
        pytest.param(
            lambda: ht.linear(torch.ones(()), torch.ones(3, 1)), r"input \(\*, in_features\).*got input \(\)", id="0-d"
        ),
        pytest.param(
            lambda: ht.linear(torch.ones(2, 4), torch.ones(3, 4), torch.ones(4)), r"bias \(4,\)", id="linear-bias"
        ),
        pytest.param(
            lambda: ht.conv2d(torch.ones(1, 2, 5, 5), torch.ones(1, 3, 3, 3)),
            r"with one C; got input \(1, 2, 5, 5\), weight \(1, 3, 3, 3\), bias None",
            id="conv-channels",
        ),
        pytest.param(
            lambda: ht.conv2d(torch.ones(2, 5, 5), torch.ones(1, 2, 3, 3)), r"input \(N, C, H, W\)", id="conv-3d"
        ),
        pytest.param(
            lambda: ht.conv2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3)),
            "larger than the padded input",
            id="conv-window",
        ),
        pytest.param(lambda: ht.cross_entropy(torch.ones(2, 3), torch.tensor([0, 3])), r"\[0, 2\]", id="class-range"),
        pytest.param(
            lambda: ht.cross_entropy(torch.ones(2, 3), torch.tensor([0.0, 1.0])), "integer dtype", id="float-target"
        ),
        pytest.param(
            lambda: ht.mse_loss(torch.ones(2, 3), torch.ones(3, 2)), "target of the input's shape", id="mse-shape"
        ),
    ],
)
def test_bad_input_errors_name_the_op_and_what_came(make, match):
    with pytest.raises(handgrad.HandgradError, match=match):
        make()


# -- the twins and convert -------------------------------------------------------------------------------
TWIN_CASES = [
    pytest.param(ht.Linear, torch.nn.Linear, (4, 3), id="Linear"),
    pytest.param(ht.Linear, torch.nn.Linear, (4, 3, False), id="Linear-no-bias"),
    pytest.param(ht.Conv2d, torch.nn.Conv2d, (2, 3, (3, 5), 2, 1), id="Conv2d"),
    pytest.param(ht.MaxPool2d, torch.nn.MaxPool2d, (3, 2, 1), id="MaxPool2d"),
    pytest.param(ht.AvgPool2d, torch.nn.AvgPool2d, (2,), id="AvgPool2d"),
    pytest.param(ht.LeakyReLU, torch.nn.LeakyReLU, (0.1,), id="LeakyReLU"),
    pytest.param(ht.CrossEntropyLoss, torch.nn.CrossEntropyLoss, (), id="CrossEntropyLoss"),
    pytest.param(ht.MSELoss, torch.nn.MSELoss, (), id="MSELoss"),
]


@pytest.mark.parametrize("twin, original, args", TWIN_CASES)
def test_twin_has_the_torch_layers_signature_parameters_and_keys(twin, original, args):
    torch.manual_seed(0)
    ours = twin(*args)
    torch.manual_seed(0)
    theirs = original(*args)
    assert isinstance(ours, original)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(p, q), f"{name}: the twin must initialise as torch does"
    assert repr(ours) == "handgrad." + repr(theirs)


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(lambda: ht.Conv2d(2, 2, 3, dilation=2), "dilation", id="conv-dilation"),
        pytest.param(lambda: ht.Conv2d(2, 2, 3, groups=2), "groups", id="conv-groups"),
        pytest.param(lambda: ht.Conv2d(2, 2, 3, padding_mode="reflect"), "padding_mode", id="conv-reflect"),
        pytest.param(lambda: ht.Conv2d(2, 2, 2, padding="same"), "asymmetric", id="conv-same-even"),
        pytest.param(lambda: ht.ReLU(inplace=True), "inplace", id="relu-inplace"),
    ],
)
def test_twin_refuses_options_it_does_not_implement(make, match):
    with pytest.raises(ht.UnsupportedError, match=match):
        make()


def test_conv2d_same_padding_with_odd_kernel(rng):
    x = tensor(rng, (1, 2, 5, 6))
    check_twin(ht.Conv2d(2, 3, 3, padding="same", dtype=D), torch.nn.Conv2d(2, 3, 3, padding="same", dtype=D), [x], rng)


class MyLinear(torch.nn.Linear):
    pass


def test_convert_swaps_supported_layers_and_leaves_the_rest():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(2, 2, 3, groups=2),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), MyLinear(4, 3)),
        torch.nn.BatchNorm1d(3),
    )
    converted = ht.convert(model)
    kinds = [type(m) for m in converted.modules()][1:]
    assert kinds == [
        ht.Conv2d,
        ht.ReLU,
        torch.nn.Conv2d,
        torch.nn.ReLU,
        ht.MaxPool2d,
        ht.Flatten,
        torch.nn.Sequential,
        ht.Linear,
        ht.Tanh,
        MyLinear,
        ht.BatchNorm1d,
    ]
    assert all(type(m).__module__.startswith("torch") or type(m) is MyLinear for m in model.modules()), (
        "the original must be left as it was"
    )
    for (name, p), (_, q) in zip(converted.state_dict().items(), model.state_dict().items()):
        assert torch.equal(p, q), name
    x = torch.randn(2, 1, 6, 6)
    model.eval(), converted.eval()
    torch.testing.assert_close(converted(x), model(x))


def test_convert_inplace_keeps_the_parameter_objects():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    weight = model[0].weight
    assert ht.convert(model, inplace=True) is model
    assert type(model[0]) is ht.Linear and model[0].weight is weight
    assert type(ht.convert(torch.nn.Linear(3, 2))) is ht.Linear


# -- checkpoints: handgrad <-> the torch twins -----------------------------------------------------------
def test_handgrad_checkpoint_loads_into_the_twins_and_back_with_identical_outputs(tmp_path, rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        Swish(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, padding=1),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
        nn.Sigmoid(),
    )
    model.eval()
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    expected = model(x)
    handgrad.save(model, tmp_path / "model.safetensors", classes=["a", "b", "c"])

    module = ht.load(tmp_path / "model.safetensors")
    assert module.metadata["classes"] == ["a", "b", "c"]
    assert list(module.state_dict()) == list(model.state_dict())
    assert isinstance(module[1], ht.Activation) and isinstance(module[0], ht.Conv2d)
    module.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(module(torch.from_numpy(x)).numpy(), expected)

    ht.save(module, tmp_path / "back.safetensors", classes=["a", "b", "c"])
    back = handgrad.load(tmp_path / "back.safetensors")
    back.eval()
    np.testing.assert_array_equal(back(x), expected)


def test_handgrad_checkpoint_loads_into_plain_torch_nn(tmp_path, rng):
    """The tensor names are torch's own: a torch.nn model of the same layers loads the file directly."""
    from safetensors.torch import load_file

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    handgrad.save(model, tmp_path / "m.safetensors")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    plain.double().load_state_dict(load_file(tmp_path / "m.safetensors"))
    x = rng.standard_normal((3, 1, 3, 4))
    with torch.no_grad():
        assert_close(plain(torch.from_numpy(x)).numpy(), model(x), "output", tol=1e-12)


# -- 200 SGD steps on MNIST in lockstep --------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    try:
        return handgrad.data.load_dataset("mnist", download=False, progress=False)
    except handgrad.HandgradError as e:
        pytest.skip(f"MNIST not found (set HANDGRAD_DATA_DIR to a folder holding mnist/; tests never download): {e}")


@pytest.mark.data
def test_converted_model_trains_in_lockstep_with_torch_nn_on_mnist(mnist):
    """Same weights, same batches, SGD(momentum=0.9), float64: the losses of the converted model and
    its torch.nn original agree to 1e-8 relative at each of 200 steps."""
    torch.manual_seed(0)
    original = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1),
        torch.nn.Tanh(),
        torch.nn.AvgPool2d(2, padding=1),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 32),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(32, 10),
    ).double()
    converted = ht.convert(original)
    assert sum(type(m).__module__ == "handgrad.torch" for m in converted.modules()) == 10
    losses = {}
    normalize = handgrad.data.Normalizer(0.1307, 0.3081)
    loader = handgrad.data.DataLoader(mnist.train_images, mnist.train_labels, batch_size=32, shuffle=True, seed=0)
    batches = [b for _, b in zip(range(200), loader)]
    for name, model, loss_fn in (
        ("torch.nn", original, torch.nn.CrossEntropyLoss()),
        ("handgrad", converted, ht.CrossEntropyLoss()),
    ):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses[name] = []
        for images, labels in batches:
            x = torch.from_numpy(normalize(images).astype(np.float64))
            loss = loss_fn(model(x), torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    ours, theirs = np.array(losses["handgrad"]), np.array(losses["torch.nn"])
    rel = np.abs(ours - theirs) / np.abs(theirs)
    step = int(rel.argmax())
    assert rel[step] < 1e-8, f"step {step}: relative {rel[step]:.2g}, handgrad {ours[step]!r}, torch {theirs[step]!r}"
    assert theirs[-20:].mean() < 0.5 * theirs[:20].mean(), "the model should learn"


# -- optional stays optional ---------------------------------------------------------------------------------
def test_import_handgrad_does_not_import_torch():
    code = "import sys, handgrad, handgrad.nn, handgrad.functional; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
