"""``handgrad gradcheck``: every functional op's hand-written backward, over a grid of
configurations, against central finite differences (``handgrad.gradcheck``: float64, every element
of small inputs, a random upstream gradient) and against torch autograd on the same op built from
``torch.nn.functional`` (when torch is installed). One row per (op, configuration).

    >>> rows = verify()                # or verify([OpCase(...)]) for an op of your own
    >>> print(format_table(rows))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import kernels
from .gradcheck import gradcheck

TORCH_TOLERANCE = 1e-6  # float64: hand-written and autograd gradients agree to ~1e-15 when both are right


@dataclass
class OpCase:
    """One op in one configuration. ``forward(*inputs) -> (out, cache)`` and ``backward(grad_output,
    cache) -> one gradient per input`` (a tuple, or an array for one input); every input is a float64
    array whose gradient is checked (fixed arguments are closed over). ``torch_forward(*tensors)``
    computes the same op with torch, for autograd's gradients; None skips that column."""
    op: str
    config: str
    forward: object
    backward: object
    inputs: tuple
    torch_forward: object = None


@dataclass
class Row:
    op: str
    config: str
    fd_rel_error: float
    torch_rel_error: float | None
    passed: bool
    detail: str = ""


def _rel_error(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return float("inf")
    diff, scale = float(np.abs(got - expected).max(initial=0.0)), float(np.abs(expected).max(initial=0.0))
    return diff / scale if scale > 0 else diff


def _as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


def check_case(case: OpCase, use_torch: bool = True, seed: int = 0) -> Row:
    """Finite differences (every element) and, with ``use_torch``, autograd for one case."""
    report = gradcheck((case.forward, case.backward), tuple(np.array(x, np.float64) for x in case.inputs), seed=seed)
    fd_error = max((c.max_rel_error for c in report.checks), default=0.0)
    detail = "; ".join(f"{c.name} at {c.worst_index}: hand {c.analytic:.6g}, numeric {c.numeric:.6g}"
                       for c in report.checks if not c.passed)
    torch_error = None
    if use_torch and case.torch_forward is not None:
        import torch

        inputs = [np.array(x, np.float64) for x in case.inputs]
        out, cache = case.forward(*[x.copy() for x in inputs])
        upstream = np.asarray(np.random.default_rng(seed + 1).standard_normal(np.shape(out)))
        hand = _as_tuple(case.backward(upstream.copy(), cache))
        tensors = [torch.from_numpy(x.copy()).requires_grad_(True) for x in inputs]
        case.torch_forward(*tensors).backward(torch.from_numpy(upstream))
        torch_error = max(_rel_error(np.zeros_like(x) if h is None else h, t.grad.numpy())
                          for x, h, t in zip(inputs, hand, tensors))
    passed = report.passed and (torch_error is None or torch_error <= TORCH_TOLERANCE)
    return Row(case.op, case.config, fd_error, torch_error, passed, detail)


def verify(cases=None, use_torch: bool | None = None, seed: int = 0) -> list:
    """Check ``cases`` (default: ``default_cases()``); torch is used when installed unless
    ``use_torch`` is False."""
    if use_torch is None:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            use_torch = False
    return [check_case(c, use_torch, seed) for c in (default_cases() if cases is None else cases)]


def format_table(rows: list) -> str:
    head = ("op", "configuration", "vs finite diff", "vs autograd", "result")
    body = [(r.op, r.config, f"{r.fd_rel_error:.1e}",
             "n/a" if r.torch_rel_error is None else f"{r.torch_rel_error:.1e}", "pass" if r.passed else "FAIL")
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(f"{x:<{w}}" for x, w in zip(line, widths)).rstrip() for line in [head] + body]
    lines.insert(1, "-" * len(lines[0]))
    for r in rows:
        if not r.passed and r.detail:
            lines.append(f"FAIL {r.op} [{r.config}]: {r.detail}")
    failed = sum(not r.passed for r in rows)
    lines.append(f"{'PASSED' if not failed else 'FAILED'}: {len(rows) - failed}/{len(rows)} configurations "
                 f"(max relative error: finite differences in float64, eps 1e-6; autograd within "
                 f"{TORCH_TOLERANCE:g})")
    return "\n".join(lines)


def _torch():
    import torch
    import torch.nn.functional as TF
    return torch, TF


def default_cases(seed: int = 0) -> list:
    """Every op of ``handgrad.functional`` over a small grid of shapes and options; an op with a
    compiled kernel is checked through ``kernels.op`` (its kernel, unless the references are asked for)."""
    op = kernels.op
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    cases = []

    def torch_fn(build):
        """Defer importing torch until the reference runs."""
        return lambda *tensors: build(*_torch())(*tensors)

    for shape, out_features, bias in (((2, 4), 3, True), ((2, 4), 3, False), ((2, 3, 4), 5, True)):
        inputs = (normal(shape), normal((out_features, shape[-1]))) + ((normal(out_features),) if bias else ())
        cases.append(OpCase("linear", f"x {shape} -> {out_features}, bias={bias}", op("linear_forward"),
                            op("linear_backward"), inputs, torch_fn(lambda torch, TF: TF.linear)))
    for x_shape, w_shape, stride, padding, bias in (((2, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0), True),
                                                    ((1, 2, 5, 5), (3, 2, 3, 3), (2, 2), (1, 1), True),
                                                    ((2, 1, 5, 6), (2, 1, 2, 3), (1, 2), (0, 1), False),
                                                    ((2, 3, 4, 4), (2, 3, 1, 1), (1, 1), (0, 0), True)):
        inputs = (normal(x_shape), normal(w_shape)) + ((normal(w_shape[0]),) if bias else ())
        fwd = (lambda s, p: lambda x, w, b=None: F.conv2d_forward(x, w, b, s, p))(stride, padding)
        ref = (lambda s, p: lambda torch, TF: lambda x, w, b=None: TF.conv2d(x, w, b, s, p))(stride, padding)
        cases.append(OpCase("conv2d", f"x {x_shape} w {w_shape[2:]} stride {stride} padding {padding} bias={bias}",
                            fwd, F.conv2d_backward, inputs, torch_fn(ref)))
    for name, fwd_op, bwd_op, ref_name in (("max_pool2d", F.max_pool2d_forward, F.max_pool2d_backward, "max_pool2d"),
                                           ("avg_pool2d", F.avg_pool2d_forward, F.avg_pool2d_backward, "avg_pool2d")):
        for shape, kernel, stride, padding in (((2, 2, 4, 4), (2, 2), (2, 2), (0, 0)),
                                               ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1)),
                                               ((1, 2, 4, 5), (2, 3), (1, 1), (0, 0))):
            fwd = (lambda f, k, s, p: lambda x: f(x, k, s, p))(fwd_op, kernel, stride, padding)
            ref = (lambda r, k, s, p: lambda torch, TF: lambda x: getattr(TF, r)(x, k, s, p))(ref_name, kernel,
                                                                                                stride, padding)
            cases.append(OpCase(name, f"x {shape} kernel {kernel} stride {stride} padding {padding}", fwd, bwd_op,
                                (normal(shape),), torch_fn(ref)))
    for name, fwd, bwd, ref in (
            ("relu", F.relu_forward, F.relu_backward, lambda torch, TF: TF.relu),
            ("leaky_relu", lambda x: F.leaky_relu_forward(x, 0.1), F.leaky_relu_backward,
             lambda torch, TF: lambda x: TF.leaky_relu(x, 0.1)),
            ("sigmoid", F.sigmoid_forward, F.sigmoid_backward, lambda torch, TF: torch.sigmoid),
            ("tanh", F.tanh_forward, F.tanh_backward, lambda torch, TF: torch.tanh)):
        cases.append(OpCase(name, "x (3, 5)" + (", negative_slope 0.1" if name == "leaky_relu" else ""), fwd, bwd,
                            (normal((3, 5)),), torch_fn(ref)))
    for name, fwd_op, bwd_op in (("softmax", F.softmax_forward, F.softmax_backward),
                                 ("log_softmax", F.log_softmax_forward, F.log_softmax_backward)):
        for dim in (-1, 1):
            fwd = (lambda f, d: lambda x: f(x, d))(fwd_op, dim)
            ref = (lambda n, d: lambda torch, TF: lambda x: getattr(TF, n)(x, dim=d))(name, dim)
            cases.append(OpCase(name, f"x (2, 3, 4), dim {dim}", fwd, bwd_op, (normal((2, 3, 4)),), torch_fn(ref)))
    target = rng.integers(0, 5, 4)
    for reduction in ("mean", "sum", "none"):
        for name, fwd_op, bwd_op, x in (("cross_entropy", op("cross_entropy_forward"), op("cross_entropy_backward"),
                                         normal((4, 5))),
                                        ("nll_loss", op("nll_loss_forward"), op("nll_loss_backward"),
                                         F.log_softmax_forward(normal((4, 5)), 1)[0])):
            fwd = (lambda f, r: lambda x: f(x, target, r))(fwd_op, reduction)
            ref = (lambda n, r: lambda torch, TF: lambda x: getattr(TF, n)(x, torch.from_numpy(target),
                                                                            reduction=r))(name, reduction)
            cases.append(OpCase(name, f"logits (4, 5), reduction {reduction}", fwd, bwd_op, (x,), torch_fn(ref)))
        mse_target = normal((3, 4))
        fwd = (lambda r: lambda x: F.mse_loss_forward(x, mse_target, r))(reduction)
        ref = (lambda r: lambda torch, TF: lambda x: TF.mse_loss(x, torch.from_numpy(mse_target), reduction=r))(
            reduction)
        cases.append(OpCase("mse_loss", f"x (3, 4), reduction {reduction}", fwd, F.mse_loss_backward,
                            (normal((3, 4)),), torch_fn(ref)))
    for shape, training in (((5, 3), True), ((2, 3, 3, 3), True), ((5, 3), False), ((2, 3, 3, 3), False)):
        running_mean, running_var = normal(3), rng.uniform(0.5, 2.0, 3)
        fwd = (lambda t: lambda x, w, b: op("batch_norm_forward")(x, w, b, running_mean.copy(), running_var.copy(),
                                                                  t))(training)
        ref = (lambda t: lambda torch, TF: lambda x, w, b: TF.batch_norm(
            x, torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy()), w, b, training=t))(
            training)
        cases.append(OpCase("batch_norm", f"x {shape}, {'training' if training else 'eval'}", fwd,
                            op("batch_norm_backward"), (normal(shape) * 2 + 1, normal(3), normal(3)), torch_fn(ref)))
    for p in (0.0, 0.5):
        def fwd(x, p=p):
            return F.dropout_forward(x, p, np.random.default_rng(7))  # the same mask on every call

        mask = fwd(np.ones((4, 6)))[1]
        ref = (lambda m: lambda torch, TF: lambda x: x * torch.from_numpy(m))(mask)
        cases.append(OpCase("dropout", f"x (4, 6), p {p}", fwd, F.dropout_backward, (normal((4, 6)),),
                            torch_fn(ref)))
    return cases
