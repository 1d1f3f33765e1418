"""One thread budget for everything handgrad runs: Numba's kernels and the BLAS products.

The compiled layers take their products on Numba's threads, each thread's share on SciPy's BLAS
held to one thread (``in_thread_blas``, ``kernels/products.py``), so a training step runs on one
pool. NumPy's BLAS, which the references (and a user's own NumPy code) call, gets the whole budget
too: it never runs at the same moment as a kernel, so the cores are not oversubscribed.

    handgrad.set_num_threads(1)     # everything on the calling thread
    handgrad.get_num_threads()      # default: HANDGRAD_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs

Neither Numba nor threadpoolctl is imported here: the budget reaches Numba when the kernels load
(``apply``) and BLAS through threadpoolctl at the same moment, so ``import handgrad`` stays quick.
"""

from __future__ import annotations

import os
import sys

_num_threads: int | None = None
_applied: int | None = None  # the budget last handed to Numba and BLAS


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
    """The number of threads handgrad's kernels and BLAS products use (as ``torch.get_num_threads``)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the kernels and for BLAS (1 = everything on the calling thread)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive int, got {n!r}")
    _num_threads = n
    if "numba" in sys.modules or _applied is not None:
        apply()


def numba_threads() -> int:
    """The budget as Numba can run it: at most the pool it started with (NUMBA_NUM_THREADS)."""
    import numba

    return max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def apply() -> None:
    """Hand the budget to Numba's pool and to every BLAS library loaded in the process."""
    global _applied
    n = get_num_threads()
    import numba

    numba.set_num_threads(numba_threads())
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # BLAS then keeps its own setting (OPENBLAS_NUM_THREADS)
        pass
    else:
        in_threads = in_thread_blas()
        for library in ThreadpoolController().select(user_api="blas").lib_controllers:
            library.set_num_threads(1 if library.filepath in in_threads else n)
    _applied = n


def in_thread_blas() -> set[str]:
    """The BLAS libraries that compiled kernels call from inside their own threads, which must run
    on one thread each (else two kernel threads would each start the library's pool: four threads
    on two cores). Numba's ``np.dot`` calls SciPy's BLAS; the paths of SciPy's own libraries,
    loaded here, where they are not NumPy's (a SciPy built against NumPy's BLAS shares its
    setting, which stays the budget)."""
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS, as Numba's np.dot does)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return set()
    own = os.path.realpath(os.path.dirname(scipy.__file__)) + ".libs" + os.sep  # the wheel's bundled libraries
    return {
        library.filepath
        for library in ThreadpoolController().select(user_api="blas").lib_controllers
        if os.path.realpath(library.filepath).startswith(own)
    }
