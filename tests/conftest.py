"""Shared helpers: an assertion over handgrad.gradcheck's relative error, the weight copy handgrad ->
torch, and one function that checks a layer three ways (PyTorch forward, PyTorch autograd gradients,
finite differences).

torch is imported lazily inside the helpers, so test files that never call them run without it.
"""

from __future__ import annotations

import numpy as np
import pytest

import handgrad
from handgrad.gradcheck import TORCH_TOLERANCE as TOL  # float64 parity with PyTorch: max|a - b| / max|b|
from handgrad.gradcheck import rel_error as rel_err  # noqa: F401  (the one measure, for the tests that import it)


def assert_close(got, expected, what: str, tol: float = TOL) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    err = rel_err(got, expected)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"


def train_argv(out, *options: str, model: str = "tiny-mlp", epochs: int = 1) -> list[str]:
    """The arguments of a quiet ``handgrad train`` on the embedded digits into ``out``, then ``options``."""
    quiet_run = ["train", "--dataset", "digits", "--model", model, "--epochs", str(epochs), "--quiet"]
    return quiet_run + ["--out", str(out), *options]


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def copy_weights_to_torch(model, torch_model) -> None:
    """handgrad -> torch through the state_dict, with no renaming (the keys must already agree)."""
    import torch

    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})


handgrad.manual_seed(0)  # layers built while collecting (in parametrize lists) get fixed weights

#: Files that take far longer than their number of tests suggests (child processes, a browser,
#: compiling kernels), longest first. `make test` hands whole files to two workers in the order
#: of ``pytest_collection_modifyitems`` below: these start first, so the last files either worker
#: takes are short ones and neither waits long for the other at the end.
LONG_FILES = (
    "test_kernels_cache.py",
    "test_kernels_fused.py",
    "test_cpp_parity.py",
    "test_report.py",
    "test_compare_sweep.py",
    "test_plugins.py",
    "test_distributed.py",
    "test_training.py",
    "test_history_steps.py",
    "test_examples.py",
    "test_cli.py",
)


def pytest_collection_modifyitems(items):
    """Whole files in the order they should start: ``LONG_FILES``, then the rest by number of
    tests, most first (pytest-xdist's own order for ``--dist loadfile``, which ``make test`` turns
    off with ``--no-loadscope-reorder`` so that this one holds). Tests keep their order within a file."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def start(item) -> tuple:
        name = item.path.name
        return (LONG_FILES.index(name), 0) if name in LONG_FILES else (len(LONG_FILES), -counts[name])

    items.sort(key=start)  # stable: each file's tests stay together and in order


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same handgrad generator state (weights, dropout masks)."""
    handgrad.manual_seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def check_against_torch(model, torch_model, x, rng, gradcheck: bool = True) -> None:
    """Run ``model`` and ``torch_model`` (same weights, float64) on ``x`` and compare the output, dL/dx
    and dL/dparameter for a random upstream gradient; then ``handgrad.gradcheck`` the model."""
    import torch

    model.double()
    torch_model.double()
    copy_weights_to_torch(model, torch_model)
    x = np.asarray(x, np.float64)

    out = model(x)
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = torch_model(x_t)
    assert_close(out, to_numpy(out_t), "output")

    grad_output = rng.standard_normal(out.shape)
    model.zero_grad()
    grad_input = model.backward(grad_output.copy())
    out_t.backward(torch.from_numpy(grad_output))
    assert_close(grad_input, to_numpy(x_t.grad), "grad_input")

    torch_params = dict(torch_model.named_parameters())
    ours = dict(model.named_parameters())
    assert list(ours) == list(torch_params)
    for name, p in ours.items():
        assert_close(p.grad, to_numpy(torch_params[name].grad), f"grad of {name}")

    if gradcheck:
        report = handgrad.gradcheck(model, x)
        assert report.passed, str(report)
