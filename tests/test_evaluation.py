"""What the tools read off a checkpoint: its test set normalised with the stored statistics (shared by
eval, predict, explain)."""

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("sklearn")  # the embedded digits set

import handgrad  # noqa: E402
from handgrad.app.cli import main  # noqa: E402
from handgrad.app.evaluation import checkpoint_test_set, stored_normalizer  # noqa: E402
from handgrad.app.explain import explain_named  # noqa: E402
from handgrad.data import load_dataset  # noqa: E402
from handgrad.errors import HandgradError  # noqa: E402
from handgrad.models import build_model  # noqa: E402


def checkpoint(path, input_shape=(1, 8, 8), **metadata):
    handgrad.manual_seed(0)
    model = build_model("tiny-mlp", input_shape, 10)
    handgrad.save(model, path, input_shape=list(input_shape), dataset="digits", **metadata)
    return handgrad.load(path)


@pytest.mark.parametrize("stats", [{"mean": 3.0, "std": 2.0}, {"mean": 0.5, "std": 0.25}])
def test_the_test_set_is_normalised_with_the_stored_statistics(tmp_path, stats):
    model = checkpoint(tmp_path / "m.safetensors", normalization=stats)
    ds, x = checkpoint_test_set(model)
    assert ds.name == "digits"
    np.testing.assert_allclose(x, (ds.test_images - stats["mean"]) / stats["std"], rtol=1e-6)


def test_a_checkpoint_without_statistics_takes_its_inputs_as_they_come(tmp_path):
    model = checkpoint(tmp_path / "m.safetensors")
    ds, x = checkpoint_test_set(model)
    np.testing.assert_array_equal(x, ds.test_images)
    images = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    assert stored_normalizer({})(images) is images


def test_images_that_do_not_fit_the_checkpoint_are_refused_by_eval_and_explain(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    checkpoint(path, input_shape=(1, 28, 28))
    expected = "dataset digits: images of shape (1, 8, 8) do not fit the checkpoint's input shape (1, 28, 28)"
    with pytest.raises(HandgradError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        explain_named(checkpoint=path, dataset=None)
    assert main(["eval", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"handgrad: error: {expected}\n"


def test_explain_on_a_checkpoint_runs_on_its_own_test_images(tmp_path):
    path = tmp_path / "m.safetensors"
    checkpoint(path, normalization={"mean": 8.0, "std": 4.0})
    explanation = explain_named(checkpoint=path, dataset=None, batch_size=3)
    labels = ", ".join(load_dataset("digits").classes[k] for k in load_dataset("digits").test_labels[:3])
    assert f"explain {path} on digits" in explanation.description and f"(labels {labels})" in explanation.description
