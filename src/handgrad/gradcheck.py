"""Check hand-written gradients against central finite differences, in float64.

For f = sum(out * G) with a random upstream gradient G, every element e of the input and of each
parameter is nudged both ways: numeric = (f(e + eps) - f(e - eps)) / (2 eps), compared with the
analytic dL/de from ``backward``. An element passes when |analytic - numeric| <= atol + rtol*|numeric|.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from . import _random


@dataclass
class TensorCheck:
    """The comparison for one tensor: the worst element and the errors over all of them."""
    name: str
    shape: tuple
    max_abs_error: float
    max_rel_error: float      # max |analytic - numeric| / max |numeric|, over the whole tensor
    worst_index: tuple
    analytic: float           # at the worst element
    numeric: float
    passed: bool

    def describe(self) -> str:
        status = "ok" if self.passed else "FAIL"
        return (f"{self.name:<18} {str(self.shape):<18} {self.max_abs_error:10.2e} {self.max_rel_error:10.2e}  "
                f"{status}" + ("" if self.passed else
                               f"  at {self.worst_index}: analytic {self.analytic:.8g}, numeric {self.numeric:.8g}"))


@dataclass
class GradcheckReport:
    """Per-tensor results; ``passed`` when every tensor passed. ``print(report)`` shows a table."""
    name: str
    checks: list = field(default_factory=list)
    eps: float = 1e-6
    atol: float = 1e-5
    rtol: float = 1e-3

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __getitem__(self, name) -> TensorCheck:
        return next(c for c in self.checks if c.name == name)

    def __str__(self):
        head = (f"gradcheck {self.name}  (float64, eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g})\n"
                f"{'tensor':<18} {'shape':<18} {'max abs':>10} {'max rel':>10}  result")
        return "\n".join([head] + [c.describe() for c in self.checks] +
                         [f"{'PASSED' if self.passed else 'FAILED'}: {sum(c.passed for c in self.checks)}"
                          f"/{len(self.checks)} tensors"])

    def raise_for_failure(self) -> "GradcheckReport":
        if not self.passed:
            raise AssertionError(str(self))
        return self


def _compare(name, analytic, numeric, atol, rtol) -> TensorCheck:
    analytic = np.zeros_like(numeric) if analytic is None else np.asarray(analytic, dtype=np.float64)
    if analytic.shape != numeric.shape:
        return TensorCheck(name, numeric.shape, np.inf, np.inf, (), np.nan, np.nan, False)
    diff = np.abs(analytic - numeric)
    ok = diff <= atol + rtol * np.abs(numeric)
    worst = np.unravel_index(np.argmax(diff - (atol + rtol * np.abs(numeric))), diff.shape) if diff.size else ()
    scale = np.abs(numeric).max() if numeric.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return TensorCheck(name, numeric.shape, max_abs, max_abs / scale if scale > 0 else max_abs,
                       tuple(int(i) for i in worst), float(analytic[worst]) if diff.size else 0.0,
                       float(numeric[worst]) if diff.size else 0.0, bool(ok.all()))


def nudged_values(f, array, indices, eps):
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


def _numeric_grad(f, array, eps):
    """Central differences of the scalar f() with respect to every element of ``array``."""
    plus, minus = nudged_values(f, array, range(array.size), eps)
    return ((plus - minus) / (2 * eps)).reshape(array.shape)


def _as_float64(value):
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return np.array(value, dtype=np.float64, copy=True)
    return value


def gradcheck(fn_or_module, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, seed: int = 0,
              verbose: bool = False) -> GradcheckReport:
    """Finite-difference check of a module's (or a forward/backward pair's) gradients, in float64.

    ``fn_or_module``: an ``nn.Module`` (checked: its first input and every parameter; the module is
    copied and converted to float64, the original is untouched), or a pair ``(forward, backward)``
    of functional ops, ``forward(*inputs) -> (out, cache)``, ``backward(grad_output, cache) ->
    grads`` (checked: every floating input). Non-floating inputs (class labels) pass through.
    Returns a GradcheckReport; with ``verbose`` it is also printed.
    """
    from .nn import Module

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
            f = lambda: float(np.sum(run() * upstream))
            checks = [("input", inputs[0], grad_input)]
            checks += [(n, p.data, p.grad) for n, p in module.named_parameters() if p.requires_grad]
        else:
            forward, backward = fn_or_module
            name = getattr(forward, "__name__", "function")
            out, cache = forward(*inputs)
            upstream = rng.standard_normal(np.shape(out))
            grads = backward(upstream.copy() if upstream.ndim else upstream, cache)
            grads = grads if isinstance(grads, tuple) else (grads,)
            f = lambda: float(np.sum(np.asarray(forward(*inputs)[0], dtype=np.float64) * upstream))
            checks = [(f"input{i}", x, grads[i] if i < len(grads) else None) for i, x in enumerate(inputs)
                      if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)]
        report = GradcheckReport(name, eps=eps, atol=atol, rtol=rtol)
        for tensor_name, array, analytic in checks:
            report.checks.append(_compare(tensor_name, analytic, _numeric_grad(f, array, eps), atol, rtol))
    finally:
        _random.set_state(saved_state)
    if verbose:
        print(report)
    return report
