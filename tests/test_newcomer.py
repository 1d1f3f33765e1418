"""What a newcomer met first: datasets --data-dir, the run header's wording, the validation set
of --train-size, compare's choice of the best epoch."""

import os
import shutil

import pytest
from conftest import train_argv

from handgrad.app.cli import main
from handgrad.app.compare import CompareRow
from handgrad.app.training import TrainConfig, count, describe_schedule, prepare_data, validation_size
from handgrad.errors import HandgradError

DATA = os.environ.get("HANDGRAD_DATA_DIR")
needs_mnist = pytest.mark.skipif(
    not DATA or not os.path.isdir(os.path.join(DATA or "", "mnist")),
    reason="MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/",
)


def dataset_lines(capsys, *args):
    assert main(["datasets", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "found", "in", "files"]
    return {line.split()[0]: line for line in lines[1:]}


@needs_mnist
@pytest.mark.parametrize("where", ["parent", "files"])
def test_datasets_looks_where_train_looks(capsys, tmp_path, where):
    folder = tmp_path / "mnist"
    shutil.copytree(os.path.join(DATA, "mnist"), folder)
    data_dir = tmp_path if where == "parent" else folder
    rows = dataset_lines(capsys, "--data-dir", str(data_dir))
    assert f"data_dir: {folder if where == 'parent' else data_dir}" in rows["mnist"]
    assert (
        main(
            [
                "train",
                "--dataset",
                "mnist",
                "--data-dir",
                str(data_dir),
                "--model",
                "linear",
                "--train-size",
                "50",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert f"from data_dir: {folder}" in capsys.readouterr().out


@needs_mnist
def test_datasets_with_an_empty_data_dir_finds_nothing_as_train_would(capsys, tmp_path):
    rows = dataset_lines(capsys, "--data-dir", str(tmp_path))  # HANDGRAD_DATA_DIR holds mnist: not looked in
    assert "not found" in rows["mnist"] and "not found" in rows["fashion-mnist"]
    assert (
        main(
            [
                "train",
                "--dataset",
                "mnist",
                "--data-dir",
                str(tmp_path),
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 1
    )


@pytest.mark.parametrize(
    "n, noun, expected", [(1, "epoch", "1 epoch"), (2, "epoch", "2 epochs"), (0, "epoch", "0 epochs")]
)
def test_count(n, noun, expected):
    assert count(n, noun) == expected


@pytest.mark.parametrize(
    "schedule, expected",
    [("none", "constant lr"), (None, "constant lr"), ("cosine", "cosine schedule"), ("step", "step schedule")],
)
def test_describe_schedule(schedule, expected):
    assert describe_schedule(schedule) == expected


def test_the_run_header_reads_right_for_one_epoch_and_no_schedule(capsys, tmp_path):
    assert main(train_argv(tmp_path / "r", "--schedule", "none")) == 0
    out = capsys.readouterr().out
    assert "constant lr" in out and ", 1 epoch," in out and "none schedule" not in out and "1 epochs" not in out


@pytest.mark.parametrize(
    "available, fraction, train_size, expected",
    [
        (60000, 0.1, None, 6000),
        (60000, 0.1, 1000, 111),
        (60000, 0.1, 54000, 6000),
        (60000, 0.2, 1000, 250),
        (1437, 0.1, 9, 1),
        (1437, 0.1, 1, 1),
    ],
)
def test_validation_keeps_the_proportion_of_the_training_images(available, fraction, train_size, expected):
    assert validation_size(available, fraction, train_size) == expected


@pytest.mark.parametrize("train_size, largest", [(54001, 54000), (59999, 54000)])
def test_a_train_size_that_leaves_no_proportionate_validation_set_is_refused(train_size, largest):
    with pytest.raises(HandgradError, match=f"--train-size: {train_size} training images .* give at most {largest}"):
        validation_size(60000, 0.1, train_size, "mnist")


def test_train_size_gives_a_proportionate_validation_set():
    data = prepare_data(TrainConfig(dataset="digits", train_size=300, seed=1))
    assert (len(data.train_y), len(data.val_y)) == (300, 33)
    assert set(data.val_y.tolist()) == set(range(10))  # stratified


def history(val_losses, test_accs):
    return [
        {"epoch": e + 1, "val_loss": v, "test_acc": t, "test_loss": 1 - t, "seconds": 1.0}
        for e, (v, t) in enumerate(zip(val_losses, test_accs))
    ]


@pytest.mark.parametrize(
    "val_losses, test_accs, epoch",
    [
        ([0.5, 0.3, 0.4], [0.8, 0.85, 0.9], 2),  # the test set's best (epoch 3) is not chosen
        ([0.2, 0.3, 0.4], [0.7, 0.9, 0.8], 1),
        ([0.5, 0.4, 0.3], [0.9, 0.8, 0.85], 3),
    ],
)
def test_compare_picks_the_best_epoch_by_validation_loss(val_losses, test_accs, epoch):
    row = CompareRow.from_history("m", 10, history(val_losses, test_accs))
    assert row.best_epoch == epoch and row.best_test_acc == test_accs[epoch - 1]
