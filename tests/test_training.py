import json
import os

import numpy as np
import pytest

import handgrad
from handgrad.app.training import TrainConfig, Trainer, TrainingDiverged, train

DATA = os.environ.get("HANDGRAD_DATA_DIR")
needs_mnist = pytest.mark.skipif(
    not DATA or not os.path.isdir(os.path.join(DATA or "", "mnist")),
    reason="MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/",
)


def quiet(*args, **kwargs):
    pass


def digits_config(tmp_path, **kw):
    base = dict(dataset="digits", model="mlp-small", epochs=3, batch_size=32, seed=0, out=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


def test_short_run_learns_and_writes_the_run_directory(tmp_path):
    trainer = train(digits_config(tmp_path), progress=False, log=quiet)
    h = trainer.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["test_acc"] > 0.8  # chance is 0.1
    run = tmp_path / "run"
    for name in (
        "best.safetensors",
        "last.safetensors",
        "resume.safetensors",
        "history.json",
        "history.csv",
        "curves.png",
        "manifest.json",
    ):
        assert (run / name).is_file(), name
    saved = json.loads((run / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in saved] == [1, 2, 3]
    csv_lines = (run / "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc") and len(csv_lines) == 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["environment"]["numpy"] == np.__version__
    assert manifest["data"]["normalization"]["mean"] > 0


def test_checkpoint_carries_what_prediction_needs(tmp_path):
    train(digits_config(tmp_path, epochs=1), progress=False, log=quiet)
    model = handgrad.load(tmp_path / "run" / "best.safetensors")
    assert model.metadata["input_shape"] == [1, 8, 8]
    assert model.metadata["classes"] == [str(i) for i in range(10)]
    assert set(model.metadata["normalization"]) >= {"mean", "std"}


def test_same_seed_same_numbers(tmp_path):
    a = train(digits_config(tmp_path / "a", epochs=2), progress=False, log=quiet)
    b = train(digits_config(tmp_path / "b", epochs=2), progress=False, log=quiet)

    def strip(history):
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history]

    assert strip(a.history) == strip(b.history)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "model, optimizer, lr, interrupt_at", [("mlp-small", "sgd", 0.05, 55), ("tiny-cnn", "adam", 1e-3, 75)]
)
def test_resume_after_interrupt_ends_with_the_same_weights(tmp_path, model, optimizer, lr, interrupt_at):
    kw = dict(model=model, optimizer=optimizer, lr=lr, epochs=3)
    straight = train(digits_config(tmp_path / "straight", **kw), progress=False, log=quiet)

    config = digits_config(tmp_path / "resumed", **kw)
    trainer = Trainer(config, progress=False, log=quiet).setup()
    real_step, calls = trainer.optimizer.step, {"n": 0}

    def step_then_ctrl_c():
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt  # as Ctrl-C would, between two updates
        real_step()

    trainer.optimizer.step = step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.epoch == 1 and trainer.step_in_epoch > 0  # stopped mid-epoch
    resumed = train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert [r["val_loss"] for r in straight.history] == [r["val_loss"] for r in resumed.history]


def test_non_finite_loss_stops_naming_epoch_step_and_layer_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original_end = Trainer.end_epoch

    def poison_after_first_epoch(self):
        original_end(self)
        if self.epoch == 1:
            self.model[3].weight.data[0, 0] = np.inf  # the second Linear of mlp-small

    monkeypatch.setattr(Trainer, "end_epoch", poison_after_first_epoch)
    config = digits_config(tmp_path, epochs=3)
    with pytest.raises(TrainingDiverged) as err:
        train(config, progress=False, log=quiet)
    message = str(err.value)
    assert "epoch 2, step 1" in message
    assert "forward of layer 3 (Linear(in_features=128, out_features=64" in message
    assert "last.safetensors" in message
    good = handgrad.load(tmp_path / "run" / "last.safetensors")
    assert all(np.isfinite(p.data).all() for p in good.parameters())
    assert good.metadata["epoch"] == 1


