"""handgrad explain: every layer is walked forward and backward, every gradient agrees with its
references, and a deliberately broken backward is caught and named."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import nn
from handgrad.app.cli import main
from handgrad.app.explain import explain, explain_named


class DoubledWeightLinear(nn.Linear):
    """Deliberately broken: grad_weight comes back twice too large."""

    def backward(self, grad_output, input_grad=True):
        grad_input = super().backward(grad_output, input_grad)
        self.weight.grad *= 2
        return grad_input


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4, 5),
        nn.LeakyReLU(0.1),
        nn.Linear(5, 3),
    )


@pytest.fixture
def batch(rng):
    return rng.standard_normal((3, 1, 10, 10)).astype(np.float32), np.array([0, 2, 1])


def test_every_layer_is_listed_forward_and_backward(batch):
    model = small_cnn()
    report = explain(model, *batch, use_torch=False)
    text = str(report)
    forward, backward = text.split("\nBACKWARD\n")
    for i, layer in enumerate(model):
        name = f"[{i}] {repr(layer).splitlines()[0]}"
        assert name in forward and name in backward, name
    assert "[loss] CrossEntropyLoss()" in forward and "[loss] CrossEntropyLoss()" in backward
    assert backward.index("[loss]") < backward.index("[11]") < backward.index("[0]")
    assert "y = x @ weight.T + bias" in forward and "grad_weight = G.T @ x" in backward
    assert "(3, 1, 10, 10) -> (3, 3, 10, 10)" in forward


def test_all_gradients_agree_with_finite_differences(batch):
    report = explain(small_cnn(), *batch, use_torch=False, samples=0)  # every element
    assert report.passed, str(report)
    checks = [g for s in report.steps for g in s.grads]
    assert len(checks) == 1 + 12 + 2 * 5  # loss, every layer's grad_input, weight and bias of 5 layers
    # relative, except where the true gradient is 0 (the conv bias feeding BatchNorm): absolute there
    assert all(g.fd_rel_error < 1e-6 or g.fd_abs_error < 1e-9 for g in checks), str(report)
    assert all(g.torch_rel_error is None for g in checks)


def test_all_gradients_agree_with_autograd(batch):
    pytest.importorskip("torch")
    report = explain(small_cnn(), *batch)
    assert report.passed, str(report)
    checked = [g for s in report.steps for g in s.grads if g.torch_rel_error is not None]
    dropout = [g for s in report.steps if "Dropout" in s.name for g in s.grads]
    assert len(checked) == 1 + 12 + 2 * 5 - len(dropout)  # dropout's mask has no torch reference
    assert all(g.torch_rel_error < 1e-12 or g.torch_abs_error < 1e-15 for g in checked), str(report)


def test_the_model_is_left_untouched(batch):
    model = small_cnn()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    explain(model, *batch, use_torch=False)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.dtype == np.float32


def test_a_broken_backward_is_caught_and_named(batch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 6), nn.ReLU(), DoubledWeightLinear(6, 3))
    report = explain(model, *batch, use_torch=False)
    assert not report.passed
    assert report.failures() == [("[3] DoubledWeightLinear(in_features=6, out_features=3, bias=True)", "weight")]
    text = str(report)
    assert "FAIL" in text and text.splitlines()[-1].startswith("FAILED: 1 of")
    assert report.steps[3].grads[1].fd_rel_error > 0.4


def test_named_model_on_digits():
    report = explain_named("tiny-cnn", "digits", batch_size=2, use_torch=False, samples=8)
    assert report.passed, str(report)
    assert "explain tiny-cnn on digits" in str(report)


def test_cli(capsys):
    assert main(["explain", "--model", "tiny-mlp", "--batch-size", "2", "--samples", "6"]) == 0
    out = capsys.readouterr().out
    assert "FORWARD" in out and "BACKWARD" in out and "PASSED" in out
    assert "vs finite differences" in out
