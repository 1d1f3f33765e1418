"""The compiled path's matrix products, run on Numba's threads, each thread's share on its own BLAS.

NumPy's ``a @ b`` runs on OpenBLAS's thread pool, a second pool beside Numba's. After each
product its idle threads spin, for about 0.1 s unless OPENBLAS_THREAD_TIMEOUT was set before NumPy
loaded (``import numpy`` before ``import handgrad`` is enough to miss it), on the very cores the
next kernel's threads need; and on small products (an MLP layer at batch 64-128) its two threads
ran no faster than one. So every product of a compiled layer is cut here into one part per thread
of Numba's pool, and each part runs on that thread through SciPy's BLAS, held to one thread
(``handgrad._threads.in_thread_blas``): one pool, nothing left spinning between kernels.

    rows_product(a, b)                      out = a @ b, out's rows cut into one block per thread
    product_pair(a1, b1, a2, b2)            a1 @ b1 and a2 @ b2 at once, one per thread

Measured on the MLP's eight products (784-250-250-10, float32, 2 cores, interleaved repeats):
batch 128 0.90 ms (0.87-0.97) against 1.56 (1.54-1.75) through NumPy's pool; batch 64 0.52 ms
against 1.13.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _threads
from . import COMPILED_DTYPES

__all__: list[str] = []  # helpers of the kernels, no ops of their own

#: Below this many multiply-adds (m * k * n) a product is NumPy's ``a @ b``: a few microseconds of
#: work, less than starting threads would cost, and small enough that OpenBLAS runs it on the
#: calling thread without waking its pool (NumPy's OpenBLAS 0.3.31 here kept products of up to 320k
#: multiply-adds on one thread, and took two from 640k).
SPLIT_MIN_MADDS = 1 << 18


@njit(parallel=True, cache=True)
def _products(a1, b1, out1, a2, b2, out2, pair, parts):
    """out1 = a1 @ b1 on ``parts`` threads, rows [t * m / parts, (t + 1) * m / parts) of out1 (and
    a1) on thread t; with ``pair``, out1 = a1 @ b1 on one thread while out2 = a2 @ b2 runs on
    another (parts = 2)."""
    m = out1.shape[0]
    for t in prange(parts):
        if pair and t == 1:
            np.dot(a2, b2, out2)
        elif pair:
            np.dot(a1, b1, out1)
        else:
            r0, r1 = t * m // parts, (t + 1) * m // parts
            np.dot(a1[r0:r1], b1, out1[r0:r1])


#: Each combination of operand layouts is a specialization of ``_products`` to compile (0.6-0.8 s
#: each), so every call brings a1 and b2 C-ordered and a2 F-ordered (a transposed weight, as the
#: layers have it); only b1 comes as it is, C or F. Without a second product, ``_products`` gets a
#: 2 x 2 stand-in for it, laid out as a second product would be, never read.
_NO_SECOND: dict[np.dtype, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _no_second(dtype):
    if dtype not in _NO_SECOND:
        _NO_SECOND[dtype] = (np.zeros((2, 2), dtype, order="F"), np.zeros((2, 2), dtype), np.zeros((2, 2), dtype))
    return _NO_SECOND[dtype]


def splits(a, b):
    """Does a @ b run on several threads here (large enough, and more than one thread)?"""
    return a.shape[0] * a.shape[1] * b.shape[1] >= SPLIT_MIN_MADDS and _threads.numba_threads() > 1


def _compiled(*arrays):
    """True when the arrays share one dtype the kernels are compiled for."""
    return arrays[0].dtype in COMPILED_DTYPES and all(a.dtype == arrays[0].dtype for a in arrays)


def _operand(a):
    """``a`` as BLAS takes it: C- or F-ordered as it is, else a C-ordered copy."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


def _empty(a, b):
    return np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))


def rows_product(a, b):
    """a @ b for 2-D a (m, k) and b (k, n), C-ordered (m, n): out's rows cut into one block per
    thread where the product is large enough (``SPLIT_MIN_MADDS``), else on the
    calling thread (NumPy's ``a @ b``, as for other dtypes or two different ones)."""
    if not splits(a, b) or not _compiled(a, b) or a.shape[0] < 2 * _threads.numba_threads():
        return a @ b
    parts = _threads.numba_threads()
    # a block of a's rows is contiguous only in a C-ordered a; the copy costs k / n of the product
    a, b = np.ascontiguousarray(a), _operand(b)
    out = _empty(a, b)
    _products(a, b, out, *_no_second(out.dtype), False, parts)
    return out


def product_pair(a1, b1, a2, b2):
    """(a1 @ b1, a2 @ b2), C-ordered: at once, one on each of two threads, where both are large
    enough (``SPLIT_MIN_MADDS``); else one after the other (``rows_product``). A product whose
    ``a`` is None is not wanted: None in its place."""
    if a1 is None or a2 is None:
        return (None if a1 is None else rows_product(a1, b1)), (None if a2 is None else rows_product(a2, b2))
    if not (splits(a1, b1) and splits(a2, b2) and _compiled(a1, b1, a2, b2)):
        return rows_product(a1, b1), rows_product(a2, b2)
    a1, b1, a2, b2 = np.ascontiguousarray(a1), _operand(b1), np.asfortranarray(a2), np.ascontiguousarray(b2)
    out1, out2 = _empty(a1, b1), _empty(a2, b2)
    _products(a1, b1, out1, a2, b2, out2, True, 2)
    return out1, out2