def test_exploding_learning_rate_is_caught(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+: .*non-finite"):
        train(digits_config(tmp_path, lr=1e12, momentum=0.0, epochs=1), progress=False, log=quiet)


def test_mse_model_trains_on_one_hot_targets(tmp_path):
    trainer = train(digits_config(tmp_path, model="mlp-sigmoid", epochs=6), progress=False, log=quiet)
    assert trainer.config.loss == "mse"
    assert trainer.history[-1]["test_acc"] > 0.5


@needs_mnist
def test_mnist_subset_learns_well_above_chance(tmp_path):
    trainer = train(
        TrainConfig(dataset="mnist", model="mlp-small", epochs=1, train_size=3000, seed=0, out=str(tmp_path / "run")),
        progress=False,
        log=quiet,
    )
    assert trainer.history[0]["test_acc"] > 0.8
    assert len(trainer.data.train_y) == 3000


# -- resume, in the folder given ----------------------------------------------------------------------
def interrupt_mid_epoch(config, at_step=30):
    """Start ``config`` and stop it as Ctrl-C would, between two updates in its first epoch."""
    trainer = Trainer(config, progress=False, log=quiet).setup()
    real_step, calls = trainer.optimizer.step, {"n": 0}

    def step_then_ctrl_c():
        calls["n"] += 1
        if calls["n"] == at_step:
            raise KeyboardInterrupt
        real_step()

    trainer.optimizer.step = step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    return trainer


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("how", ["copy", "move"])
def test_resume_works_in_the_folder_given_and_leaves_the_original_untouched(tmp_path, how):
    import shutil

    kw = dict(model="tiny-mlp", epochs=2, optimizer="sgd", lr=0.05)
    straight = train(digits_config(tmp_path / "straight", **kw), progress=False, log=quiet)
    original = tmp_path / "a" / "run"
    interrupt_mid_epoch(digits_config(tmp_path / "a", **kw))
    before = snapshot(original)
    elsewhere = tmp_path / "b"
    (shutil.copytree if how == "copy" else shutil.move)(original, elsewhere)
    resumed = train(TrainConfig(out=str(elsewhere)), resume=True, progress=False, log=quiet)
    assert resumed.run_dir == elsewhere and resumed.history[-1]["epoch"] == 2
    sa, sb = straight.model.state_dict(), handgrad.load(elsewhere / "last.safetensors").state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert json.loads((elsewhere / "manifest.json").read_text())["config"]["out"] == str(elsewhere)
    if how == "copy":
        assert snapshot(original) == before
    else:
        assert not original.exists()


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"lr": 0.5}, ["--lr 0.5", "lr 0.05"]),
        (
            {"optimizer": "adam", "batch_size": 16},
            ["--optimizer adam", "--batch-size 16", "optimizer sgd", "batch_size 32"],
        ),
        ({"seed": 3}, ["--seed 3", "seed 0"]),
        ({"model": "mlp"}, ["--model mlp", "model tiny-mlp"]),
        ({"train_size": 500}, ["--train-size 500", "train_size None"]),
        ({"epochs": 0}, ["--epochs 0: the run has trained into epoch 1; give at least 1"]),
    ],
)
def test_resume_refuses_settings_that_differ_naming_the_option_and_both_values(tmp_path, changes, named):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=2, optimizer="sgd", lr=0.05)
    interrupt_mid_epoch(config)
    before = snapshot(tmp_path / "run")
    with pytest.raises(handgrad.HandgradError) as err:
        train(TrainConfig(out=config.out), resume=True, changes=changes, progress=False, log=quiet)
    assert all(text in str(err.value) for text in named), str(err.value)
    assert snapshot(tmp_path / "run") == before


def test_resume_refuses_another_out_folder(tmp_path):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=2)
    interrupt_mid_epoch(config)
    with pytest.raises(handgrad.HandgradError, match="copy the folder there and resume the copy"):
        train(
            TrainConfig(out=config.out),
            resume=True,
            changes={"out": str(tmp_path / "elsewhere")},
            progress=False,
            log=quiet,
        )
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 1e-3)])
def test_a_larger_epochs_extends_a_finished_run_to_the_weights_of_a_longer_run(tmp_path, optimizer, lr):
    kw = dict(model="tiny-mlp", optimizer=optimizer, lr=lr, schedule="none")
    straight = train(digits_config(tmp_path / "straight", epochs=4, **kw), progress=False, log=quiet)
    short = digits_config(tmp_path / "extended", epochs=2, **kw)
    train(short, progress=False, log=quiet)
    logged = []
    extended = train(TrainConfig(out=short.out), resume=True, changes={"epochs": 4}, progress=False, log=logged.append)
    assert any("extending the run from 2 to 4 epochs" in line for line in logged)
    assert [r["val_loss"] for r in extended.history] == [r["val_loss"] for r in straight.history]
    sa, sb = straight.model.state_dict(), extended.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert json.loads((tmp_path / "extended" / "run" / "manifest.json").read_text())["config"]["epochs"] == 4


