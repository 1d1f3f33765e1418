"""The one gradient checker: central finite differences, the relative error, the comparison with
torch autograd and the tolerances. ``handgrad.gradcheck``, ``handgrad gradcheck`` (``verify``),
``handgrad explain`` and the tests present what these compute; none measures a gradient its own way.

For f = sum(out * G) with a random upstream gradient G, every element e of the input and of each
parameter is nudged both ways: numeric = (f(e + eps) - f(e - eps)) / (2 eps), compared with the
analytic dL/de from ``backward``. An element passes when |analytic - numeric| <= atol + rtol*|numeric|.
With a torch reference, the analytic gradients must also match autograd's for the same G (in
float64 both are exact up to rounding, so the tolerance is tight).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from . import _random
from .errors import HandgradError

EPS = 1e-6  # central differences in float64: truncation ~eps^2, rounding ~1e-16 / eps
ATOL, RTOL = 1e-5, 1e-3  # per element, against finite differences (gradcheck)
FD_TOLERANCE = 1e-5  # per tensor, relative, against finite differences: errors ~1e-9 when right
FD_ATOL = 1e-8  # ... or absolute, where the true gradient is 0 throughout (a bias before BatchNorm)
TORCH_TOLERANCE = 1e-6  # per tensor, relative, against autograd in float64: ~1e-15 when right
TORCH_ATOL = 1e-12  # ... or absolute, where autograd's gradient is 0 throughout
KINK_ATOL, KINK_RTOL = 1e-6, 1e-4  # one-sided differences further apart than this: not differentiable there


@dataclass(frozen=True)
class Comparison:
    """``got`` against ``expected`` over one tensor: the errors and the element where they are worst."""

    rel_error: float  # max|got - expected| / max|expected| (the absolute error where expected is all 0)
    abs_error: float  # max|got - expected|
    index: tuple  # the element of the largest |got - expected|
    got: float
    expected: float


def compare(got, expected) -> Comparison:
    """The relative and absolute error of ``got`` against ``expected`` (inf when the shapes differ)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return Comparison(np.inf, np.inf, (), np.nan, np.nan)
    if expected.size == 0:
        return Comparison(0.0, 0.0, (), 0.0, 0.0)
    diff = np.abs(got - expected)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    abs_error, scale = float(diff.max()), float(np.abs(expected).max())
    return Comparison(
        abs_error / scale if scale > 0 else abs_error,
        abs_error,
        tuple(int(i) for i in index),
        float(got[index]),
        float(expected[index]),
    )


def rel_error(got, expected) -> float:
    """max|got - expected| / max|expected| (the absolute error where expected is all zeros)."""
    return compare(got, expected).rel_error


def matches_finite_differences(c: Comparison) -> bool:
    return c.rel_error <= FD_TOLERANCE or c.abs_error <= FD_ATOL


def matches_autograd(c: Comparison) -> bool:
    return c.rel_error <= TORCH_TOLERANCE or c.abs_error <= TORCH_ATOL


@dataclass
class TensorCheck:
    """The comparison for one tensor: the worst element and the errors over all of them, against
    finite differences and (when a torch reference was given) against autograd."""

    name: str
    shape: tuple
    max_abs_error: float
    max_rel_error: float  # max |analytic - numeric| / max |numeric|, over the whole tensor
    worst_index: tuple
    analytic: float  # at the worst element
    numeric: float
    fd_passed: bool
    autograd: Comparison | None = None  # analytic (got) against autograd (expected)

    @property
    def autograd_passed(self) -> bool:
        return self.autograd is None or matches_autograd(self.autograd)

    @property
    def passed(self) -> bool:
        return self.fd_passed and self.autograd_passed

    def failures(self) -> list:
        """One line per reference this tensor disagrees with: the element, expected, got, the error."""
        lines = []
        if not self.fd_passed:
            lines.append(f"at {self.worst_index}: analytic {self.analytic:.8g}, numeric {self.numeric:.8g}")
        if not self.autograd_passed:
            a = self.autograd
            assert a is not None  # only a tensor compared with autograd can disagree with it
            lines.append(
                f"at {a.index}: analytic {a.got:.8g}, autograd {a.expected:.8g} (relative error {a.rel_error:.2e})"
            )
        return lines

    def describe(self) -> str:
        status = "ok" if self.passed else "FAIL"
        return (
            f"{self.name:<18} {str(self.shape):<18} {self.max_abs_error:10.2e} {self.max_rel_error:10.2e}  "
            f"{status}" + "".join(f"  {line}" for line in self.failures())
        )


