"""handgrad.gradcheck itself: it passes correct gradients and catches wrong ones, naming where."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad import functional as F
from handgrad import nn
from handgrad.app.verify import spec_cases
from handgrad.functional import SPECS
from handgrad.gradcheck import compare, finite_differences, rel_error


class DoubledLinear(nn.Linear):
    """A deliberately broken layer: dL/dx comes back twice too large."""

    def backward(self, grad_output, input_grad=True):
        grad_input = super().backward(grad_output, input_grad)
        return None if grad_input is None else 2 * grad_input


class WrongBiasLinear(nn.Linear):
    """Broken in a parameter only: the bias gradient is off in one element."""

    def backward(self, grad_output, input_grad=True):
        grad_input = super().backward(grad_output, input_grad)
        self.bias.grad[1] += 1.0
        return grad_input


class NoInputGrad(nn.Module):
    """Forgets to return dL/dx."""

    def forward(self, x):
        self._save_for_backward(None, x.shape)
        return 3 * x

    def backward(self, grad_output, input_grad=True):
        self._saved(grad_output)
        return None


@pytest.mark.parametrize(
    "make, shape",
    [
        pytest.param(lambda: nn.Linear(4, 3), (2, 4), id="Linear"),
        pytest.param(lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (1, 2, 5, 5), id="Conv2d"),
        pytest.param(
            lambda: nn.Sequential(
                nn.Conv2d(1, 2, 3),
                nn.BatchNorm2d(2),
                nn.Tanh(),
                nn.AvgPool2d(2),
                nn.Flatten(),
                nn.Linear(8, 3),
                nn.LogSoftmax(dim=1),
            ),
            (3, 1, 6, 6),
            id="cnn",
        ),
    ],
)
def test_passes_for_correct_layers(make, shape):
    module = make()
    x = np.random.default_rng(0).standard_normal(shape)
    report = handgrad.gradcheck(module, x)
    assert report.passed, str(report)
    names = ["input"] + [name for name, _ in module.named_parameters()]
    assert [c.name for c in report.checks] == names
    # absolute: the conv bias feeding BatchNorm has a true gradient of 0, so its relative error is noise
    assert all(c.max_abs_error < 1e-7 for c in report.checks), str(report)


def test_fails_for_a_doubled_input_gradient_and_names_it():
    x = np.random.default_rng(0).standard_normal((2, 4))
    report = handgrad.gradcheck(DoubledLinear(4, 3), x)
    assert not report.passed
    assert not report["input"].passed
    assert report["weight"].passed and report["bias"].passed
    assert abs(report["input"].max_rel_error - 1.0) < 1e-6  # analytic = 2 * numeric
    worst = report["input"]
    assert len(worst.worst_index) == 2
    assert abs(worst.analytic - 2 * worst.numeric) < 1e-6 * abs(worst.numeric) + 1e-9
    text = str(report)
    assert "FAILED: 2/3 tensors" in text
    assert f"FAIL  at {worst.worst_index}: analytic" in text
    with pytest.raises(AssertionError, match="input .* FAIL"):
        report.raise_for_failure()


def test_fails_for_one_wrong_parameter_element_and_names_it():
    report = handgrad.gradcheck(WrongBiasLinear(4, 3), np.ones((2, 4)))
    assert [c.name for c in report.checks if not c.passed] == ["bias"]
    assert report["bias"].worst_index == (1,)
    assert "bias" in str(report) and "at (1,)" in str(report)


def test_fails_when_backward_returns_nothing():
    report = handgrad.gradcheck(NoInputGrad(), np.ones((2, 2)))
    assert not report["input"].passed
    assert report["input"].analytic == 0.0 and abs(report["input"].numeric) > 0


def test_fails_for_a_gradient_of_the_wrong_shape():
    report = handgrad.gradcheck((F.relu_forward, lambda g, cache: g.sum(axis=0)), (np.ones((3, 2)),))
    assert not report.passed and report["input0"].max_abs_error == np.inf


def test_functional_pair_form():
    rng = np.random.default_rng(1)
    x, weight, bias = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    report = handgrad.gradcheck((F.linear_forward, F.linear_backward), (x, weight, bias))
    assert report.passed, str(report)
    assert [c.name for c in report.checks] == ["input0", "input1", "input2"]
    assert report.name == "linear_forward"


@pytest.mark.parametrize("name", list(SPECS))
def test_functional_pairs_pass(name):
    """Every op's pair in each configuration of its spec: options bound, integer labels passed through."""
    for case in spec_cases(SPECS[name], seed=2):
        report = handgrad.gradcheck((case.forward, case.backward), case.inputs)
        assert report.passed, f"{case.config}\n{report}"
        floating = [x for x in case.inputs if np.issubdtype(x.dtype, np.floating)]
        assert len(report.checks) == len(floating)


def test_functional_pair_with_a_wrong_backward_fails():
    def bad_linear_backward(grad_output, cache):
        grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, cache)
        return grad_input, grad_weight.T.reshape(grad_weight.shape), grad_bias

    rng = np.random.default_rng(3)
    report = handgrad.gradcheck(
        (F.linear_forward, bad_linear_backward),
        (rng.standard_normal((2, 3)), rng.standard_normal((3, 3)), rng.standard_normal(3)),
    )
    assert [c.name for c in report.checks if not c.passed] == ["input1"]


