"""Data-parallel training on MPI: `mpiexec -n 2` runs against one process (float64 weights after an
epoch, float32 accuracy through the CLI), a rank that fails or drifts ends the run, a resume from 2
ranks to 1, a sweep spread over ranks, the README's own loop; and the pieces, in one process.

The MPI tests launch `mpiexec -n 2` in child processes and skip when mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import distributed, nn
from handgrad.app.training import RunFolderBusy, RunLock, TrainConfig, TrainingDiverged, train

ROOT = Path(__file__).resolve().parent.parent
#: the loop the README shows, run as it is written there
README_LOOP = re.compile(r"<!-- distributed-loop -->\s*```python\n(.*?)```", re.S)


def mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'handgrad[mpi]')")
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel puts it in the environment's bin
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec found (pip install mpich, or a system MPI)")
    return found


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != distributed.FAULT_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def launch(ranks: int, *args, env=None, timeout: int = 60) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python ARGS`` (a hang fails the test at ``timeout``)."""
    return subprocess.run(
        [mpiexec(), "-n", str(ranks), sys.executable, *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=timeout,
        cwd=ROOT,
    )


def handgrad_train(ranks: int, out, *flags, env=None, timeout: int = 60):
    return launch(
        ranks,
        "-m",
        "handgrad",
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp-small",
        "--quiet",
        "--batch-size",
        "63",
        "--schedule",
        "none",
        "--out",
        str(out),
        *flags,
        env=env,
        timeout=timeout,
    )


def processes_running(marker: str) -> list:
    """The ids of live processes whose command line holds ``marker`` (exited ones have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass  # it ended while being read
    return found


def wait_until_ended(run_dir: Path, deadline: float) -> bool:
    """Poll until no process runs with ``run_dir`` in its command line and none holds its lock (a
    process whose last threads are still exiting keeps its files open), or ``deadline``
    (time.monotonic()) passes; return whether they all ended."""
    while time.monotonic() < deadline:
        if not processes_running(str(run_dir)):
            try:
                RunLock(run_dir).acquire().release()
                return True
            except RunFolderBusy:
                pass
        time.sleep(0.1)
    return False


def weights(path) -> dict:
    return handgrad.load(str(path)).state_dict()


def max_rel_error(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in a)


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, float32, 2 epochs of digits at global batch 63 (uneven halves)."""
    out = tmp_path_factory.mktemp("single") / "run"
    config = TrainConfig(dataset="digits", model="mlp-small", epochs=2, batch_size=63, schedule="none", out=str(out))
    trainer = train(config, progress=False, log=quiet)
    return out, trainer.history


# -- under mpiexec ----------------------------------------------------------------------------------
FLOAT64_SCRIPT = """
import sys
import numpy as np
from handgrad import distributed
from handgrad.app.training import Trainer, TrainConfig, make_optimizer, make_scheduler


class Float64Trainer(Trainer):
    def setup(self):
        super().setup()
        self.model.double()
        for name in ("train_x", "val_x", "test_x"):
            setattr(self.data, name, getattr(self.data, name).astype(np.float64))
        self.optimizer = make_optimizer(self.config, self.model.parameters())
        self.scheduler = make_scheduler(self.config, self.optimizer)
        self.loader = self.make_loader()
        return self


config = TrainConfig(dataset="digits", model="mlp-small", epochs=1, batch_size=63, momentum=0.9, out=sys.argv[1])
with Float64Trainer(config, progress=False, log=lambda *a: None, world=distributed.init()).setup() as trainer:
    trainer.fit()
"""


def test_two_ranks_take_the_steps_of_one_process_in_float64(tmp_path, monkeypatch):
    script = tmp_path / "float64.py"
    script.write_text(FLOAT64_SCRIPT)
    ranks = launch(2, str(script), str(tmp_path / "two"))
    assert ranks.returncode == 0, ranks.stderr
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "one")])
    runpy.run_path(str(script), run_name="__main__")  # the same script, in this one process
    two_w, one_w = weights(tmp_path / "two" / "last.safetensors"), weights(tmp_path / "one" / "last.safetensors")
    assert next(iter(one_w.values())).dtype == np.float64
    assert max_rel_error(two_w, one_w) < 1e-10