def test_extending_a_cosine_run_lays_the_schedule_over_the_new_total(tmp_path):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=2, schedule="cosine", lr=0.1)
    first = train(config, progress=False, log=quiet)
    extended = train(TrainConfig(out=config.out), resume=True, changes={"epochs": 4}, progress=False, log=quiet)
    lrs = [r["lr"] for r in extended.history]
    assert lrs[:2] == [r["lr"] for r in first.history]  # the epochs done keep their rates
    expected = [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in (2, 3)]
    assert np.allclose(lrs[2:], expected, rtol=1e-12, atol=0)


def test_resume_refuses_data_files_other_than_the_runs(tmp_path):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=2)
    interrupt_mid_epoch(config)
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["data"]["files"] = {"train-images-idx3-ubyte.gz": {"path": "/elsewhere", "md5": "0" * 32}}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(handgrad.HandgradError, match="not the ones the run started on: train-images-idx3-ubyte.gz"):
        train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)


def test_resume_of_a_folder_without_a_run_says_so(tmp_path):
    with pytest.raises(handgrad.HandgradError, match="holds no resume.safetensors"):
        train(TrainConfig(out=str(tmp_path)), resume=True, progress=False, log=quiet)


# -- the run folder: lock, overwrite ------------------------------------------------------------------
def test_a_locked_folder_is_refused_and_left_untouched(tmp_path):
    from handgrad.app.training import RunFolderBusy, RunLock

    config = digits_config(tmp_path, model="tiny-mlp", epochs=1)
    train(config, progress=False, log=quiet)
    before = snapshot(tmp_path / "run")
    with RunLock(config.out):
        with pytest.raises(RunFolderBusy, match=rf"another handgrad run \(process {os.getpid()}\) is writing"):
            train(config, overwrite=True, progress=False, log=quiet)
        with pytest.raises(RunFolderBusy):
            train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)
    assert snapshot(tmp_path / "run") == before
    train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)  # released: usable again


def test_a_new_run_refuses_a_folder_holding_another_run_unless_overwrite(tmp_path):
    from handgrad.app.training import RunFolderTaken

    train(digits_config(tmp_path, model="tiny-mlp", epochs=2, seed=1), progress=False, log=quiet)
    run = tmp_path / "run"
    (run / "notes.txt").write_text("mine")
    (run / ".history.json.1a2b3c4d.tmp").write_text("left by a killed run")
    before = snapshot(run)
    with pytest.raises(RunFolderTaken, match="holds another run .*--resume .*--overwrite"):
        train(digits_config(tmp_path, model="tiny-mlp", epochs=1, seed=2), progress=False, log=quiet)
    assert snapshot(run) == before
    train(digits_config(tmp_path, model="tiny-mlp", epochs=1, seed=2), overwrite=True, progress=False, log=quiet)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 2
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())["epochs"]] == [1]
    assert handgrad.load(run / "last.safetensors").metadata["epoch"] == 1
    assert (run / "notes.txt").read_text() == "mine"  # not a run's file: left alone
    assert not (run / ".history.json.1a2b3c4d.tmp").exists()


# -- no non-finite checkpoint -------------------------------------------------------------------------
def assert_every_checkpoint_finite(run):
    for name in ("best.safetensors", "last.safetensors", "resume.safetensors"):
        if (run / name).exists():
            from handgrad.serialization import load_tensors

            tensors, _ = load_tensors(run / name)
            assert all(np.isfinite(t).all() for t in tensors.values()), name


@pytest.mark.parametrize(
    "lr, batch_size, message",
    [
        (1e38, 2000, "no checkpoint was written"),  # the first update overflows to inf
        (1e6, 64, "no checkpoint was written"),  # finite weights, but a NaN validation loss
        (1e12, 32, "no checkpoint was written"),
    ],
)
def test_divergence_saves_nothing_non_finite(tmp_path, lr, batch_size, message):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=3, lr=lr, batch_size=batch_size)
    with pytest.raises(TrainingDiverged) as err:
        train(config, progress=False, log=quiet)
    assert message in str(err.value) and "nothing from this point was saved" in str(err.value)
    assert not (tmp_path / "run" / "last.safetensors").exists()
    assert_every_checkpoint_finite(tmp_path / "run")


def test_a_validation_loss_nan_stops_the_epoch_before_anything_is_saved(tmp_path):
    config = digits_config(tmp_path, model="tiny-mlp", epochs=3, lr=1e6, batch_size=64)
    with pytest.raises(TrainingDiverged, match=r"end of epoch 1: the validation loss is nan"):
        train(config, progress=False, log=quiet)
    assert not any(
        (tmp_path / "run" / name).exists()
        for name in ("best.safetensors", "last.safetensors", "resume.safetensors", "history.json")
    )