def test_report_prints_as_a_table():
    report = handgrad.gradcheck(nn.Linear(3, 2), np.ones((2, 3)))
    lines = str(report).splitlines()
    assert lines[0].startswith("gradcheck Linear(in_features=3, out_features=2, bias=True)  (float64, eps=1e-06")
    assert lines[1].split() == ["tensor", "shape", "max", "abs", "max", "rel", "result"]
    assert [line.split()[0] for line in lines[2:5]] == ["input", "weight", "bias"]
    assert all(line.rstrip().endswith("ok") for line in lines[2:5])
    assert lines[2].index("(2, 3)") == lines[1].index("shape")  # columns line up
    assert lines[-1] == "PASSED: 3/3 tensors"


def test_verbose_prints_the_report(capsys):
    report = handgrad.gradcheck(nn.Tanh(), np.ones((2, 2)), verbose=True)
    assert capsys.readouterr().out.strip() == str(report)


def test_leaves_the_module_and_the_global_generator_untouched():
    layer = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    before = layer.state_dict()
    handgrad.manual_seed(5)
    expected_next = handgrad.default_generator().random()
    handgrad.manual_seed(5)
    assert handgrad.gradcheck(layer, np.random.default_rng(0).standard_normal((4, 3))).passed
    assert handgrad.default_generator().random() == expected_next
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
        assert value.dtype == before[key].dtype
    assert all(p.grad is None for p in layer.parameters())


def test_float32_module_and_input_are_checked_in_float64():
    layer = nn.Linear(3, 2)
    report = handgrad.gradcheck(layer, np.ones((2, 3), np.float32))
    assert report.passed and report["input"].max_rel_error < 1e-6
    assert layer.weight.dtype == np.float32


def test_loss_modules_with_labels():
    rng = np.random.default_rng(4)
    report = handgrad.gradcheck(
        nn.CrossEntropyLoss(reduction="none"), (rng.standard_normal((3, 4)), rng.integers(0, 4, 3))
    )
    assert report.passed and [c.name for c in report.checks] == ["input"]


def test_parameters_that_do_not_require_grad_are_skipped():
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad = False
    report = handgrad.gradcheck(layer, np.ones((1, 3)))
    assert [c.name for c in report.checks] == ["input", "weight"]


# -- the shared measures: relative error and the comparison with autograd ------------------------------------
@pytest.mark.parametrize(
    "got, expected, rel, abs_, index",
    [
        pytest.param([1.0, 2.5], [1.0, 2.0], 0.25, 0.5, (1,), id="relative"),
        pytest.param([0.0, 1e-9], [0.0, 0.0], 1e-9, 1e-9, (1,), id="all-zero-expected-is-absolute"),
        pytest.param([[1.0, 2.0]], [1.0, 2.0], np.inf, np.inf, (), id="shape-mismatch"),
        pytest.param(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, 0.0, (), id="empty"),
    ],
)
def test_compare(got, expected, rel, abs_, index):
    c = compare(got, expected)
    assert (c.rel_error, c.abs_error, c.index) == (pytest.approx(rel), pytest.approx(abs_), index)
    assert rel_error(got, expected) == c.rel_error


def _doubled_weight_backward(grad_output, cache):
    grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, cache)
    return grad_input, 2 * grad_weight, grad_bias


def test_pair_with_a_torch_reference_is_checked_against_autograd_too():
    TF = pytest.importorskip("torch.nn.functional")
    rng = np.random.default_rng(5)
    inputs = (rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2))
    report = handgrad.gradcheck((F.linear_forward, F.linear_backward), inputs, torch_forward=TF.linear)
    assert report.passed, str(report)
    assert all(c.autograd is not None and c.autograd.rel_error < 1e-12 for c in report.checks)
    assert report.autograd_rel_error == max(c.autograd.rel_error for c in report.checks)
    broken = handgrad.gradcheck((F.linear_forward, _doubled_weight_backward), inputs, torch_forward=TF.linear)
    assert [c.name for c in broken.checks if not c.autograd_passed] == ["input1"]
    weight = broken["input1"]
    assert weight.autograd.got == pytest.approx(2 * weight.autograd.expected)
    assert f"at {weight.autograd.index}: analytic" in str(broken) and "autograd" in str(broken)


def test_a_torch_reference_is_refused_for_a_module():
    with pytest.raises(handgrad.HandgradError, match="gradcheck: torch_forward is for a \\(forward, backward\\) pair"):
        handgrad.gradcheck(nn.Linear(2, 2), np.ones((1, 2)), torch_forward=lambda x: x)


def test_finite_differences_set_kinks_aside():
    x = np.array([-1.0, 0.0, 2.0])
    numeric, kink = finite_differences(lambda: float(np.abs(x).sum()), x, [0, 1, 2])
    assert kink.tolist() == [False, True, False]
    np.testing.assert_allclose(numeric[~kink], [-1.0, 1.0])
    np.testing.assert_array_equal(x, [-1.0, 0.0, 2.0])  # restored
