"""Compiled kernels: the reference pairs of ``handgrad.functional``, compiled with Numba.

Every kernel has exactly the signature of its reference (``conv2d_forward(x, weight, bias, ...)
-> (out, cache)``) and is tested equal to it. The reference stays the readable definition of the
math; the kernel is the same formula as loops, run by Numba. This module is the one place where
the choice between them is made:

    from handgrad import kernels
    out, cache = kernels.op("conv2d_forward")(x, weight, bias, stride, padding)

    with kernels.reference():          # run the plain NumPy references (teaching, debugging, tests)
        ...
    HANDGRAD_KERNELS=reference handgrad train ...     # the same for a whole process (read once, at the first op)

Numba is imported only when the first kernel is looked up, so ``import handgrad`` stays fast. Where
Numba is not installed, every op falls back to its reference.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import _threads

__all__ = ["available", "enabled", "op", "reference", "use_kernels"]

#: The dtypes the kernels are compiled for. Arrays of another floating dtype (float16, longdouble),
#: which Numba cannot compile for, run the reference from inside the kernel's wrapper.
COMPILED_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})

#: The kernel modules, each exporting (in ``__all__``) functions named as their references.
MODULES = ("conv", "pool", "activation", "linear", "loss", "normalization", "optim", "fused")

#: Where each op's reference lives, by the same name.
REFERENCE_PACKAGES = ("handgrad.functional", "handgrad.optim.functional", "handgrad.functional.fused")

#: How Numba's pool runs, unless the environment says otherwise, chosen by measurement
#: (`python -m benchmarks threads`, benchmarks/THREADS.md: training on 2 cores, with BLAS products
#: between the kernel calls). 'tbb' trains the CNNs 1.5-1.8x faster than 'workqueue' and the MLP as
#: fast: its workers wait briefly for the next parallel loop, where 'workqueue' sleeps and wakes in
#: 60-100 us; 'omp' workers keep spinning after a loop and take the core OpenBLAS's second thread
#: needs. 'tbb' needs the tbb wheel's library (``_load_tbb``); without it, 'workqueue'.
NUMBA_LAYERS = ("tbb", "workqueue")

_forced: list[bool] = []  # the stack of `reference()` / `use_kernels()` blocks; the last one wins
_kernels: dict[str, Callable[..., Any]] | None = None  # name -> compiled kernel, found on first use
_references: dict[str, Any] = {}  # name -> the module holding its reference


_env_choice: list[bool] = []  # HANDGRAD_KERNELS as read at the first op: every layer calls op(), so once


def _env_enabled() -> bool:
    if not _env_choice:
        value = os.environ.get("HANDGRAD_KERNELS", "").strip().lower()
        _env_choice.append(value not in ("0", "off", "false", "no", "reference"))
    return _env_choice[0]


def _configure_numba() -> None:
    """Numba's threading layer, which it reads once, when it is imported: the first of
    ``NUMBA_LAYERS`` that loads; a NUMBA_THREADING_LAYER the user set wins ('tbb' loads TBB first)."""
    wanted = os.environ.get("NUMBA_THREADING_LAYER")
    if wanted not in (None, "tbb"):
        return
    # set before _load_tbb imports Numba, which reads it then; a child process inherits it, and
    # loads TBB here in turn
    os.environ["NUMBA_THREADING_LAYER"] = "tbb"
    if not _load_tbb() and wanted is None:  # an explicit 'tbb' stays, for Numba to say why it fails
        os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
        import numba

        numba.config.reload_config()


def _load_tbb() -> bool:
    """Load TBB for Numba's 'tbb' layer: the tbb wheel puts libtbb.so.12 in <prefix>/lib, off the
    loader's search path, so it is loaded here by its path first; Numba's pool then finds it, already
    in the process, by its name. False where there is no such library or the pool does not load."""
    import ctypes

    for path in sorted(Path(sys.prefix, "lib").glob("libtbb.so.12*")):
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            importlib.import_module("numba.np.ufunc.tbbpool")
        except (OSError, ImportError):
            continue
        return True
    return False


def available() -> bool:
    """True when Numba can be imported, so compiled kernels can run."""
    return bool(_load_kernels())


def enabled() -> bool:
    """True when ops run their compiled kernels (the default), False inside ``reference()``."""
    wanted = _forced[-1] if _forced else _env_enabled()
    return wanted and available()


@contextlib.contextmanager
def _forcing(kernels: bool) -> Iterator[None]:
    _forced.append(kernels)
    try:
        yield
    finally:
        _forced.pop()


def reference() -> contextlib.AbstractContextManager[None]:
    """Run the plain NumPy references inside this block, whatever HANDGRAD_KERNELS says."""
    return _forcing(False)


def use_kernels() -> contextlib.AbstractContextManager[None]:
    """Run the compiled kernels inside this block (the default unless HANDGRAD_KERNELS=reference)."""
    return _forcing(True)


def _load_kernels() -> dict[str, Callable[..., Any]]:
    global _kernels
    if _kernels is None:
        found: dict[str, Callable[..., Any]] = {}
        _configure_numba()
        try:
            import numba  # noqa: F401  (only to learn whether the kernels can run)
        except ImportError:
            _kernels = found
            return found
        for module_name in MODULES:
            try:
                module = importlib.import_module(f"{__name__}.{module_name}")
            except ModuleNotFoundError as error:
                if error.name != f"{__name__}.{module_name}":
                    raise
                continue  # that family has no kernels yet: its references run
            for name in getattr(module, "__all__", ()):
                found[name] = getattr(module, name)
        _threads.apply()  # one budget for Numba's pool and BLAS, now that both are loaded
        _kernels = found
    return _kernels


def _reference(name: str) -> Callable[..., Any]:
    if name not in _references:
        for package in REFERENCE_PACKAGES:
            try:
                module = importlib.import_module(package)
            except ModuleNotFoundError as error:
                if error.name != package:
                    raise
                continue
            if hasattr(module, name):
                _references[name] = module
                break
        else:
            raise KeyError(f"no op named {name!r} in {' or '.join(REFERENCE_PACKAGES)}")
    # looked up by name on every call, so a reference replaced in its package (a test's spy) is the one run
    return getattr(_references[name], name)


def op(name: str) -> Callable[..., Any]:
    """The function to call for op ``name``: its compiled kernel when enabled and one exists,
    else its reference from ``handgrad.functional``."""
    if _forced[-1] if _forced else _env_enabled():
        kernel = (_kernels if _kernels is not None else _load_kernels()).get(name)
        if kernel is not None:
            return kernel
    return _reference(name)
