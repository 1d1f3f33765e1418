"""The loss reductions training takes (training.Objective, --reduction), and explain and predict
using a model's own loss and output kind."""

import json

import numpy as np
import pytest
from conftest import train_argv

import handgrad
from handgrad import nn
from handgrad.app.cli import build_parser, main
from handgrad.app.explain import explain, explain_named
from handgrad.app.training import REDUCTIONS, Objective


def formula(kind, reduction, y, labels):
    n, c = y.shape
    if kind == "cross_entropy":
        per_sample = np.log(np.exp(y).sum(axis=1)) - y[np.arange(n), labels]
    else:
        per_sample = ((y - np.eye(c)[labels]) ** 2).sum(axis=1) / (c if reduction == "mean" else 1)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


CASES = [(kind, reduction) for kind in REDUCTIONS for reduction in REDUCTIONS[kind]]


@pytest.mark.parametrize("kind, reduction", CASES)
@pytest.mark.parametrize("n, classes", [(1, 3), (6, 10)])
def test_each_reduction_is_its_formula_and_its_gradient_the_formulas(kind, reduction, n, classes):
    rng = np.random.default_rng(n * classes)
    y, labels = rng.normal(size=(n, classes)), rng.integers(0, classes, n)
    objective = Objective(kind, classes, reduction)
    assert objective(y, labels) == pytest.approx(formula(kind, reduction, y, labels), rel=1e-12)
    grad = objective.backward()
    eps, numeric = 1e-6, np.zeros_like(y)
    for i in np.ndindex(y.shape):
        up, down = y.copy(), y.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (formula(kind, reduction, up, labels) - formula(kind, reduction, down, labels)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind, default", [("cross_entropy", "mean"), ("mse", "batchmean")])
def test_the_default_reduction_is_the_one_training_always_used(kind, default):
    assert Objective(kind, 10).reduction == default


@pytest.mark.parametrize("kind, reduction", [("cross_entropy", "batchmean"), ("mse", "none"), ("cross_entropy", "x")])
def test_a_reduction_the_loss_does_not_take_is_refused_naming_the_option(kind, reduction):
    with pytest.raises(ValueError, match=f"--reduction: {kind} takes .* got '{reduction}'"):
        Objective(kind, 10, reduction)


@pytest.mark.parametrize("kind, reduction", CASES)
def test_sample_mean_is_the_per_sample_loss(kind, reduction):
    rng = np.random.default_rng(1)
    y, labels = rng.normal(size=(8, 10)), rng.integers(0, 10, 8)
    objective = Objective(kind, 10, reduction)
    per_sample_mean = formula(kind, reduction if reduction != "sum" else "batchmean", y, labels)
    assert objective.sample_mean(objective(y, labels), 8) == pytest.approx(per_sample_mean, rel=1e-12)


def test_train_help_documents_the_reductions():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    assert "--reduction {mean,batchmean,sum}" in text and "batchmean (default) = 1/N sum_n" in text


@pytest.fixture(scope="module")
def mse_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mse") / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hidden",
                "32",
                "--activation",
                "sigmoid",
                "--loss",
                "mse",
                "--reduction",
                "mean",
                "--lr",
                "0.5",
                "--epochs",
                "2",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_the_checkpoint_records_its_loss_and_reduction(mse_run):
    meta = handgrad.load(mse_run / "best.safetensors").metadata
    assert (meta["loss"], meta["reduction"]) == ("mse", "mean")


def test_a_resumed_run_keeps_its_reduction(mse_run, capsys):
    assert main(["train", "--resume", str(mse_run), "--reduction", "sum", "--quiet"]) == 1
    assert "--reduction sum differs from the run being resumed (reduction mean)" in capsys.readouterr().err


def test_train_refuses_a_reduction_of_another_loss(tmp_path, capsys):
    assert main(train_argv(tmp_path / "r", "--reduction", "batchmean")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reduction: cross_entropy takes mean or sum, got 'batchmean'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_cross_entropy_run_trains_with_either_reduction(tmp_path, reduction):
    lr = "0.002" if reduction == "sum" else "0.05"
    assert main(train_argv(tmp_path / "r", "--reduction", reduction, "--lr", lr, "--batch-size", "32", epochs=2)) == 0
    rows = json.loads((tmp_path / "r" / "history.json").read_text())["epochs"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] < 2.5  # a per-sample loss, whatever the reduction


def test_explain_uses_the_checkpoints_loss_and_reduction(mse_run):
    report = explain_named(checkpoint=mse_run / "best.safetensors", dataset=None, batch_size=3, use_torch=False)
    assert "mse loss (mean)" in report.description and "MSELoss" in report.steps[-1].name
    assert report.passed
    model = handgrad.load(mse_run / "best.safetensors")
    assert model.metadata["loss"] == "mse"


def test_explain_refuses_another_loss_for_a_checkpoint(mse_run, capsys):
    assert (
        main(["explain", "--checkpoint", str(mse_run / "best.safetensors"), "--loss", "cross_entropy", "--no-torch"])
        == 1
    )
    assert "the model was trained with mse" in capsys.readouterr().err


@pytest.mark.parametrize("kind, reduction", CASES)
def test_explains_loss_is_the_training_objectives(kind, reduction):
    rng = np.random.default_rng(3)
    handgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid()).double()
    x, y = rng.normal(size=(4, 6)), rng.integers(0, 5, 4)
    report = explain(model, x, y, loss=kind, reduction=reduction, use_torch=False, samples=0)
    assert report.loss == pytest.approx(Objective(kind, 5, reduction)(model(x), y), rel=1e-12)
    assert report.passed


def test_predict_shows_an_mse_models_outputs_as_scores(mse_run, tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    image = (load_digits().images[3] * 255 / 16).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "digit.png")
    assert main(["predict", str(mse_run / "best.safetensors"), str(tmp_path / "digit.png"), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert all(set(t) == {"class", "score"} for t in result["top"])
    assert main(["predict", str(mse_run / "best.safetensors"), str(tmp_path / "digit.png")]) == 0
    out = capsys.readouterr().out
    assert "scores" in out and "%" not in out