def test_cli_on_two_ranks_reaches_the_accuracy_of_one_process(tmp_path, one_process):
    _, reference = one_process
    result = handgrad_train(2, tmp_path / "run", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("epoch 2/2") == 1  # rank 0 alone prints
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert abs(100 * history[-1]["test_acc"] - 100 * reference[-1]["test_acc"]) <= 0.3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 2
    assert manifest["distributed"]["threads_per_rank"] >= 1


def test_an_error_on_one_rank_ends_every_rank_and_one_process_resumes_the_run(tmp_path, one_process):
    reference_dir, _ = one_process
    # 21 steps an epoch: step 30 is in the second, after the first epoch's checkpoint
    deadline = time.monotonic() + 30
    result = handgrad_train(
        2, tmp_path / "run", "--epochs", "3", env=child_env(HANDGRAD_TEST_FAULT="raise:1:30"), timeout=30
    )  # a hang fails here
    assert result.returncode != 0
    assert wait_until_ended(tmp_path / "run", deadline)  # no rank outlives the launcher for long
    assert "handgrad: error: rank 1 of 2 failed (RuntimeError: fault injected" in result.stderr
    assert "epoch 2/3" not in result.stdout
    model = handgrad.load(str(tmp_path / "run" / "last.safetensors"))
    assert model.metadata["epoch"] == 1
    # 2 ranks -> 1 process: the run continues to the very weights of one process throughout
    train(TrainConfig(out=str(tmp_path / "run")), resume=True, changes={"epochs": 2}, progress=False, log=quiet)
    assert (
        max_rel_error(weights(tmp_path / "run" / "last.safetensors"), weights(reference_dir / "last.safetensors"))
        < 1e-5
    )  # float32, two summation orders


def test_ranks_whose_weights_differ_stop_with_an_error(tmp_path):
    # batch 16: 81 steps an epoch, so the checksum carried by step 50's allreduce finds it mid-epoch
    result = handgrad_train(
        2,
        tmp_path / "run",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        env=child_env(HANDGRAD_TEST_FAULT="perturb:1:3"),
        timeout=30,
    )
    assert result.returncode == 1
    assert f"epoch 1, step {distributed.CHECK_EVERY}: the weights of rank 1 differ from rank 0's" in result.stderr
    assert result.stderr.count("handgrad: error:") == 1
    assert not (tmp_path / "run" / "last.safetensors").exists()  # nothing of the drifted run is saved


def test_a_diverging_run_stops_every_rank_at_the_step_one_process_stops(tmp_path):
    with pytest.raises(TrainingDiverged) as one:
        train(
            TrainConfig(
                dataset="digits",
                model="mlp-small",
                epochs=1,
                batch_size=63,
                schedule="none",
                lr=1e6,
                out=str(tmp_path / "one"),
            ),
            progress=False,
            log=quiet,
        )
    step = re.match(r"epoch 1, step \d+: the loss became nan", str(one.value))[0]
    result = handgrad_train(2, tmp_path / "two", "--epochs", "1", "--lr", "1e6", timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("handgrad: error:") == 1
    assert f"handgrad: error: {step} (on the part of ranks 0, 1): first non-finite value in " in result.stderr


def test_a_setting_every_rank_refuses_is_one_error_line(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "manifest.json").write_text("{}")
    result = handgrad_train(2, tmp_path / "taken", "--epochs", "1", timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("handgrad: error:") == 1
    assert "holds another run" in result.stderr and not re.search(r"\brank \d", result.stderr)


def test_a_sweep_spreads_its_runs_over_the_ranks(tmp_path):
    result = launch(
        2,
        "-m",
        "handgrad",
        "sweep",
        "--dataset",
        "digits",
        "--model",
        "tiny-mlp",
        "--lr",
        "0.1,0.05",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "sweep"),
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]
    assert sorted(r["rank"] for r in runs) == [0, 1]
    assert result.stdout.count("best test acc") == 1  # one table, from rank 0


def test_the_readme_loop_runs_under_mpiexec(tmp_path):
    block = README_LOOP.search((ROOT / "README.md").read_text())
    assert block, "README.md: no <!-- distributed-loop --> python block"
    script = tmp_path / "loop.py"
    script.write_text(block[1])
    result = launch(2, str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("accuracy") == 1  # printed by rank 0


# -- the pieces, in one process ------------------------------------------------------------------
def fake_world(rank: int, size: int) -> distributed.World:
    w = distributed.World()
    w.rank, w.size = rank, size
    return w


@pytest.mark.parametrize("n, size", [(10, 2), (7, 2), (63, 4), (1, 2), (0, 3), (5, 8)])
def test_shards_are_disjoint_contiguous_and_cover_everything(n, size):
    parts = [list(range(n))[distributed.shard(n, r, size)] for r in range(size)]
    assert sum(parts, []) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("batch_size, size", [(10, 2), (7, 3), (1, 2)])
def test_the_ranks_of_a_sharded_loader_split_each_global_batch_of_one_loader(batch_size, size):
    x = np.arange(23, dtype=np.float32).reshape(23, 1)
    y = np.arange(23)
    whole = handgrad.data.DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=5)
    ranks = [
        distributed.ShardedLoader(x, y, batch_size=batch_size, shuffle=True, seed=5, w=fake_world(r, size))
        for r in range(size)
    ]
    for loader in [whole] + ranks:
        loader.set_epoch(3)
    per_rank = [list(loader) for loader in ranks]
    for step, (_, yb) in enumerate(whole):
        assert np.concatenate([per_rank[r][step][1] for r in range(size)]).tolist() == yb.tolist()
    assert all(len(loader) == len(whole) for loader in ranks)


def test_a_sharded_loader_needs_a_seed_on_several_ranks():
    x, y = np.zeros((4, 1), np.float32), np.zeros(4, np.int64)
    with pytest.raises(handgrad.HandgradError, match="expected a seed"):
        distributed.ShardedLoader(x, y, batch_size=2, shuffle=True, w=fake_world(0, 2))


@pytest.mark.parametrize("bucket_bytes", [1 << 20, 64])  # one bucket; one per tensor or more
def test_a_reducer_of_one_rank_gives_back_each_gradient_and_keeps_none(bucket_bytes, rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model.double()
    params = list(model.parameters())
    grads = [rng.standard_normal(p.shape) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    params[1].grad = None  # a parameter no rank has a gradient for keeps None
    reducer = distributed.GradientReducer(params, distributed.World(), bucket_bytes=bucket_bytes, extra=2)
    assert (len(reducer.buckets) == 1) == (bucket_bytes > 1000)
    extra = reducer.allreduce(count=7, extra=np.array([1.5, 2.0]))
    assert extra.tolist() == [1.5, 2.0]
    assert params[1].grad is None
    for i in (0, 2, 3):
        np.testing.assert_allclose(params[i].grad, grads[i], rtol=1e-15)


@pytest.mark.parametrize(
    "env, size, rank",
    [
        ({}, 1, 0),
        ({"PMI_SIZE": "4", "PMI_RANK": "2"}, 4, 2),  # MPICH, Intel MPI
        ({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "1"}, 3, 1),  # Open MPI
        ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5"}, 8, 5),  # srun
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, 1, 0),  # an sbatch script itself: one process
    ],
)
def test_the_world_is_read_from_the_launcher(env, size, rank, monkeypatch):
    for name in distributed.SIZE_VARIABLES + distributed.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (distributed.launched_size(), distributed.launched_rank()) == (size, rank)


def test_a_single_process_world_never_imports_mpi4py():
    code = textwrap.dedent("""
        import sys, handgrad, handgrad.distributed as d
        from handgrad.app.training import Trainer
        w = d.init()
        assert (w.size, w.rank, d.world_size(), d.is_main()) == (1, 0, 1, True)
        assert "mpi4py" not in sys.modules
    """)
    env = {k: v for k, v in child_env().items() if k not in distributed.SIZE_VARIABLES}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("rank, says", [("0", True), ("1", False)])
def test_a_launch_without_mpi4py_is_refused_once_in_one_line(rank, says, monkeypatch, capsys):
    from handgrad.app.cli import main

    for name in distributed.SIZE_VARIABLES + distributed.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", rank)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py fails
    monkeypatch.setattr(distributed, "_world", None)
    assert main(["train", "--dataset", "digits", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert (
        (
            err == "handgrad: error: started as one of 2 processes (by mpiexec, mpirun or srun), but mpi4py is not "
            "installed: pip install 'handgrad[mpi]'\n"
        )
        if says
        else err == ""
    )


def test_weights_checksum_tells_one_changed_weight(rng):
    model = nn.Sequential(nn.Linear(5, 3))
    before = distributed.weights_checksum(model.parameters())
    model[0].weight.data[1, 2] = np.nextafter(model[0].weight.data[1, 2], np.float32(10))
    assert distributed.weights_checksum(model.parameters()) != before
