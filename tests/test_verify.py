"""handgrad gradcheck: every op over its configuration grid passes, and a broken backward is caught."""

from __future__ import annotations

import re

import numpy as np
import pytest

from handgrad import functional as F
from handgrad.app.cli import main
from handgrad.app.verify import OpCase, check_case, default_cases, format_table, verify
from handgrad.functional import SPECS

#: pairs that are not ops of their own: the user-function activation (its derivative is checked where the
#: user defines it, nn.check_derivative) and the plain versions kept beside the fast ones (test_fast_paths.py)
NOT_OPS = {"elementwise"}


def test_every_pair_in_functional_has_a_spec_with_cases():
    pairs = {
        name[: -len("_forward")]
        for name in dir(F)
        if name.endswith("_forward") and hasattr(F, name.replace("_forward", "_backward"))
    }
    assert pairs - NOT_OPS == set(SPECS)
    for name, spec in SPECS.items():
        assert spec.forward is getattr(F, f"{name}_forward") and spec.backward is getattr(F, f"{name}_backward")
    assert [c.op for c in default_cases()] == [name for name, spec in SPECS.items() for _ in spec.make_cases()]
    assert all(spec.make_cases() for spec in SPECS.values())


def test_every_configuration_passes_finite_differences():
    rows = verify(use_torch=False)
    assert all(r.passed for r in rows), format_table(rows)
    assert max(r.fd_rel_error for r in rows) < 1e-6
    assert all(r.torch_rel_error is None for r in rows)


def test_every_configuration_matches_autograd():
    pytest.importorskip("torch")
    rows = verify(use_torch=True)
    assert all(r.passed for r in rows), format_table(rows)
    assert max(r.torch_rel_error for r in rows) < 1e-12


def _broken_linear_backward(grad_output, cache):
    grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, cache)
    return grad_input, grad_weight * 1.01, grad_bias  # grad_weight off by 1%


def test_a_broken_backward_is_reported_as_a_failure():
    rng = np.random.default_rng(0)
    case = OpCase(
        "broken_linear",
        "x (2, 4) -> 3",
        F.linear_forward,
        _broken_linear_backward,
        (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)),
    )
    row = check_case(case, use_torch=False)
    assert not row.passed
    assert 0.005 < row.fd_rel_error < 0.02
    table = format_table([row])
    assert "FAIL" in table and "broken_linear" in table and "input1" in table
    assert table.splitlines()[-1].startswith("FAILED: 0/1")


def test_a_broken_backward_is_caught_by_autograd_too():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    import torch.nn.functional as TF

    case = OpCase(
        "broken_linear",
        "x (2, 4) -> 3",
        F.linear_forward,
        _broken_linear_backward,
        (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)),
        TF.linear,
    )
    row = check_case(case, use_torch=True)
    assert not row.passed and row.torch_rel_error > 1e-3


def test_cli_prints_the_table(capsys):
    assert main(["gradcheck", "--op", "relu", "--op", "conv2d"]) == 0
    out = capsys.readouterr().out
    assert "vs finite diff" in out and "vs autograd" in out
    assert out.count("conv2d ") == 11 and out.count("relu ") == 1
    assert "PASSED: 12/12" in out


def test_cli_refuses_an_unknown_op(capsys):
    assert main(["gradcheck", "--op", "convolution"]) == 1
    assert "unknown op(s) convolution" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(SPECS))
def test_cases_do_not_share_their_arrays(name):
    """Each configuration is built with arrays of its own (inputs, targets, running statistics), so no
    case sees another's (closures over loop variables once made every case use the last ones drawn)."""
    arrays = [
        a
        for case in SPECS[name].make_cases()
        for a in (*case.tensors, *case.options.values())
        if isinstance(a, np.ndarray)
    ]
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


def test_each_case_runs_with_its_own_options(rng):
    """The two BatchNorm eval cases differ only in their running statistics: the same input gives
    different outputs, and calling a case's forward leaves its options as they were."""
    cases = {(c.op, c.config): c for c in default_cases()}
    x, weight, bias = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)
    flat = cases["batch_norm", "x (5, 3), eval"].forward(x, weight, bias)[0]
    spatial = cases["batch_norm", "x (2, 3, 3, 3), eval"].forward(x, weight, bias)[0]
    assert not np.allclose(flat, spatial), "the two eval cases share one set of running statistics"
    training = cases["batch_norm", "x (5, 3), training"]
    first = training.forward(x, weight, bias)[0]
    np.testing.assert_array_equal(training.forward(x, weight, bias)[0], first)
    dropout = cases["dropout", "x (4, 6), p 0.5"]
    x = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(dropout.forward(x)[0], dropout.forward(x)[0])  # the same mask each call


def test_cli_lists_every_op_of_the_specs(capsys):
    assert main(["gradcheck", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(default_cases())
    assert {line.split()[0] for line in lines} == set(SPECS)


def test_a_failure_names_the_tensor_element_expected_got_and_error():
    rng = np.random.default_rng(0)
    case = OpCase(
        "broken_linear",
        "x (2, 4) -> 3",
        F.linear_forward,
        _broken_linear_backward,
        (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)),
    )
    row = check_case(case, use_torch=False)
    assert re.fullmatch(r"input1 at \(\d, \d\): hand \S+, numeric \S+ \(relative error 1\.0e-02\)", row.detail), (
        row.detail
    )
    assert f"FAIL broken_linear [x (2, 4) -> 3]: {row.detail}" in format_table([row])


def test_an_autograd_disagreement_names_the_tensor_element_expected_got_and_error():
    pytest.importorskip("torch")
    import torch.nn.functional as TF

    rng = np.random.default_rng(0)
    case = OpCase(
        "broken_linear",
        "x (2, 4) -> 3",
        F.linear_forward,
        _broken_linear_backward,
        (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)),
        TF.linear,
    )
    row = check_case(case, use_torch=True)
    assert re.search(r"input1 at \(\d, \d\): hand \S+, autograd \S+ \(relative error 1\.0e-02\)", row.detail), (
        row.detail
    )
