import json
import os

import numpy as np
import pytest

import handgrad
from handgrad.training import Trainer, TrainConfig, TrainingDiverged, train

DATA = os.environ.get("HANDGRAD_DATA_DIR")
needs_mnist = pytest.mark.skipif(not DATA or not os.path.isdir(os.path.join(DATA or "", "mnist")),
                                 reason="MNIST files not found: set HANDGRAD_DATA_DIR to a folder holding mnist/")


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
    for name in ("best.safetensors", "last.safetensors", "resume.safetensors", "history.json", "history.csv",
                 "curves.png", "manifest.json"):
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
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in h]
    assert strip(a.history) == strip(b.history)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("model, optimizer, lr, interrupt_at", [("mlp-small", "sgd", 0.05, 55),
                                                             ("tiny-cnn", "adam", 1e-3, 75)])
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
    trainer = train(TrainConfig(dataset="mnist", model="mlp-small", epochs=1, train_size=3000, seed=0,
                                out=str(tmp_path / "run")), progress=False, log=quiet)
    assert trainer.history[0]["test_acc"] > 0.8
    assert len(trainer.data.train_y) == 3000
