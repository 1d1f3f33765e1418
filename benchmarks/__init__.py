"""handgrad's benchmarks: ``python -m benchmarks`` (``make bench``) writes benchmarks/RESULTS.md.

Nothing is imported here, so ``__main__`` can set the thread count before NumPy loads its BLAS.
"""
