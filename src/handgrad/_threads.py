"""Splitting a batch across threads.

Samples are independent in conv, pool and element-wise ops, so each thread can take a contiguous
slice of the batch. NumPy releases the GIL inside its loops and BLAS calls, so plain Python threads
run that array work in parallel. BLAS already threads one large product by itself; what it cannot
thread is a stack of small per-sample products and element-wise passes, which is where a CNN's
step goes. Slices are fixed by the batch size and the thread count, so a run is reproducible.

    handgrad.set_num_threads(1)     # everything on the calling thread
    handgrad.get_num_threads()      # default: HANDGRAD_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs
"""
from __future__ import annotations

import os
import threading

#: Work per thread (array elements times passes over them) below which the hand-off to a thread
#: (tens of microseconds on a virtual machine) costs more than it saves.
MIN_ELEMENTS_PER_THREAD = 1 << 17

_local = threading.local()  # .worker is True inside a pool thread: no nested splitting
_num_threads: int | None = None
_executor = None  # a concurrent.futures.ThreadPoolExecutor, made on first use
_executor_lock = threading.Lock()


def _default_num_threads() -> int:
    for var in ("HANDGRAD_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """The number of threads handgrad's ops split a batch across (as ``torch.get_num_threads``)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 = no splitting). BLAS keeps its own setting (OPENBLAS_NUM_THREADS)."""
    global _num_threads, _executor
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive int, got {n!r}")
    with _executor_lock:
        _num_threads = n
        if _executor is not None:
            _executor.shutdown(wait=True)
            _executor = None


def _forget_pool_in_child():
    """A forked child has none of its parent's threads: it must start a pool of its own."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _mark_worker():
    _local.worker = True


def _pool(workers: int):
    global _executor
    with _executor_lock:
        if _executor is None:
            from concurrent.futures import ThreadPoolExecutor  # imported on first use: `import handgrad` stays quick

            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handgrad",
                                           initializer=_mark_worker)
        return _executor


def split_batch(fn, n: int, elements: int) -> list:
    """Call ``fn(start, stop)`` on contiguous slices covering ``range(n)``, in parallel, and return
    the results in slice order.

    ``elements`` is the size of the work (array elements times passes over them); small jobs, and
    calls made from inside a pool thread, run as one slice on the calling thread.
    """
    threads = min(get_num_threads(), n, max(1, elements // MIN_ELEMENTS_PER_THREAD))
    if threads <= 1 or getattr(_local, "worker", False):
        return [fn(0, n)]
    bounds = [n * i // threads for i in range(threads + 1)]
    pool = _pool(get_num_threads() - 1)
    futures = [pool.submit(fn, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
    try:
        first = fn(bounds[0], bounds[1])  # the calling thread takes the first slice
    except BaseException:
        from concurrent.futures import wait
        wait(futures)  # no thread may still be writing when the error reaches the caller
        raise
    return [first] + [f.result() for f in futures]  # f.result() re-raises a slice's error


def split_rows(fn, array, passes: int = 1) -> list:
    """``split_batch`` for element-wise work on ``array``: ``fn(rows)`` gets a slice of its first
    axis (``...`` for a 0-d array)."""
    if array.ndim == 0:
        return [fn(...)]
    return split_batch(lambda a, b: fn(slice(a, b)), array.shape[0], array.size * passes)