@dataclass
class GradcheckReport:
    """Per-tensor results; ``passed`` when every tensor passed. ``print(report)`` shows a table."""

    name: str
    checks: list = field(default_factory=list)
    eps: float = EPS
    atol: float = ATOL
    rtol: float = RTOL

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def autograd_rel_error(self) -> float | None:
        """The largest relative error against autograd, or None when no torch reference was given."""
        errors = [c.autograd.rel_error for c in self.checks if c.autograd is not None]
        return max(errors) if errors else None

    def __getitem__(self, name) -> TensorCheck:
        return next(c for c in self.checks if c.name == name)

    def __str__(self):
        head = (
            f"gradcheck {self.name}  (float64, eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g})\n"
            f"{'tensor':<18} {'shape':<18} {'max abs':>10} {'max rel':>10}  result"
        )
        return "\n".join(
            [head]
            + [c.describe() for c in self.checks]
            + [
                f"{'PASSED' if self.passed else 'FAILED'}: {sum(c.passed for c in self.checks)}"
                f"/{len(self.checks)} tensors"
            ]
        )

    def raise_for_failure(self) -> GradcheckReport:
        if not self.passed:
            raise AssertionError(str(self))
        return self


def _compare(name, analytic, numeric, atol, rtol, autograd=None) -> TensorCheck:
    """Element-wise: |analytic - numeric| <= atol + rtol |numeric|; the worst element is the one
    furthest past its tolerance."""
    analytic = np.zeros_like(numeric) if analytic is None else np.asarray(analytic, dtype=np.float64)
    if analytic.shape != numeric.shape:
        return TensorCheck(name, numeric.shape, np.inf, np.inf, (), np.nan, np.nan, False, autograd)
    diff = np.abs(analytic - numeric)
    ok = diff <= atol + rtol * np.abs(numeric)
    worst = np.unravel_index(np.argmax(diff - (atol + rtol * np.abs(numeric))), diff.shape) if diff.size else ()
    overall = compare(analytic, numeric)
    return TensorCheck(
        name,
        numeric.shape,
        overall.abs_error,
        overall.rel_error,
        tuple(int(i) for i in worst),
        float(analytic[worst]) if diff.size else 0.0,
        float(numeric[worst]) if diff.size else 0.0,
        bool(ok.all()),
        autograd,
    )


def nudged_values(f, array, indices, eps) -> tuple[np.ndarray, np.ndarray]:
    """f() with each flat element ``indices[k]`` of ``array`` nudged up and down by eps: the arrays
    (plus, minus). ``array`` is changed in place and restored after each element."""
    flat = array.reshape(-1)
    assert np.shares_memory(flat, array) or array.size == 0
    plus, minus = np.zeros(len(indices)), np.zeros(len(indices))
    for k, i in enumerate(indices):
        original = flat[i]
        flat[i] = original + eps
        plus[k] = f()
        flat[i] = original - eps
        minus[k] = f()
        flat[i] = original
    return plus, minus


def numeric_grad(f, array, eps=EPS) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of ``array``."""
    plus, minus = nudged_values(f, array, range(array.size), eps)
    return ((plus - minus) / (2 * eps)).reshape(array.shape)


def finite_differences(f, array, indices, eps=EPS) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of f() at the flat ``indices`` of ``array`` (changed in place, restored),
    and a mask of the elements where the forward and backward differences disagree: a kink (a ReLU
    at 0, a tie in a max-pool window), where no derivative exists to compare with."""
    center = f()
    plus, minus = nudged_values(f, array, indices, eps)
    forward, backward = (plus - center) / eps, (center - minus) / eps
    kink = np.abs(forward - backward) > KINK_ATOL + KINK_RTOL * np.maximum(np.abs(forward), np.abs(backward))
    return (plus - minus) / (2 * eps), kink


