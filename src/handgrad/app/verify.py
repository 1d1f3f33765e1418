"""``handgrad gradcheck``: every functional op's hand-written backward, over a grid of
configurations, against central finite differences (``handgrad.gradcheck``: float64, every element
of small inputs, a random upstream gradient) and against torch autograd on the same op built from
its torch reference (when torch is installed). One row per (op, configuration); the ops, their
configurations and references are their specs' (``functional.SPECS``).

    >>> rows = verify()                # or verify([OpCase(...)]) for an op of your own
    >>> print(format_table(rows))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..functional import SPECS
from ..gradcheck import EPS, TORCH_TOLERANCE, gradcheck


@dataclass
class OpCase:
    """One op in one configuration. ``forward(*inputs) -> (out, cache)`` and ``backward(grad_output,
    cache) -> one gradient per input`` (a tuple, or an array for one input); the gradient of every
    floating input is checked (integer ones, class indices, pass through; fixed arguments are closed
    over). ``torch_forward(*tensors)``
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


def check_case(case: OpCase, use_torch: bool = True, seed: int = 0) -> Row:
    """``handgrad.gradcheck`` of one case: finite differences (every element) and, with ``use_torch``,
    autograd on the case's torch reference, both for the same random upstream gradient."""
    report = gradcheck(
        (case.forward, case.backward),
        tuple(case.inputs),
        seed=seed,
        torch_forward=case.torch_forward if use_torch else None,
    )
    fd_error = max((c.max_rel_error for c in report.checks), default=0.0)
    return Row(case.op, case.config, fd_error, report.autograd_rel_error, report.passed, _detail(report))


def _detail(report) -> str:
    """Each failing tensor: the element, the hand-written value, the reference's and the error."""
    parts = []
    for c in report.checks:
        if not c.fd_passed:
            parts.append(
                f"{c.name} at {c.worst_index}: hand {c.analytic:.6g}, numeric {c.numeric:.6g} "
                f"(relative error {c.max_rel_error:.1e})"
            )
        if not c.autograd_passed:
            a = c.autograd
            parts.append(
                f"{c.name} at {a.index}: hand {a.got:.6g}, autograd {a.expected:.6g} (relative error {a.rel_error:.1e})"
            )
    return "; ".join(parts)


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
    body = [
        (
            r.op,
            r.config,
            f"{r.fd_rel_error:.1e}",
            "n/a" if r.torch_rel_error is None else f"{r.torch_rel_error:.1e}",
            "pass" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(f"{x:<{w}}" for x, w in zip(line, widths)).rstrip() for line in [head] + body]
    lines.insert(1, "-" * len(lines[0]))
    for r in rows:
        if not r.passed and r.detail:
            lines.append(f"FAIL {r.op} [{r.config}]: {r.detail}")
    failed = sum(not r.passed for r in rows)
    lines.append(
        f"{'PASSED' if not failed else 'FAILED'}: {len(rows) - failed}/{len(rows)} configurations "
        f"(max relative error: finite differences in float64, eps {EPS:g}; autograd within "
        f"{TORCH_TOLERANCE:g})"
    )
    return "\n".join(lines)


def spec_cases(spec, seed: int = 0) -> list:
    """The cases of one op's spec as OpCases. Each call of a case's forward or torch reference gets its
    own copy of the options, so one that changes them in place (BatchNorm's running statistics,
    dropout's generator) sees the same values on every call."""
    return [_op_case(spec, case) for case in spec.make_cases(seed)]


def _op_case(spec, case) -> OpCase:
    options = case.options
    every = (True,) * len(spec.tensors)

    def forward(*tensors):
        return spec.forward(*tensors, **copy.deepcopy(options))

    def backward(grad_output, cache):
        return spec.tensor_gradients(spec.backward(grad_output, cache), every)

    def torch_forward(*tensors):
        import torch  # only when the reference runs

        return spec.torch_reference(torch)(*tensors, **copy.deepcopy(options))

    return OpCase(spec.name, case.config, forward, backward, tuple(case.tensors), torch_forward)


def default_cases(seed: int = 0) -> list:
    """Every op of ``handgrad.functional`` (``functional.SPECS``), in each configuration its spec lists."""
    return [op_case for spec in SPECS.values() for op_case in spec_cases(spec, seed)]
