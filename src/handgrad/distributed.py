"""Data-parallel training on MPI, through mpi4py: N processes, each with the whole model and a
disjoint 1/N of every batch, kept in step by averaging their gradients.

    mpiexec -n 4 handgrad train --dataset mnist --model lenet5      (or srun under Slurm)

The world is found by itself: a launcher (mpiexec, mpirun, srun) sets variables such as
``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE`` or ``SLURM_STEP_NUM_TASKS``; only when one of them says more
than one process does ``init()`` import mpi4py. ``import handgrad`` never does, and a single process
(no launcher, or ``-n 1``) runs exactly as without MPI: every function here is then the identity.

The math of one step, rank r holding n_r of the B samples of a global batch (sum_r n_r = B):

    g_r = 1/n_r sum_{i in shard r} dL_i/dw           (each rank's own mean, as the loss computes it)
    g   = 1/B sum_r n_r g_r = 1/B sum_i dL_i/dw      (what one process computes over the whole batch)

so N ranks at global batch B take the very steps of one process at batch B, in any split (uneven
shards, the last partial batch, a rank with no sample at all).

A user's own loop::

    import handgrad.distributed as dist
    world = dist.init()
    model = build_model("mlp", (1, 28, 28), 10)
    dist.broadcast_parameters(model)                   # rank 0's initial weights everywhere
    loader = dist.ShardedLoader(x, y, batch_size=256, shuffle=True, seed=0)
    for xb, yb in loader:                              # this rank's part of each global batch
        loss = loss_fn(model(xb), yb); opt.zero_grad(); model.backward(loss_fn.backward())
        dist.allreduce_gradients(model, count=len(xb)) # now the gradient of the global batch
        opt.step()
"""

from __future__ import annotations

import os
import sys
import weakref
import zlib

import numpy as np

from .data.loader import DataLoader
from .errors import HandgradError

#: Set by launchers to the number of processes: MPICH/Intel MPI (hydra), Open MPI, Slurm's srun
#: (per job step: an sbatch script itself, one process, has none), MVAPICH.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK")

#: Gradient bucket size. Allreduce of mlp's 1.05 MB of gradients between two ranks on this machine
#: (benchmarks/distributed.py; a busy 2-core VM): 16 KiB buckets 6.6 ms, 64 KiB 3.9 ms, 256 KiB
#: 3.2 ms, 1 MiB 2.2 ms, one bucket 2.5 ms; lenet5's 0.25 MB: 1.3, 0.8, 0.6, 0.6 and 0.8 ms. Each
#: call pays a latency, so small buckets lose; from 1 MiB on the differences are the machine's noise.
#: 4 MiB holds every named model in one bucket, and splits only models of a million parameters.
BUCKET_BYTES = 4 << 20

#: Optimizer steps between two comparisons of the ranks' weights (a CRC-32 of every parameter,
#: carried in the step's own allreduce: no extra message). About 0.3 ms for mlp's weights.
CHECK_EVERY = 50

#: A hidden hook for the fault tests: ``raise:RANK:STEP`` raises on rank RANK at global step STEP;
#: ``perturb:RANK:STEP`` changes that rank's weights there (the checksum must catch it).
FAULT_VARIABLE = "HANDGRAD_TEST_FAULT"


class DistributedError(HandgradError):
    """The ranks of a data-parallel run disagree, or one of them failed."""


class RanksOutOfSync(DistributedError):
    """The ranks' weights differ: a rank computed something the others did not."""


def _from_launcher(names: tuple[str, ...], default: int) -> int:
    """The whole number in the first of the environment variables ``names`` that holds one, else ``default``."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return default


def launched_size() -> int:
    """The number of processes a launcher started, from its environment (1 when none did)."""
    return _from_launcher(SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 when none did)."""
    return _from_launcher(RANK_VARIABLES, 0)


