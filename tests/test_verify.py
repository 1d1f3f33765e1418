"""handgrad gradcheck: every op over its configuration grid passes, and a broken backward is caught."""
from __future__ import annotations

import re

import numpy as np
import pytest

from handgrad import functional as F
from handgrad.cli import main
from handgrad.verify import OpCase, check_case, default_cases, format_table, verify


def test_every_op_is_in_the_grid():
    ops = {c.op for c in default_cases()}
    assert ops == {"linear", "conv2d", "max_pool2d", "avg_pool2d", "relu", "leaky_relu", "sigmoid", "tanh",
                   "softmax", "log_softmax", "cross_entropy", "nll_loss", "mse_loss", "batch_norm", "dropout"}


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
    case = OpCase("broken_linear", "x (2, 4) -> 3", F.linear_forward, _broken_linear_backward,
                  (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)))
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
    case = OpCase("broken_linear", "x (2, 4) -> 3", F.linear_forward, _broken_linear_backward,
                  (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)), TF.linear)
    row = check_case(case, use_torch=True)
    assert not row.passed and row.torch_rel_error > 1e-3


def test_cli_prints_the_table(capsys):
    assert main(["gradcheck", "--op", "relu", "--op", "conv2d"]) == 0
    out = capsys.readouterr().out
    assert "vs finite diff" in out and "vs autograd" in out
    assert out.count("conv2d ") == 4 and out.count("relu ") == 1
    assert "PASSED: 5/5" in out


def test_cli_refuses_an_unknown_op(capsys):
    assert main(["gradcheck", "--op", "convolution"]) == 1
    assert "unknown op(s) convolution" in capsys.readouterr().err


def test_cases_do_not_share_their_fixed_arguments(rng):
    """Each configuration closes over its own MSE target and BatchNorm running statistics: the same
    input gives different results where only those differ (closures over the loop variables made
    every case use the last ones drawn)."""
    cases = {(c.op, c.config): c for c in default_cases()}
    x = rng.standard_normal((3, 4))
    per_element = cases["mse_loss", "x (3, 4), reduction none"].forward(x)[0]
    summed = cases["mse_loss", "x (3, 4), reduction sum"].forward(x)[0]
    assert not np.isclose(per_element.sum(), summed), "the 'none' and 'sum' cases share one target"
    x, weight, bias = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)
    flat = cases["batch_norm", "x (5, 3), eval"].forward(x, weight, bias)[0]
    spatial = cases["batch_norm", "x (2, 3, 3, 3), eval"].forward(x, weight, bias)[0]
    assert not np.allclose(flat, spatial), "the two eval cases share one set of running statistics"


def test_a_failure_names_the_tensor_element_expected_got_and_error():
    rng = np.random.default_rng(0)
    case = OpCase("broken_linear", "x (2, 4) -> 3", F.linear_forward, _broken_linear_backward,
                  (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)))
    row = check_case(case, use_torch=False)
    assert re.fullmatch(r"input1 at \(\d, \d\): hand \S+, numeric \S+ \(relative error 1\.0e-02\)", row.detail), \
        row.detail
    assert f"FAIL broken_linear [x (2, 4) -> 3]: {row.detail}" in format_table([row])


def test_an_autograd_disagreement_names_the_tensor_element_expected_got_and_error():
    pytest.importorskip("torch")
    import torch.nn.functional as TF
    rng = np.random.default_rng(0)
    case = OpCase("broken_linear", "x (2, 4) -> 3", F.linear_forward, _broken_linear_backward,
                  (rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)), TF.linear)
    row = check_case(case, use_torch=True)
    assert re.search(r"input1 at \(\d, \d\): hand \S+, autograd \S+ \(relative error 1\.0e-02\)", row.detail), \
        row.detail
