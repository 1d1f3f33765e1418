"""The report reads the per-step history and shows the metrics module's top-k, precision and recall."""

import html
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from handgrad import metrics  # noqa: E402
from handgrad.app.report import build_report, load_run, per_class_table  # noqa: E402
from handgrad.app.training import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report-history") / "run"
    train(
        TrainConfig(dataset="digits", model="tiny-mlp", epochs=2, batch_size=64, out=str(out)),
        progress=False,
        log=lambda *_: None,
    )
    return out


def test_the_report_reads_every_step(run_dir):
    run = load_run(run_dir)
    steps_per_epoch = -(-len(run.data.train_y) // 64)
    assert list(run.steps["step"]) == list(range(1, 2 * steps_per_epoch + 1))
    page = build_report([run_dir]).read_text()
    assert f"at each of the {2 * steps_per_epoch:,} steps" in page


def test_the_report_shows_top_5_and_per_class_precision_and_recall(run_dir):
    page = build_report([run_dir]).read_text()
    assert "test top-5 accuracy (best)" in page
    assert "<th>precision</th><th>recall</th>" in page


@pytest.mark.parametrize("labels, predicted", [([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]), ([0, 0, 1], [0, 0, 0])])
def test_per_class_table_holds_the_metrics(labels, predicted):
    labels, predicted = np.array(labels), np.array(predicted)
    classes = ["a", "b", "c"]
    rows = re.findall(
        r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)%</td><td>(.*?)%</td></tr>",
        per_class_table(labels, predicted, classes),
    )
    assert [html.unescape(r[0]) for r in rows] == classes
    np.testing.assert_allclose([float(r[2]) for r in rows], 100 * metrics.precision(labels, predicted, 3), atol=0.05)
    np.testing.assert_allclose([float(r[3]) for r in rows], 100 * metrics.recall(labels, predicted, 3), atol=0.05)