class World:
    """The processes of a run: ``size`` ranks on ``MPI.COMM_WORLD`` (``comm``), ``local_size`` of
    them on this host. A world of one (``comm`` None) has every collective as the identity."""

    def __init__(self, comm=None):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()
        self.local_size = 1
        if comm is not None:
            from mpi4py import MPI

            local = comm.Split_type(MPI.COMM_TYPE_SHARED)
            self.local_size = local.Get_size()
            local.Free()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_size={self.local_size})"

    # -- collectives -------------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def allreduce(self, value, op: str = "sum"):
        """``value`` (a number or an array) reduced over the ranks with ``op`` (sum, max, min);
        a number comes back as a float, an array as a new array of its dtype."""
        if self.comm is None:
            return value
        from mpi4py import MPI

        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        if isinstance(value, np.ndarray):
            out = np.ascontiguousarray(value).copy()
            self.comm.Allreduce(MPI.IN_PLACE, out, op=mpi_op)
            return out
        out = np.array([value], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, out, op=mpi_op)
        return float(out[0])

    def allgather(self, obj) -> list:
        """Every rank's ``obj`` (any picklable value), in rank order."""
        return [obj] if self.comm is None else self.comm.allgather(obj)

    def broadcast(self, obj, root: int = 0):
        """``root``'s ``obj`` (any picklable value) on every rank."""
        return obj if self.comm is None else self.comm.bcast(obj, root=root)

    def broadcast_arrays(self, arrays, root: int = 0) -> None:
        """Overwrite ``arrays`` in place with ``root``'s, one message per dtype (flat buffers)."""
        if self.comm is None:
            return
        for group in _by_dtype(arrays).values():
            flat = np.concatenate([a.reshape(-1) for a in group])
            self.comm.Bcast(flat, root=root)
            offset = 0
            for a in group:
                a[...] = flat[offset : offset + a.size].reshape(a.shape)
                offset += a.size

    def agree(self, fn, what: str, cleanup=None):
        """Run ``fn()`` on every rank and raise on every rank if it failed on any: ``fn``'s own error
        where it failed, a DistributedError naming the rank elsewhere (after ``cleanup(result)``).
        Errors raised this way are marked ``collective``: every rank stops at the same point."""
        try:
            result, error = fn(), None
        except Exception as e:  # anything: the other ranks must hear of it, or they wait forever
            result, error = None, e
        failures = [(r, m) for r, m in enumerate(self.allgather(None if error is None else str(error))) if m]
        if not failures:
            return result
        if error is None:
            if cleanup is not None:
                cleanup(result)
            rank, message = failures[0]
            error = DistributedError(f"{what} on rank {rank}", message)
        error.collective = True  # type: ignore[attr-defined]  # a mark read by fail_locally
        raise error

    def abort(self, code: int = 1) -> None:
        """End every rank of the world at once (MPI_Abort), then this process."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.comm is not None:
            import time

            time.sleep(0.2)  # for the launcher to pass on what was printed before it kills every rank
            self.comm.Abort(code)
        os._exit(code)  # MPI_Abort may return before the launcher's kill arrives


_world: World | None = None


def init() -> World:
    """The world this process belongs to, set up on the first call: with mpi4py when a launcher
    started several processes, else a world of one. It also makes an uncaught exception on any rank
    end every rank (MPI_Abort) with one line naming the rank, instead of leaving the others waiting."""
    global _world
    if _world is not None:
        return _world
    size = launched_size()
    if size <= 1:
        _world = World()
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            None,
            f"started as one of {size} processes (by mpiexec, mpirun or srun), but mpi4py "
            "is not installed: pip install 'handgrad[mpi]'",
        ) from None
    _world = World(MPI.COMM_WORLD)
    _install_abort_hook(_world)
    return _world


def world() -> World:
    """The world set up by ``init()``, or a world of one before it."""
    return _world if _world is not None else World()


def world_size() -> int:
    return world().size


def rank() -> int:
    return world().rank


def is_main() -> bool:
    """True on rank 0, the rank that writes files and prints."""
    return world().is_main


def _install_abort_hook(w: World) -> None:
    previous = sys.excepthook

    def abort_all(kind, value, tb):
        previous(kind, value, tb)  # the traceback, for the bug it shows
        print(
            f"handgrad: error: rank {w.rank} of {w.size} failed ({kind.__name__}: {value}); stopping every rank",
            file=sys.stderr,
        )
        w.abort(1)

    sys.excepthook = abort_all


def fail_locally(error: BaseException, w: World | None = None) -> None:
    """One rank met ``error`` that the others know nothing of: print one line naming the rank and
    end every rank. Errors every rank raised together (``collective``) are only printed, by rank 0."""
    w = w or world()
    if w.size > 1 and not getattr(error, "collective", False):
        print(f"handgrad: error: rank {w.rank} of {w.size}: {error}; stopping every rank", file=sys.stderr)
        w.abort(1)


# -- parameters and gradients -------------------------------------------------------------------
def _by_dtype(arrays) -> dict:
    groups: dict = {}
    for a in arrays:
        groups.setdefault(np.dtype(a.dtype), []).append(a)
    return groups


def broadcast_parameters(model, root: int = 0, w: World | None = None) -> None:
    """Give every rank ``root``'s parameters and buffers (BatchNorm's running statistics)."""
    w = w or world()
    w.broadcast_arrays([p.data for p in model.parameters()] + [b for b in model.buffers() if b.ndim > 0], root)


def broadcast_buffers(model, root: int = 0, w: World | None = None) -> None:
    """Give every rank ``root``'s buffers (BatchNorm's running statistics), as PyTorch's DDP does
    before each forward; the Trainer does it before each evaluation."""
    w = w or world()
    w.broadcast_arrays([b for b in model.buffers() if b.ndim > 0], root)


class GradientReducer:
    """Averages the gradients of ``params`` over the ranks in flat contiguous buckets of about
    ``bucket_bytes`` each (never one message per tensor), last parameters first, as a backward
    pass produces them.

    ``allreduce(count, extra)``: each rank's ``p.grad`` is the mean over its ``count`` samples; it
    becomes the mean over all ranks' samples, sum_r count_r g_r / sum_r count_r, on every rank. A
    parameter without a gradient on a rank counts as zero there, and keeps ``grad = None`` only if
    no rank has one. ``extra`` (``extra`` numbers, optional) rides in the first bucket and comes
    back summed over the ranks: the Trainer's loss, accuracy, signals and checksums, for free.
    """

    def __init__(self, params, w: World | None = None, bucket_bytes: int = BUCKET_BYTES, extra: int = 0):
        self.world = w or world()
        self.params = [p for p in params if p.requires_grad]
        self.extra = int(extra)
        if not self.params:
            raise HandgradError("GradientReducer", "expected at least one parameter that requires a gradient")
        self.tail = 1 + len(self.params) + self.extra  # count, who had a gradient, the extras
        order = list(reversed(range(len(self.params))))
        groups = []  # [(dtype, [(param index, offset)], size)]
        for dtype in dict.fromkeys(self.params[i].dtype for i in order):
            members: list = []
            size = 0
            for i in (i for i in order if self.params[i].dtype == dtype):
                if members and (size + self.params[i].size) * dtype.itemsize > bucket_bytes:
                    groups.append((dtype, members, size))
                    members, size = [], 0
                members.append((i, size))
                size += self.params[i].size
            groups.append((dtype, members, size))
        # the first bucket, reduced first, carries the tail
        self.buckets = [
            (np.empty(size + (self.tail if b == 0 else 0), dtype), members)
            for b, (dtype, members, size) in enumerate(groups)
        ]
        self.bytes = sum(buffer.nbytes for buffer, _ in self.buckets)

    def allreduce(self, count: float = 1.0, extra=None):
        """See the class. Returns ``extra`` summed over the ranks (None without extras)."""
        comm = self.world.comm
        first, _ = self.buckets[0]
        tail = first[len(first) - self.tail :]
        tail[0] = count
        has = tail[1 : 1 + len(self.params)]
        if self.extra:
            tail[1 + len(self.params) :] = 0 if extra is None else extra
        for buffer, members in self.buckets:
            for i, offset in members:
                p = self.params[i]
                view = buffer[offset : offset + p.size].reshape(p.shape)
                if p.grad is None:
                    view.fill(0)
                    has[i] = 0
                else:
                    np.multiply(p.grad, count, out=view)  # weighted by the samples it averages
                    has[i] = 1
            if comm is not None:
                from mpi4py import MPI

                comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        total = float(tail[0])
        for buffer, members in self.buckets:
            for i, offset in members:
                p = self.params[i]
                if has[i] == 0 or total == 0:
                    continue  # no rank has a gradient for it
                view = buffer[offset : offset + p.size].reshape(p.shape)
                if p.grad is None:
                    p.grad = view / total
                else:
                    np.divide(view, total, out=p.grad)
        return tail[1 + len(self.params) :].astype(np.float64) if self.extra else None

    def __repr__(self):
        return (
            f"GradientReducer(parameters={len(self.params)}, buckets={len(self.buckets)}, bytes={self.bytes}, "
            f"ranks={self.world.size})"
        )


_reducers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def allreduce_gradients(model, count: float = 1.0, bucket_bytes: int = BUCKET_BYTES, w: World | None = None) -> None:
    """Make every rank's gradients the mean over the whole global batch: call it after
    ``backward`` and before ``optimizer.step()``, with ``count`` the samples this rank's loss
    averaged over (``len(xb)``; the default 1 gives the plain mean of the ranks' gradients, right
    when every rank has as many samples). The buckets are made on the first call and kept."""
    w = w or world()
    if w.size == 1:
        return
    reducer = _reducers.get(model)
    if reducer is None or reducer.world is not w:
        reducer = _reducers[model] = GradientReducer(model.parameters(), w, bucket_bytes)
    reducer.allreduce(count)


def weights_checksum(params) -> int:
    """A CRC-32 of the parameters' bytes: equal on two ranks exactly when their weights are (but
    for a 2^-32 chance)."""
    crc = 0
    for p in params:
        crc = zlib.crc32(np.ascontiguousarray(p.data).view(np.uint8).data, crc)
    return crc


def check_in_sync(model, w: World | None = None, where: str = "") -> None:
    """Raise RanksOutOfSync (on every rank) when the ranks' parameters differ."""
    w = w or world()
    if w.size == 1:
        return
    sums = w.allgather(weights_checksum(model.parameters()))
    if len(set(sums)) > 1:
        raise out_of_sync(sums, where)