def autograd_grads(torch_forward, inputs, upstream) -> list:
    """torch autograd's gradients of sum(torch_forward(*inputs) * upstream), in float64: one array per
    floating input (zeros where the output does not depend on it), None for the other inputs.
    Floating arrays become tensors that require grad (copies), integer arrays plain tensors, and
    anything else (a stride, a flag) is passed as it is."""
    import torch

    def as_torch(x):
        if not isinstance(x, np.ndarray):
            return x
        t = torch.from_numpy(np.array(x, copy=True))
        return t.to(torch.float64).requires_grad_(True) if np.issubdtype(x.dtype, np.floating) else t

    tensors = [as_torch(x) for x in inputs]
    out = torch_forward(*tensors)
    out.backward(torch.from_numpy(np.asarray(upstream, np.float64).reshape(out.shape)))
    return [
        None
        if not (isinstance(t, torch.Tensor) and t.requires_grad)
        else np.zeros(tuple(t.shape))
        if t.grad is None
        else t.grad.numpy()
        for t in tensors
    ]


def _as_float64(value):
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return np.array(value, dtype=np.float64, copy=True)
    return value


def gradcheck(
    fn_or_module,
    inputs,
    eps: float = EPS,
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
    verbose: bool = False,
    torch_forward=None,
) -> GradcheckReport:
    """Finite-difference check of a module's (or a forward/backward pair's) gradients, in float64.

    ``fn_or_module``: an ``nn.Module`` (checked: its first input and every parameter; the module is
    copied and converted to float64, the original is untouched), or a pair ``(forward, backward)``
    of functional ops, ``forward(*inputs) -> (out, cache)``, ``backward(grad_output, cache) ->
    grads`` (checked: every floating input). Non-floating inputs (class labels) pass through.
    ``torch_forward`` (pairs only): the same op written with torch, called on the inputs as tensors;
    each gradient must then also match autograd's for the same upstream gradient (``TORCH_TOLERANCE``).
    Returns a GradcheckReport; with ``verbose`` it is also printed.
    """
    from .nn import Module

    if torch_forward is not None and isinstance(fn_or_module, Module):
        raise HandgradError(
            "gradcheck",
            "torch_forward is for a (forward, backward) pair; got a module "
            f"{type(fn_or_module).__name__}, whose gradients are checked by finite "
            "differences",
        )
    inputs = tuple(_as_float64(x) for x in (inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
    rng = np.random.default_rng(seed)
    saved_state = _random.get_state()
    try:
        if isinstance(fn_or_module, Module):
            module = copy.deepcopy(fn_or_module).double()
            name = repr(fn_or_module).split("\n")[0]

            def run():
                _random.manual_seed(seed)  # the same dropout mask on every evaluation
                return np.asarray(module(*inputs), dtype=np.float64)

            upstream = rng.standard_normal(run().shape)
            module.zero_grad()
            run()
            grad_input = module.backward(upstream.copy() if upstream.ndim else float(upstream))

            def f():
                return float(np.sum(run() * upstream))

            checks = [("input", inputs[0], grad_input, None)]
            checks += [(n, p.data, p.grad, None) for n, p in module.named_parameters() if p.requires_grad]
        else:
            forward, backward = fn_or_module
            name = getattr(forward, "__name__", "function")
            out, cache = forward(*inputs)
            upstream = rng.standard_normal(np.shape(out))
            grads = backward(upstream.copy() if upstream.ndim else upstream, cache)
            grads = grads if isinstance(grads, tuple) else (grads,)

            def f():
                return float(np.sum(np.asarray(forward(*inputs)[0], dtype=np.float64) * upstream))

            auto = [None] * len(inputs) if torch_forward is None else autograd_grads(torch_forward, inputs, upstream)
            checks = [
                (f"input{i}", x, grads[i] if i < len(grads) else None, auto[i])
                for i, x in enumerate(inputs)
                if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)
            ]
        report = GradcheckReport(name, eps=eps, atol=atol, rtol=rtol)
        for tensor_name, array, analytic, expected in checks:
            autograd = (
                None if expected is None else compare(np.zeros_like(array) if analytic is None else analytic, expected)
            )
            report.checks.append(_compare(tensor_name, analytic, numeric_grad(f, array, eps), atol, rtol, autograd))
    finally:
        _random.set_state(saved_state)
    if verbose:
        print(report)
    return report