@pytest.mark.parametrize("bad_lr", [np.inf, 1e38])
def test_divergence_after_good_epochs_names_the_last_good_checkpoint(tmp_path, monkeypatch, bad_lr):
    original_end = Trainer.end_epoch

    def explode_after_two_epochs(self):
        original_end(self)
        if self.epoch == 2:
            for group in self.optimizer.param_groups:
                group["lr"] = bad_lr

    monkeypatch.setattr(Trainer, "end_epoch", explode_after_two_epochs)
    config = digits_config(tmp_path, model="tiny-mlp", epochs=4, batch_size=2000)  # one step per epoch
    with pytest.raises(TrainingDiverged) as err:
        train(config, progress=False, log=quiet)
    run = tmp_path / "run"
    assert f"the last good checkpoint is {run / 'last.safetensors'} (end of epoch 2)" in str(err.value)
    assert f"the best {run / 'best.safetensors'} (epoch " in str(err.value)
    assert_every_checkpoint_finite(run)
    assert handgrad.load(run / "last.safetensors").metadata["epoch"] == 2


def test_an_infinite_weight_the_loss_does_not_show_is_caught_by_the_full_check(tmp_path, monkeypatch):
    """The first layer's bias of unit 0 set to -inf: the ReLU turns that unit's -inf into 0, so the
    loss and the gradients stay finite; the periodic check of the weights stops the run."""
    original_end = Trainer.end_epoch

    def hide_an_infinity(self):
        original_end(self)
        if self.epoch == 1:
            self.model[1].bias.data[0] = -np.inf

    monkeypatch.setattr(Trainer, "end_epoch", hide_an_infinity)
    config = digits_config(tmp_path, model="tiny-mlp", epochs=3)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step \d+: the weights 1.bias are non-finite"):
        train(config, progress=False, log=quiet)
    assert_every_checkpoint_finite(tmp_path / "run")
    assert handgrad.load(tmp_path / "run" / "last.safetensors").metadata["epoch"] == 1


def test_a_new_run_with_a_bad_setting_leaves_no_folder_behind(tmp_path):
    with pytest.raises(handgrad.HandgradError, match="nosuchset"):
        train(TrainConfig(dataset="nosuchset", out=str(tmp_path / "run")), progress=False, log=quiet)
    assert not (tmp_path / "run").exists()


# -- the optimizers and schedules the CLI offers ----------------------------------------------------
@pytest.mark.parametrize("optimizer, schedule, lr", [("rmsprop", "plateau", 1e-3), ("adagrad", "multistep", 0.05)])
def test_resuming_a_run_of_each_new_optimizer_and_schedule_gives_the_straight_runs_weights(
    tmp_path, optimizer, schedule, lr
):
    kw = dict(model="tiny-mlp", optimizer=optimizer, schedule=schedule, lr=lr, momentum=0.5, epochs=4)
    straight = train(digits_config(tmp_path / "straight", **kw), progress=False, log=quiet)
    config = digits_config(tmp_path / "resumed", **kw)
    interrupt_mid_epoch(config, at_step=120)  # in the third epoch, after two scheduler steps
    resumed = train(TrainConfig(out=config.out), resume=True, progress=False, log=quiet)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "schedule, epochs, expected",
    [
        ("multistep", 8, [0.1] * 4 + [0.01] * 2 + [0.001] * 2),
        ("step", 6, [0.1] * 2 + [0.01] * 2 + [0.001] * 2),
    ],
)
def test_make_scheduler_lays_the_schedule_over_the_epochs(schedule, epochs, expected):
    from handgrad import optim
    from handgrad.app.training import make_scheduler

    opt = optim.SGD([handgrad.nn.Parameter(np.ones(2))], lr=0.1)
    sched = make_scheduler(TrainConfig(schedule=schedule, epochs=epochs), opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    # part-way, as a resumed run of another length starts it: the closed form at that epoch
    for epoch in range(1, epochs):
        opt.param_groups[0]["lr"] = 123.0
        resumed = make_scheduler(TrainConfig(schedule=schedule, epochs=epochs), opt, last_epoch=epoch - 1)
        assert resumed.last_epoch == epoch
        np.testing.assert_allclose(opt.param_groups[0]["lr"], expected[epoch], rtol=1e-12)