def out_of_sync(sums, where: str = "") -> RanksOutOfSync:
    odd = [r for r, s in enumerate(sums) if s != sums[0]]
    error = RanksOutOfSync(
        where or None,
        f"the weights of rank{'s' if len(odd) > 1 else ''} "
        f"{', '.join(map(str, odd))} differ from rank 0's (CRC-32 "
        f"{', '.join(f'{s:08x}' for s in sums)}): a rank computed something the "
        "others did not; the last checkpoint holds rank 0's weights from before",
    )
    error.collective = True  # type: ignore[attr-defined]  # a mark read by fail_locally
    return error


# -- data -----------------------------------------------------------------------------------------
def shard(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items split among ``size`` ranks (sizes differ by
    at most one; a rank gets none when n < size)."""
    return slice(n * rank // size, n * (rank + 1) // size)


class ShardedLoader(DataLoader):
    """A DataLoader whose every global batch (``batch_size`` samples, in the order every rank draws
    alike from ``(seed, epoch)``) is split among the ranks: each yields only its disjoint part.
    ``len()`` is the number of global batches, the same on every rank; a rank's part may be empty
    (a last batch smaller than the world). ``seed`` must be given (or the same on every rank)."""

    def __init__(
        self,
        images,
        labels,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        w: World | None = None,
    ):
        if seed is None and shuffle and (w or world()).size > 1:
            raise HandgradError("ShardedLoader", "expected a seed: every rank must draw the same order")
        super().__init__(images, labels, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.world = w or world()

    def _batches(self, order):
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            index = index[shard(len(index), self.world.rank, self.world.size)]
            yield self.images[index], self.labels[index]


def fault_hook(w: World):
    """The fault asked for by HANDGRAD_TEST_FAULT for this rank: (kind, step), or None."""
    text = os.environ.get(FAULT_VARIABLE, "")
    if not text:
        return None
    try:
        kind, rank_text, step_text = text.split(":")
        at_rank, step = int(rank_text), int(step_text)
    except ValueError:
        raise HandgradError(FAULT_VARIABLE, f"expected KIND:RANK:STEP, got {text!r}") from None
    if kind not in ("raise", "perturb"):
        raise HandgradError(FAULT_VARIABLE, f"expected KIND raise or perturb, got {kind!r}")
    return (kind, step) if at_rank == w.rank else None


def default_threads(w: World) -> int:
    """Threads per rank: the host's cores shared among its ranks; the cores a launcher bound this
    process to, when it did (an affinity mask smaller than the machine)."""
    cpus = os.cpu_count() or 1
    try:
        mine = len(os.sched_getaffinity(0))
    except AttributeError:
        mine = cpus
    if mine < cpus:
        return max(1, mine)
    return max(1, cpus // max(1, w.local_size))
