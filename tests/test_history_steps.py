"""The per-step history (steps.csv) and the top-k accuracy in the per-epoch history."""

import json

import numpy as np
import pytest

from handgrad.app.training import STEPS_HEADER, TrainConfig, Trainer, read_steps, train


def quiet(*args, **kwargs):
    pass


def digits_config(tmp_path, **kw):
    base = dict(dataset="digits", model="mlp-small", epochs=3, batch_size=32, seed=0, out=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("batch_size, epochs", [(32, 2), (100, 3)])
def test_every_step_is_recorded_once_and_averages_to_the_epoch_loss(tmp_path, batch_size, epochs):
    trainer = train(digits_config(tmp_path, batch_size=batch_size, epochs=epochs), progress=False, log=quiet)
    steps = read_steps(trainer.run_dir)
    per_epoch = len(trainer.loader)
    assert list(steps["step"]) == list(range(1, epochs * per_epoch + 1))
    assert list(steps["epoch"]) == list(np.repeat(np.arange(1, epochs + 1), per_epoch))
    n = len(trainer.data.train_y)
    sizes = np.array([batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []))
    for row in trainer.history:
        mine = steps["epoch"] == row["epoch"]
        assert np.average(steps["loss"][mine], weights=sizes) == pytest.approx(row["train_loss"], rel=1e-5)
        assert np.average(steps["acc"][mine], weights=sizes) == pytest.approx(row["train_acc"], rel=1e-5)
    assert (trainer.run_dir / "steps.csv").read_text().startswith(STEPS_HEADER)


def interrupt_at_step(trainer, n, exception=KeyboardInterrupt):
    real_step, calls = trainer.optimizer.step, {"n": 0}

    def step_then_stop():
        calls["n"] += 1
        if calls["n"] == n:
            raise exception
        real_step()

    trainer.optimizer.step = step_then_stop


@pytest.mark.parametrize("interrupt_at", [20, 51, 75])
def test_a_run_resumed_mid_epoch_writes_the_steps_of_an_uninterrupted_one(tmp_path, interrupt_at):
    straight = train(digits_config(tmp_path / "straight"), progress=False, log=quiet)
    config = digits_config(tmp_path / "resumed")
    trainer = Trainer(config, progress=False, log=quiet).setup()
    interrupt_at_step(trainer, interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step_in_epoch > 0  # stopped mid-epoch
    resumed = train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)
    assert (resumed.run_dir / "steps.csv").read_text() == (straight.run_dir / "steps.csv").read_text()


def test_an_epoch_written_before_a_crash_is_not_doubled_on_resume(tmp_path):
    """Killed after an epoch's steps were appended but before the state that follows them was
    saved: the resumed run does that epoch again, and its steps appear once."""
    straight = train(digits_config(tmp_path / "straight"), progress=False, log=quiet)
    config = digits_config(tmp_path / "crashed")
    trainer = Trainer(config, progress=False, log=quiet).setup()
    real_save, saves = trainer.save_state, {"n": 0}

    def save_then_die():
        saves["n"] += 1
        if saves["n"] == 2:  # the end of epoch 2, its steps already on disk
            raise SystemExit("killed")
        real_save()

    trainer.save_state = save_then_die
    with pytest.raises(SystemExit):
        trainer.fit()
    assert set(read_steps(config.out)["epoch"]) == {1, 2}
    resumed = train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)
    assert (resumed.run_dir / "steps.csv").read_text() == (straight.run_dir / "steps.csv").read_text()


def test_extending_a_finished_run_continues_its_steps(tmp_path):
    straight = train(digits_config(tmp_path / "straight", epochs=3, schedule="none"), progress=False, log=quiet)
    short = train(digits_config(tmp_path / "short", epochs=2, schedule="none"), progress=False, log=quiet)
    longer = train(
        TrainConfig(out=short.config.out, epochs=3), resume=True, changes={"epochs": 3}, progress=False, log=quiet
    )
    assert (longer.run_dir / "steps.csv").read_text() == (straight.run_dir / "steps.csv").read_text()


def test_overwrite_starts_the_steps_again(tmp_path):
    train(digits_config(tmp_path, epochs=2), progress=False, log=quiet)
    again = train(digits_config(tmp_path, epochs=1), overwrite=True, progress=False, log=quiet)
    assert list(read_steps(again.run_dir)["epoch"]) == [1] * len(again.loader)


def test_history_records_top_5_accuracy_on_ten_classes(tmp_path):
    trainer = train(digits_config(tmp_path, epochs=1), progress=False, log=quiet)
    row = json.loads((trainer.run_dir / "history.json").read_text())["epochs"][0]
    assert row["val_acc"] <= row["val_top5_acc"] <= 1 and row["test_acc"] <= row["test_top5_acc"] <= 1
    assert "test_top5_acc" in (trainer.run_dir / "history.csv").read_text().splitlines()[0]


def test_a_run_without_steps_reads_as_none(tmp_path):
    assert read_steps(tmp_path) is None


def test_a_foreign_steps_file_is_one_clear_error(tmp_path):
    (tmp_path / "steps.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="steps.csv: not a per-step history"):
        read_steps(tmp_path)
